"""One error hierarchy. Every error sealpy raises on purpose is a :class:`SealpyError`.

The CLI prints ``str(error)`` as one line on stderr and exits with ``error.exit_code``;
anything else is a bug and shows a traceback only with ``--debug``. Messages never
contain credentials: build them from references and causes, never from request objects.

An error says what it is about in :attr:`SealpyError.subject` (an image, a file, a
blob) rather than in its text, so a caller that adds context calls
:meth:`SealpyError.about` instead of matching or rebuilding the message: the class,
its attributes and its cause stay as they were.
"""

from __future__ import annotations

from typing import Self


class SealpyError(Exception):
    """Base class: a problem the user can act on, described in one line.

    ``message`` says what went wrong; ``subject``, when set, what it went wrong with, and
    ``str()`` renders "subject: message". ``cause`` is the exception this one was raised
    from (``raise ... from exc``), if any."""

    exit_code = 1

    def __init__(self, message: str, *, subject: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.subject = subject

    def __str__(self) -> str:
        return f"{self.subject}: {self.message}" if self.subject else self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"

    @property
    def cause(self) -> BaseException | None:
        """The exception this one was raised from."""
        return self.__cause__

    def about(self, subject: str) -> Self:
        """This error, naming ``subject``: itself when it already does, else a copy (same
        class, attributes, cause and traceback) with ``subject`` in front; a subject it had
        stays in the message, after the new one ("image: blob sha256:…: cause").

        A copy, never a change in place: one error can be shared by several images (a
        blob they all wait for), and each names itself."""
        if self.subject == subject:
            return self
        named = self._copy()
        if self.subject:
            named.message = str(self)
        named.subject = subject
        return named

    def amended(self, detail: str) -> Self:
        """A copy of this error (same class, attributes, cause) with ``detail`` after its
        message, such as what else was tried."""
        amended = self._copy()
        amended.message = f"{self.message}{detail}"
        return amended

    def _copy(self) -> Self:
        copied = type(self).__new__(type(self), *self.args)
        copied.__dict__.update(self.__dict__)
        copied.args = self.args
        copied.__cause__ = self.__cause__
        copied.__context__ = self.__context__
        copied.__suppress_context__ = self.__suppress_context__
        copied.__traceback__ = self.__traceback__
        return copied


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


class CredentialsError(SealpyError):
    """Credentials could not be read: a bad authfile, a failing credential helper."""


class RegistryError(SealpyError):
    """A registry answered with an error, or could not be reached."""


class AuthenticationError(RegistryError):
    """The registry refused our credentials (or demanded some we do not have)."""


class NotFoundError(RegistryError):
    """The repository, tag, manifest or blob does not exist."""


class ContentError(SealpyError):
    """Content that is not what it claims to be, wherever it was read from: a registry's
    answer, a blob in a registry directory, store or archive, a manifest file. Unlike a
    :class:`RegistryError`, nothing was wrong with how it was reached."""


class DigestMismatchError(ContentError):
    """Content does not match the digest it was asked for: the source lies or is corrupt."""


class ManifestError(ContentError):
    """A manifest we cannot use: schema1, unknown media type, malformed JSON."""


class PlatformNotFoundError(SealpyError):
    """No manifest in an index matches a requested platform."""


class ConflictError(SealpyError):
    """Two sources would be written to the same repository and tag with different content."""


class CacheError(SealpyError):
    """One or more images could not be cached; the message names each image and cause.

    ``report`` holds what was cached (a re-run reuses it)."""

    def __init__(
        self, message: str, report: object | None = None, *, subject: str | None = None
    ) -> None:
        super().__init__(message, subject=subject)
        self.report = report


class BuildError(SealpyError):
    """The build file cannot be built: unknown instruction, missing COPY source, ..."""


class PathNotFoundError(BuildError):
    """A path in the build context (or a stage) does not exist, or a component on its way
    is not a directory."""


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
