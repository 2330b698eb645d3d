"""One error hierarchy. Every error sealpy raises on purpose is a :class:`SealpyError`.

The CLI prints ``str(error)`` as one line on stderr and exits with ``error.exit_code``;
anything else is a bug and shows a traceback only with ``--debug``. Messages never
contain credentials: build them from references and causes, never from request objects.
"""

from __future__ import annotations


class SealpyError(Exception):
    """Base class: a problem the user can act on, described in one line."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(SealpyError):
    """Bad command-line input: a malformed flag value, an unknown name."""

    exit_code = 2


class ContextError(SealpyError):
    """The build context is missing or malformed (no build file, bad tar.txt line, ...)."""


class InvalidReferenceError(SealpyError):
    """A string is not a valid image reference."""


class InvalidPlatformError(UsageError):
    """A string is not a valid ``os/arch[/variant]`` platform."""


class UnknownStrategyError(UsageError):
    """No strategy of that name is registered."""


class StrategyUnavailableError(SealpyError):
    """The strategy exists but cannot run here (a binary is missing, ...)."""


class NotImplementedYetError(SealpyError):
    """A stage that a later issue delivers."""


class CredentialsError(SealpyError):
    """Credentials could not be read: a bad authfile, a failing credential helper."""


class RegistryError(SealpyError):
    """A registry answered with an error, or could not be reached."""


class AuthenticationError(RegistryError):
    """The registry refused our credentials (or demanded some we do not have)."""


class NotFoundError(RegistryError):
    """The repository, tag, manifest or blob does not exist."""


class DigestMismatchError(RegistryError):
    """Content does not match the digest it was asked for: the source lies or is corrupt."""


class ManifestError(RegistryError):
    """A manifest we cannot use: schema1, unknown media type, malformed JSON."""


class PlatformNotFoundError(SealpyError):
    """No manifest in an index matches a requested platform."""


class ConflictError(SealpyError):
    """Two sources would be written to the same repository and tag with different content."""


class CacheError(SealpyError):
    """One or more images could not be cached; the message names each image and cause.

    ``report`` holds what was cached (a re-run reuses it)."""

    def __init__(self, message: str, report: object | None = None) -> None:
        super().__init__(message)
        self.report = report


class BuildError(SealpyError):
    """The build file cannot be built: unknown instruction, missing COPY source, ..."""


class StoreError(SealpyError):
    """The local image store: unknown image, corrupt index."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM: unwinds every ``finally`` (so child processes are stopped), and is
    not caught by ``except Exception``."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
