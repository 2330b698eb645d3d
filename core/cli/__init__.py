"""The ``sealpy`` command line (typer). It parses arguments into the pipeline's job values,
calls one pipeline entry point per command, and renders the events and the result — no
logic of its own.

Modules: :mod:`.application` (the typer apps, every command registered), :mod:`.entry`
(``main``: exit codes and one-line errors), :mod:`.options` (option types and flag parsing
shared by commands), and the commands: :mod:`.cache_commands` (scan, strategies,
registry), :mod:`.build_command`, :mod:`.store_commands` (images, inspect, tag, rmi,
pull, push, save, load), :mod:`.merge_command`. Heavy modules are imported inside the
commands so ``sealpy --help`` starts fast.
"""

from __future__ import annotations

from sealpy.core.cli.application import app
from sealpy.core.cli.entry import main, normalize_bool_flags

__all__ = ["app", "main", "normalize_bool_flags"]
