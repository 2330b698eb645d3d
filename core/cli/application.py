"""The typer applications, ``sealpy`` and its ``registry`` and ``cache`` groups, with ``--version`` and
every command registered: one list here, in the order ``sealpy --help`` shows them; the
commands themselves are plain functions in the command modules. A command line that names
its command is parsed by an app holding that command alone (:func:`app_for`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from sealpy.core import __version__
from sealpy.core.cli import (
    blobcache_commands,
    build_command,
    cache_commands,
    lock_command,
    merge_command,
    store_commands,
)

# Every command, in the order ``sealpy --help`` shows them, and the ``registry`` group's.
COMMANDS: dict[str, Callable[..., Any]] = {
    command.__name__: command
    for command in (
        cache_commands.scan,
        cache_commands.strategies,
        build_command.build,
        lock_command.lock,
        store_commands.images,
        store_commands.inspect,
        store_commands.tag,
        store_commands.rmi,
        store_commands.pull,
        store_commands.push,
        store_commands.save,
        store_commands.load,
        merge_command.merge,
    )
}
REGISTRY_COMMANDS: dict[str, Callable[..., Any]] = {
    "save": cache_commands.registry_save,
    "verify": cache_commands.registry_verify,
}
CACHE_COMMANDS: dict[str, Callable[..., Any]] = {
    "info": blobcache_commands.cache_info,
    "prune": blobcache_commands.cache_prune,
}
# The command groups: name -> (help, commands).
GROUPS: dict[str, tuple[str, dict[str, Callable[..., Any]]]] = {
    "registry": ("Cache images into a registry directory, and check one.", REGISTRY_COMMANDS),
    "cache": ("The machine-wide blob cache: where it is, how big, and pruning it.", CACHE_COMMANDS),
}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sealpy {__version__}")
        raise typer.Exit()


def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """sealpy: Sealos's cluster-image build, in Python."""


def make_app(only: tuple[str, ...] = ()) -> typer.Typer:
    """The ``sealpy`` app; with ``only`` (``("scan",)``, ``("registry", "save")``) it holds
    that one command, which then parses and runs exactly as in the whole app."""
    app = typer.Typer(
        name="sealpy",
        help="Build Sealos cluster images: an application plus every container image it needs, "
        "cached in a registry directory inside the image, for air-gapped installs.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
    )
    app.callback()(_main)
    for group, (text, commands) in GROUPS.items():
        if only and only[0] != group:
            continue
        group_app = typer.Typer(help=text, no_args_is_help=True)
        app.add_typer(group_app, name=group)
        for name, command in commands.items():
            if only[1:] in ((), (name,)):
                group_app.command(name)(command)
    for name, command in COMMANDS.items():
        if only in ((), (name,)):
            app.command()(command)
    return app


app = make_app()


def app_for(args: list[str]) -> typer.Typer:
    """The app to parse ``args`` with: one holding only the command they name, when they
    begin with its name (making every command's parser costs more than a warm ``registry
    save`` spends on anything else but imports and the network); the whole app otherwise
    (``--help``, ``--version``, a mistyped command and its suggestions)."""
    if args and args[0] in COMMANDS:
        return make_app((args[0],))
    if len(args) > 1 and args[0] in GROUPS and args[1] in GROUPS[args[0]][1]:
        return make_app((args[0], args[1]))
    return app
