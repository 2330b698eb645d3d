"""The signature policy: containers-policy.json(5), evaluated by sealpy itself.

Debian's skopeo is built without sigstore, so sealpy reads the policy and verifies cosign
signatures on its own (with ``cryptography``), for both strategies. What it implements:

- ``default`` and ``transports.docker`` scopes (see :func:`identity.scope_candidates`:
  the most specific scope that exists applies, and only it); other transports are parsed
  and checked, not used (sealpy only pulls ``docker`` images).
- ``insecureAcceptAnything``, ``reject``, and ``sigstoreSigned`` with ``keyPath``,
  ``keyPaths``, ``keyData`` or ``keyDatas`` (ECDSA public keys) and ``signedIdentity``
  (``matchRepoDigestOrExact`` — the default —, ``matchExact``, ``matchRepository``,
  ``exactReference``, ``exactRepository``, ``remapIdentity``).

Everything else is **fail-closed**: ``signedBy`` (GPG), ``signedBaseLayer``,
``sigstoreSigned`` with ``fulcio``, ``pki`` or a Rekor key, an unknown requirement type,
identity type or field, and a key that cannot be loaded do not break the whole file (as
they do in containers/image) but reject every image of the scopes they are in, saying why.
A file that is not a policy at all (not JSON, no ``default``, an empty requirement list, a
requirement without a type, a field of the wrong type) is a :class:`PolicyFileError`.

An image is accepted when *all* requirements of its scope are; a ``sigstoreSigned``
requirement is satisfied by *one* signature that verifies with one of its keys, signs
the image's manifest digest, and claims an identity the rule accepts. The payload of a
signature is parsed only after its signature verified.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sealpy.core.image.media import JSONTooDeepError, load_json
from sealpy.core.reference import ImageReference
from sealpy.core.supplychain import identity as ids
from sealpy.core.supplychain.cosign import SignatureCandidate
from sealpy.core.supplychain.errors import PolicyFileError, PolicyRejectedError
from sealpy.core.supplychain.requirements import (
    AcceptAnything,
    FailClosed,
    Reject,
    Requirement,
    SigstoreSigned,
    parse_requirement,
    parse_requirements,
)

__all__ = [
    "AcceptAnything",
    "FailClosed",
    "Policy",
    "Reject",
    "Requirement",
    "Scope",
    "SigstoreSigned",
    "Verdict",
    "parse_requirement",
]

SYSTEM_POLICY = Path("/etc/containers/policy.json")
USER_POLICY = Path(".config/containers/policy.json")  # under $HOME


# --- the policy ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """Where the requirements for an image came from: a ``docker`` scope (``""`` is the
    transport default) or the global default (``transport`` ``None``)."""

    transport: str | None
    name: str = ""

    def __str__(self) -> str:
        if self.transport is None:
            return "default"
        return f'{self.transport}:"{self.name}"' if self.name else f"{self.transport} default"


@dataclass(frozen=True)
class Verdict:
    """The outcome for one image: accepted or not, the scope that applied, and why not."""

    image: ImageReference
    scope: Scope
    accepted: bool
    reasons: tuple[str, ...] = ()
    policy_file: str | None = None

    @property
    def message(self) -> str:
        if self.accepted:
            return f"image {self.image} accepted by policy scope {self.scope}"
        return (
            f"image {self.image} rejected by policy scope {self.scope}: {'; '.join(self.reasons)}"
        )

    def check(self) -> Verdict:
        """This verdict if accepted; else raise :class:`PolicyRejectedError`."""
        if not self.accepted:
            raise PolicyRejectedError(self.message, self)
        return self


def _duplicate_free(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise PolicyFileError(f"duplicate field {key[:60]!r}")
        result[key] = value
    return result


class Policy:
    """A loaded policy: see the module docstring. ``path`` is the file in force (``None``
    when none exists and every image is accepted)."""

    def __init__(
        self,
        default: tuple[Requirement, ...],
        transports: Mapping[str, Mapping[str, tuple[Requirement, ...]]],
        path: Path | None = None,
    ) -> None:
        self.default = default
        self.transports = transports
        self.path = path

    @classmethod
    def accept_all(cls) -> Policy:
        """What applies when no policy file exists: every image accepted."""
        return cls((AcceptAnything(),), {})

    @classmethod
    def from_bytes(cls, data: bytes, path: Path | None = None) -> Policy:
        label = str(path) if path else "signature policy"
        try:
            load_json(data)  # bounds the nesting
            document = json.loads(data, object_pairs_hook=_duplicate_free)
        except PolicyFileError as exc:
            raise PolicyFileError(f"{label}: {exc}") from None
        except (JSONTooDeepError, ValueError) as exc:
            raise PolicyFileError(f"{label}: not valid JSON ({str(exc)[:120]})") from None
        if not isinstance(document, dict):
            raise PolicyFileError(f"{label}: not a JSON object")
        extra = sorted(set(document) - {"default", "transports"})
        if extra:
            raise PolicyFileError(f"{label}: unknown top-level field {extra[0][:60]!r}")
        if "default" not in document:
            raise PolicyFileError(f"{label}: the 'default' requirements are missing")
        default = parse_requirements(document["default"], f"{label}: default")
        transports: dict[str, dict[str, tuple[Requirement, ...]]] = {}
        raw_transports = document.get("transports", {})
        if not isinstance(raw_transports, dict):
            raise PolicyFileError(f"{label}: 'transports' must be an object")
        for transport, scopes in raw_transports.items():
            if not isinstance(scopes, dict):
                raise PolicyFileError(f"{label}: transports.{transport} must be an object")
            transports[transport] = {
                scope: parse_requirements(reqs, f'{label}: transports.{transport}."{scope}"')
                for scope, reqs in scopes.items()
            }
        return cls(default, transports, path)

    @classmethod
    def load(cls, path: str | Path | None = None, *, home: str | Path | None = None) -> Policy:
        """The policy in force: ``path`` (``--signature-policy``; it must exist), else
        ``$HOME/.config/containers/policy.json``, else ``/etc/containers/policy.json`` (as
        skopeo reads them), else none: every image accepted."""
        if path is None:
            home = home if home is not None else os.environ.get("HOME") or Path.home()
            for candidate in (Path(home) / USER_POLICY, SYSTEM_POLICY):
                if candidate.exists():
                    path = candidate
                    break
            else:
                return cls.accept_all()
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise PolicyFileError(
                f"cannot read signature policy {path}: {exc.strerror or exc}"
            ) from None
        return cls.from_bytes(data, path)

    def describe(self) -> str:
        """One line for ``--debug``: the file in force."""
        if self.path is None:
            return (
                f"signature policy: none ({Path('~') / USER_POLICY} and {SYSTEM_POLICY} "
                "do not exist): every image accepted"
            )
        return f"signature policy: {self.path}"

    def problems(self) -> list[str]:
        """Why each fail-closed requirement fails, with its scope (for ``--debug``)."""
        found = []
        scoped = [(Scope(None), self.default)] + [
            (Scope(t, name), reqs)
            for t, scopes in self.transports.items()
            for name, reqs in scopes.items()
        ]
        for scope, reqs in scoped:
            found += [f"{scope}: {r.reason}" for r in reqs if isinstance(r, FailClosed)]
        return found

    def requirements_for(self, image: ImageReference) -> tuple[Scope, tuple[Requirement, ...]]:
        """The scope that applies to ``image`` (its own reference, never a mirror's) and
        its requirements."""
        docker = self.transports.get("docker", {})
        for name in ids.scope_candidates(image):
            if name in docker:
                return Scope("docker", name), docker[name]
        if "" in docker:
            return Scope("docker", ""), docker[""]
        return Scope(None), self.default

    def evaluate(
        self,
        image: ImageReference,
        manifest_digest: str,
        signatures: Sequence[SignatureCandidate] = (),
    ) -> Verdict:
        """Whether ``image`` — whose manifest (or index) has ``manifest_digest`` — is
        accepted, given the signatures found for that digest."""
        scope, requirements = self.requirements_for(image)
        label = str(self.path) if self.path else None
        if image.digest and image.digest != manifest_digest:
            pinned = f"the reference pins {image.digest} but the manifest is {manifest_digest}"
            return Verdict(image, scope, False, (pinned,), label)
        reasons = []
        for requirement in requirements:
            reason = requirement.check(image, manifest_digest, signatures)
            if reason is not None:
                reasons.append(reason)
        return Verdict(image, scope, not reasons, tuple(reasons), label)
