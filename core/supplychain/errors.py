"""Errors of the supply-chain package: signatures, keys and the signature policy.

All are :class:`~sealpy.core.errors.SealpyError` subclasses, so the CLI prints them as one
line. None ever carries a passphrase or key material: messages name files and causes."""

from __future__ import annotations

from sealpy.core.errors import ContentError, SealpyError, UsageError


class SignatureFormatError(ContentError):
    """A signature payload or signature manifest that is not what cosign writes."""


class SigningKeyError(UsageError):
    """A public or private key that cannot be used: unreadable, malformed, an unsupported
    type, or a wrong passphrase."""


class PolicyFileError(UsageError):
    """A signature policy file (containers-policy.json(5)) that cannot be read or is malformed."""


class PolicyRejectedError(SealpyError):
    """An image that its signature policy does not accept. ``verdict`` says which scope
    applied and why (a :class:`~sealpy.core.supplychain.policy.Verdict`)."""

    def __init__(self, message: str, verdict: object, *, subject: str | None = None) -> None:
        super().__init__(message, subject=subject)
        self.verdict = verdict
