"""Child processes that never outlive sealpy.

Linux's parent-death signal (``prctl(PR_SET_PDEATHSIG)``) makes the kernel send SIGTERM to
the child when the thread that started it dies — even if sealpy is killed with SIGKILL.
Start long-lived children (the sync strategy's registry) from a thread that lives as long
as they should, normally the main thread.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
from collections.abc import Sequence

_PR_SET_PDEATHSIG = 1
# The running program's own symbols include libc's (find_library would spawn ldconfig).
_libc = ctypes.CDLL(None, use_errno=True)
_prctl = _libc.prctl  # resolved now: the child must not load anything between fork and exec


def die_with_parent() -> None:  # runs in the child between fork and exec
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def popen_tied(args: Sequence[str], **kwargs) -> subprocess.Popen:
    """``subprocess.Popen`` whose child gets SIGTERM if the starting thread dies."""
    return subprocess.Popen(list(args), preexec_fn=die_with_parent, **kwargs)


def stop(process: subprocess.Popen, *, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; always reaps the child."""
    if process.poll() is not None:
        return
    try:
        process.terminate()
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    except ProcessLookupError:
        pass


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# Variables that carry a secret of sealpy's own: no child needs them (children get
# credentials in an auth file of their own, if at all).
SECRET_VARIABLES = ("SEALPY_CREDS",)


def child_environment(*, own_authfile: bool = False) -> dict[str, str]:
    """``os.environ`` for a child process, without sealpy's secrets.

    ``own_authfile``: the child is given an auth file of ours, so the user's
    ``REGISTRY_AUTH_FILE`` (already read by sealpy) must not compete with it."""
    dropped = (*SECRET_VARIABLES, "REGISTRY_AUTH_FILE") if own_authfile else SECRET_VARIABLES
    return {k: v for k, v in os.environ.items() if k not in dropped}
