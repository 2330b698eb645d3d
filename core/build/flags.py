"""The ``buildah bud`` flags of ``sealpy build``, read as buildah 1.28 reads them.

``sealos build`` hands its flags to buildah, so CI scripts pass buildah's: ``--label``,
``--annotation``, ``--env``, ``--target``, ``--format`` (or ``BUILDAH_FORMAT``),
``--iidfile``, ``--timestamp``, ``--squash``, ``--ignorefile``. The values are checked
here, before any work; a buildah flag sealpy does not implement is named as such, so a
user does not take it for a typo (:func:`unsupported_flag_message`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from sealpy.core.build import OutputOptions, Pairs
from sealpy.core.errors import UsageError

FORMAT_ENV = "BUILDAH_FORMAT"
FORMATS = ("oci", "docker")

# Every flag `buildah bud --help` (1.28) lists, by long name (short aliases below).
BUILDAH_BUD_FLAGS = frozenset(
    """
    add-host all-platforms annotation arch authfile build-arg build-context cache-from
    cache-to cache-ttl cap-add cap-drop cert-dir cgroup-parent cgroupns compress cpp-flag
    cpu-period cpu-quota cpu-shares cpuset-cpus cpuset-mems creds decryption-key device
    disable-compression disable-content-trust dns dns-option dns-search env file force-rm
    format from help hooks-dir http-proxy identity-label ignorefile iidfile ipc isolation
    jobs label layers logfile logsplit manifest memory memory-swap network no-cache
    no-hosts omit-history os os-feature os-version output pid platform pull quiet retry
    retry-delay rm runtime runtime-flag secret security-opt shm-size sign-by
    skip-unused-stages squash ssh stdin tag target timestamp tls-verify ulimit unsetenv
    userns userns-gid-map userns-gid-map-group userns-uid-map userns-uid-map-user uts
    variant volume
    """.split()  # noqa: SIM905 - one word per flag reads best as a block
)
BUILDAH_SHORT_FLAGS = {
    "-c": "cpu-shares",
    "-D": "disable-compression",
    "-m": "memory",
    "-o": "output",
    "-v": "volume",
}
_HINTS = {
    "arch": "choose platforms with --platform os/arch[/variant]",
    "os": "choose platforms with --platform os/arch[/variant]",
    "variant": "choose platforms with --platform os/arch[/variant]",
    "all-platforms": "list the platforms with --platform (sealpy's --all caches every platform)",
}


def unsupported_flag_message(option: str) -> str | None:
    """For an option ``sealpy build`` does not have (as the parser reports it: ``--layers``,
    ``-m``): one line saying it is a buildah flag sealpy does not support, or ``None``
    when it is no buildah flag either (a typo keeps the parser's own message)."""
    name = BUILDAH_SHORT_FLAGS.get(option) or (option[2:] if option.startswith("--") else None)
    if name not in BUILDAH_BUD_FLAGS:
        return None
    message = f"{option} is a `buildah bud` flag that sealpy build does not support"
    hint = _HINTS.get(name)
    return f"{message}; {hint}" if hint else message


def parse_pairs(values: Sequence[str] | None, flag: str) -> Pairs:
    """``--label``/``--annotation`` values: ``KEY=VALUE``, or ``KEY`` for an empty value
    (as buildah takes it); in order, so the later of two equal keys wins."""
    out: list[tuple[str, str]] = []
    for value in values or ():
        key, _, val = value.partition("=")
        if not key:
            raise UsageError(f"invalid {flag} {value!r}: expected KEY=VALUE")
        out.append((key, val))
    return tuple(out)


def parse_env(values: Sequence[str] | None, environ: Mapping[str, str] | None = None) -> Pairs:
    """``--env`` values: ``NAME=VALUE``, or ``NAME`` for this process's value of NAME
    (empty when unset), as buildah reads them."""
    environ = os.environ if environ is None else environ
    out: list[tuple[str, str]] = []
    for value in values or ():
        name, sep, val = value.partition("=")
        if not name or any(c.isspace() for c in name):
            raise UsageError(f"invalid --env {value!r}: expected NAME=VALUE")
        out.append((name, val if sep else environ.get(name, "")))
    return tuple(out)


def resolve_format(value: str | None, environ: Mapping[str, str] | None = None) -> str:
    """``--format``, else ``BUILDAH_FORMAT``, else ``oci`` (buildah's order); only
    ``oci`` and ``docker``, spelled so, are formats."""
    environ = os.environ if environ is None else environ
    source, chosen = "--format", value
    if chosen is None and environ.get(FORMAT_ENV):
        source, chosen = FORMAT_ENV, environ[FORMAT_ENV]
    chosen = chosen or "oci"
    if chosen not in FORMATS:
        raise UsageError(f"invalid {source} {chosen!r}: use oci or docker")
    return chosen


def output_options(
    *,
    labels: Sequence[str] | None,
    annotations: Sequence[str] | None,
    env: Sequence[str] | None,
    format: str | None,
    squash: bool,
) -> OutputOptions:
    return OutputOptions(
        format=resolve_format(format),
        annotations=parse_pairs(annotations, "--annotation"),
        env=parse_env(env),
        labels=parse_pairs(labels, "--label"),
        squash=squash,
    )


def check_iidfile(iidfile: Path | None, platforms: int) -> None:
    """``--iidfile`` holds one image ID: refused up front for several platforms (buildah
    refuses it too), and its directory must exist."""
    if iidfile is None:
        return
    if platforms > 1:
        raise UsageError(
            f"--iidfile {iidfile} can hold one image ID, but {platforms} platforms are built"
        )
    if not Path(iidfile).absolute().parent.is_dir():
        raise UsageError(f"--iidfile {iidfile}: {Path(iidfile).parent} is not a directory")


def write_iidfile(iidfile: Path, image_id: str) -> None:
    """The image ID as buildah writes it: ``sha256:<hex>``, no newline."""
    from sealpy.core.transport.blobio import write_bytes_atomically

    write_bytes_atomically(Path(iidfile), image_id.encode())
