"""What a pipeline run tells its caller while it works: one small value per event.

The pipeline's entry points (:func:`sealpy.core.pipeline.build`, ``save``, ``merge``) take
an :data:`EventSink` and call it with an :class:`Event` for every line a user may want to
see. They never print: the CLI decides how each kind is rendered (and what ``--quiet``
hides); a Python caller may collect, log or drop them.

Kinds (:class:`EventKind`):

- ``info``: what the run is doing or did ("saving images ...", the cache summary);
  the CLI prints ``info MESSAGE`` on stderr.
- ``warning``: something the user should fix but that does not stop the run (scan
  warnings, a build file that never copies ``registry/``); ``warn MESSAGE`` on stderr,
  even with ``--quiet``.
- ``output``: one line of the builder's own output (its steps, buildah's log); stdout.
- ``status``: a step of a command that is not a build step, such as pulling a missing
  input of ``merge`` ("Trying to pull ..."); stderr, as it is.
- ``debug``: detail for ``--debug`` only, such as every reference the cache stage saves
  (the info line names a few, counts many); ``debug MESSAGE`` on stderr with ``--debug``.

The progress display of the cache stage (bars, per-image lines) goes through
:class:`~sealpy.core.progress.ProgressReporter`, which the engine calls from its threads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class EventKind(StrEnum):
    """What an :class:`Event` is (see the module docstring for how the CLI renders each)."""

    INFO = "info"
    WARNING = "warning"
    OUTPUT = "output"
    STATUS = "status"
    DEBUG = "debug"


@dataclass(frozen=True)
class Event:
    """One thing to tell the user: its kind and one line of text (no trailing newline)."""

    kind: EventKind
    message: str


EventSink = Callable[[Event], None]


def discard(event: Event) -> None:
    """The default sink: a caller that passes none does not want to hear."""
