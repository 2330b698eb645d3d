"""Reading :class:`~sealpy.core.model.RenderOptions` from the command line and environment.

``--kube-version`` and ``--api-versions`` take Helm's spellings and are checked as Helm
checks them, so a typo is a usage error before anything is rendered; the sandbox's bounds
come from ``SEALPY_CHART_MEMORY`` (``2GiB``, ``512M``, bytes) and ``SEALPY_CHART_TIMEOUT``
(seconds). The CLI calls :func:`render_options`; nothing deeper reads the environment.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from sealpy.core.discovery.chartsandbox import MEMORY_ENV, TIMEOUT_ENV
from sealpy.core.errors import UsageError
from sealpy.core.model import DEFAULT_CHART_MEMORY, DEFAULT_CHART_TIMEOUT, RenderOptions

# Masterminds/semver's lenient form, which Helm's ParseKubeVersion accepts: "1.20",
# "v1.20.0", "1.27.3-gke.100".
_KUBE_VERSION = re.compile(
    r"^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$"
)
# group/version, group/version/Kind, or a core version ("v1").
_API_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]*(?:/[A-Za-z0-9][A-Za-z0-9.-]*){0,2}$")
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMG]i?B?|B)?$", re.IGNORECASE)
_UNITS = {"": 0, "B": 0, "K": 10, "M": 20, "G": 30}
# Below this the worker cannot even load the Helm library (≈ 150 MiB of data at rest).
MIN_CHART_MEMORY = 256 << 20


def parse_kube_version(text: str) -> str:
    """``text`` as Helm writes ``.Capabilities.KubeVersion``: ``1.20`` → ``v1.20.0``."""
    match = _KUBE_VERSION.match(text.strip())
    if match is None:
        raise UsageError(
            f"invalid --kube-version {text!r}: expected a version like v1.20.0 or 1.27"
        )
    major, minor, patch, pre, meta = match.groups()
    return f"v{int(major)}.{int(minor or 0)}.{int(patch or 0)}{pre or ''}{meta or ''}"


def parse_api_versions(values: Iterable[str]) -> tuple[str, ...]:
    """``--api-versions`` values (comma-separated, repeatable), in order, each once."""
    out: list[str] = []
    for value in values:
        for item in (part.strip() for part in value.split(",")):
            if not item:
                continue
            if not _API_VERSION.match(item):
                raise UsageError(
                    f"invalid --api-versions entry {item!r}: expected group/version "
                    "(apps/v1) or group/version/Kind"
                )
            if item not in out:
                out.append(item)
    return tuple(out)


def parse_size(text: str, what: str) -> int:
    """``2GiB``, ``2G``, ``512M``, ``1073741824`` → bytes (K, M, G are powers of 1024)."""
    match = _SIZE.match(text.strip())
    if match is None:
        raise UsageError(f"invalid {what}={text!r}: expected a size like 2GiB, 512MiB or bytes")
    number, unit = match.groups()
    size = int(float(number) * (1 << _UNITS[(unit or "")[:1].upper()]))
    if size < MIN_CHART_MEMORY:
        raise UsageError(f"invalid {what}={text!r}: at least 256MiB is needed to load Helm")
    return size


def parse_timeout(text: str, what: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0 or seconds == float("inf"):
        raise UsageError(f"invalid {what}={text!r}: expected a number of seconds above 0")
    return seconds


def render_options(
    kube_version: str | None = None,
    api_versions: Iterable[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> RenderOptions:
    """The render options the command line and environment ask for (Sealos's by default)."""
    environ = environ or {}
    memory = environ.get(MEMORY_ENV, "").strip()
    timeout = environ.get(TIMEOUT_ENV, "").strip()
    defaults = RenderOptions()
    return RenderOptions(
        kube_version=parse_kube_version(kube_version) if kube_version else defaults.kube_version,
        api_versions=parse_api_versions(api_versions or ()),
        memory_limit=parse_size(memory, MEMORY_ENV) if memory else DEFAULT_CHART_MEMORY,
        timeout=parse_timeout(timeout, TIMEOUT_ENV) if timeout else DEFAULT_CHART_TIMEOUT,
    )
