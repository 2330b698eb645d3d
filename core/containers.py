"""The containers configuration files sealpy hands to its child processes.

skopeo (the ``sync`` strategy) and buildah (the buildah builder) read containers/image's
configuration: ``registries.conf`` (v2 TOML: ``[[registry]]`` tables with mirrors and
``insecure``) and ``auth.json`` (containers-auth.json(5)). This module is the only writer
of both, so each file is written one way: every string in registries.conf is escaped as
a TOML basic string, and every auth.json key is made by :func:`auth_key`.

What goes into the files (which hosts are insecure, which credential for which scope) is
the caller's policy; this module only writes it down.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from sealpy.core.auth import Credential, CredentialProvider
from sealpy.core.errors import UsageError

# TOML's short escapes; every other control character (and DEL) becomes \\uXXXX.
_SHORT_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def toml_string(value: str) -> str:
    """``value`` as a TOML basic string (quoted, escaped), ASCII only.

    Non-ASCII characters are written as ``\\uXXXX`` (``\\UXXXXXXXX`` beyond the BMP), so
    the file does not depend on an encoding. A lone surrogate (undecodable bytes from a
    command line) has no TOML form: that is a usage error, not a file skopeo rejects."""
    out = ['"']
    for char in value:
        code = ord(char)
        if char in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[char])
        elif 0x20 <= code < 0x7F:
            out.append(char)
        elif 0xD800 <= code <= 0xDFFF:
            raise UsageError(f"{value!r} is not valid Unicode: cannot write it to registries.conf")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def _toml_bool(value: bool) -> str:
    return "true" if value else "false"


@dataclass(frozen=True)
class MirrorTable:
    """One ``[[registry.mirror]]`` table."""

    location: str
    insecure: bool
    pull_from_mirror: str = "all"


@dataclass(frozen=True)
class RegistryTable:
    """One ``[[registry]]`` table. ``prefix`` and ``blocked`` are written only when set
    (containers/image's defaults: the location, and not blocked)."""

    location: str
    insecure: bool
    prefix: str | None = None
    blocked: bool | None = None
    mirrors: tuple[MirrorTable, ...] = ()

    def lines(self) -> list[str]:
        """The table's lines, ending with a blank one."""
        lines = ["[[registry]]"]
        if self.prefix is not None:
            lines.append(f"prefix = {toml_string(self.prefix)}")
        lines += [
            f"location = {toml_string(self.location)}",
            f"insecure = {_toml_bool(self.insecure)}",
        ]
        if self.blocked is not None:
            lines.append(f"blocked = {_toml_bool(self.blocked)}")
        for mirror in self.mirrors:
            lines += [
                "[[registry.mirror]]",
                f"location = {toml_string(mirror.location)}",
                f"insecure = {_toml_bool(mirror.insecure)}",
                f"pull-from-mirror = {toml_string(mirror.pull_from_mirror)}",
            ]
        lines.append("")
        return lines


def registries_conf(tables: Iterable[RegistryTable]) -> str:
    """A registries.conf (v2) holding ``tables``, in order."""
    lines: list[str] = []
    for table in tables:
        lines += table.lines()
    return "\n".join(lines) + "\n"


def write_registries_conf(path: Path, tables: Iterable[RegistryTable]) -> None:
    """Write :func:`registries_conf` to ``path`` (it holds no secret)."""
    path.write_text(registries_conf(tables))


def auth_key(host: str, repository: str = "") -> str:
    """The auth.json key for a credential scoped to ``host``, or to one repository there.

    containers/image prefers the most specific key (``host/namespace/repo`` over
    ``host``), so a repository-scoped key lets two repositories of one registry carry
    different credentials; a host key covers every repository of the host."""
    return f"{host}/{repository}" if repository else host


def credential_entries(
    credentials: CredentialProvider,
    scopes: Iterable[tuple[str, str]],
    *,
    per_repository: bool,
) -> dict[str, Credential]:
    """auth.json entries for ``scopes`` (``(host, repository)`` pairs, in order): the
    credential ``credentials`` gives for each, keyed by :func:`auth_key`.

    ``per_repository`` says which scope a key covers, and the two callers need different
    answers: skopeo (``sync``) is told every repository it copies, and two repositories of
    one registry (or a mirror's) may need different credentials, so it gets one key per
    repository. buildah pulls images sealpy cannot list from the build file (``FROM
    $ARG``, ``COPY --from=IMAGE``, ``RUN --mount=from=``), so it gets host keys, each with
    the credential found for the first repository named on that host. A scope whose key
    is taken already is not looked up again."""
    entries: dict[str, Credential] = {}
    seen: set[str] = set()
    for host, repository in scopes:
        key = auth_key(host, repository if per_repository else "")
        if key in seen:
            continue
        seen.add(key)
        credential = credentials.credentials_for(host, repository)
        if credential is not None:
            entries[key] = credential
    return entries


def authfile_document(entries: Mapping[str, Credential]) -> bytes:
    """A containers auth.json holding ``entries`` (keys made by :func:`auth_key`).

    An identity token goes with an ``auth`` field too: containers/image skips an entry
    whose ``auth`` is missing before it looks at ``identitytoken`` (checked with skopeo
    1.9.3), and takes the user name from it."""
    auths: dict[str, dict[str, str]] = {}
    for key, cred in entries.items():
        if cred.identity_token:
            user = f"{cred.username or '<token>'}:".encode()
            auths[key] = {
                "auth": base64.b64encode(user).decode(),
                "identitytoken": cred.identity_token,
            }
        else:
            raw = f"{cred.username}:{cred.password}".encode()
            auths[key] = {"auth": base64.b64encode(raw).decode()}
    return json.dumps({"auths": auths}).encode()


def write_authfile(path: Path, entries: Mapping[str, Credential]) -> None:
    """Write a containers auth.json holding ``entries``, created with mode 0600 (and
    never over an existing file)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(authfile_document(entries))
