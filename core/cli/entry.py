"""The entry point, ``main``: argv in, exit code out, and how errors are rendered.

A :class:`~sealpy.core.errors.SealpyError` or a bad argument prints one line,
``error: ...``, on stderr and exits with the error's code (a usage error of click's: its
own code, else 2); an interrupt prints ``error: interrupted`` and exits 130 (SIGINT) or
143 (SIGTERM); anything else is an internal error, exit 70. ``--debug`` (anywhere on the
line) shows the traceback as well. Boolean flags take Sealos's and skopeo's spelling too:
``--tls-verify=false``, ``--all=true``.
"""

from __future__ import annotations

import os
import sys
import traceback

import typer

from sealpy.core.cli.application import app_for
from sealpy.core.errors import Interrupted, SealpyError, UsageError

# Flags users type as --flag=true/false (Sealos's cobra and skopeo's pflag spelling).
BOOL_FLAGS = (
    "--all",
    "--save-image",
    "--tls-verify",
    "--strict",
    "--json",
    "--fix",
    "--quiet",
    "--squash",
    "--locked",
    "--offline",
    "--update",
    "--copy-signatures",
)
_TRUE = {"true", "1", "yes", "t", "y", "on"}
_FALSE = {"false", "0", "no", "f", "n", "off"}


def normalize_bool_flags(argv: list[str]) -> list[str]:
    """``--all=true`` → ``--all``; ``--tls-verify=false`` → ``--no-tls-verify``."""
    out: list[str] = []
    for arg in argv:
        if arg == "--":
            out.extend(argv[len(out) :])
            break
        flag, sep, value = arg.partition("=")
        if sep and flag in BOOL_FLAGS:
            if value.lower() in _TRUE:
                out.append(flag)
            elif value.lower() in _FALSE:
                out.append("--no-" + flag[2:])
            else:
                raise UsageError(f"invalid boolean value {value!r} for {flag}: use true or false")
        else:
            out.append(arg)
    return out


def _unsupported_buildah_flag(exc: Exception) -> str | None:
    """For an unknown option of ``build`` that is a ``buildah bud`` flag: say sealpy does
    not support it (Sealos passes every buildah flag on, so it is no typo)."""
    # typer bundles its own click: recognise the exception by its name and fields.
    ctx = getattr(exc, "ctx", None)
    option = getattr(exc, "option_name", None)
    if type(exc).__name__ != "NoSuchOption" or ctx is None or not isinstance(option, str):
        return None
    if getattr(ctx.command, "name", None) != "build":
        return None
    from sealpy.core.build.flags import unsupported_flag_message

    return unsupported_flag_message(option)


def _error(message: str) -> None:
    """One line on stderr, flushed (the process may end with os._exit right after)."""
    print(f"error: {message}", file=sys.stderr, flush=True)


def _interrupt_on_signals() -> dict:
    """SIGINT and SIGTERM raise :class:`Interrupted`, so every ``finally`` runs (the sync
    strategy stops its registry and skopeo processes). typer would turn a
    KeyboardInterrupt into a silent exit code. Only possible from the main thread."""
    import signal
    import threading

    def interrupt(signum: int, frame: object) -> None:
        raise Interrupted(signum)

    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}


def _restore_signals(previous: dict) -> None:
    import signal

    for sig, handler in previous.items():
        signal.signal(sig, handler)


def _exit_now_if_workers_linger(code: int) -> None:
    """After an interrupt, worker threads may sit in a network read until it times out;
    everything they wrote is resumable, so do not wait for them."""
    import threading

    if any(
        t is not threading.main_thread() and t.is_alive() and not t.daemon
        for t in threading.enumerate()
    ):
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(code)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (also used by ``sealpy`` itself)."""
    args = list(sys.argv[1:] if argv is None else argv)
    previous = _interrupt_on_signals()
    try:
        return _run(args)
    finally:
        _restore_signals(previous)


def _run(args: list[str]) -> int:
    import warnings

    # urllib3 warns on every unverified HTTPS request; the user turned verification off
    # on purpose (--tls-verify=false or an insecure registry), once is enough: the help says so.
    warnings.filterwarnings("ignore", message="Unverified HTTPS request")
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    try:
        args = normalize_bool_flags(args)
        command = typer.main.get_command(app_for(args))
        # Commands read --debug from the context object (merge prints its Sealfile).
        result = command.main(
            args=args, prog_name="sealpy", standalone_mode=False, obj={"debug": debug}
        )
        return result if isinstance(result, int) else 0
    except SealpyError as exc:
        if debug:
            traceback.print_exc()
        _error(str(exc))
        return exc.exit_code
    except (Interrupted, KeyboardInterrupt) as exc:
        if debug:
            traceback.print_exc()
        _error("interrupted")
        code = exc.exit_code if isinstance(exc, Interrupted) else 130
        _exit_now_if_workers_linger(code)
        return code
    except Exception as exc:
        # Click's own usage errors (unknown option, missing argument) carry format_message.
        format_message = getattr(exc, "format_message", None)
        if callable(format_message) and hasattr(exc, "exit_code"):
            if debug:
                traceback.print_exc()
            _error(_unsupported_buildah_flag(exc) or format_message())
            return int(exc.exit_code) or 2
        if debug:
            raise
        _error(f"internal error ({type(exc).__name__}: {exc}); run with --debug for the traceback")
        return 70
