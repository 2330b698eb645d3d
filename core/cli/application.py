"""The typer applications, ``sealpy`` and its ``registry`` group, with ``--version`` and
every command registered: one list here, in the order ``sealpy --help`` shows them; the
commands themselves are plain functions in the command modules.
"""

from __future__ import annotations

from typing import Annotated

import typer

from sealpy.core import __version__
from sealpy.core.cli import build_command, cache_commands, merge_command, store_commands

app = typer.Typer(
    name="sealpy",
    help="Build Sealos cluster images: an application plus every container image it needs, "
    "cached in a registry directory inside the image, for air-gapped installs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
registry_app = typer.Typer(
    help="Cache images into a registry directory, and check one.", no_args_is_help=True
)
app.add_typer(registry_app, name="registry")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sealpy {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """sealpy: Sealos's cluster-image build, in Python."""


for command in (
    cache_commands.scan,
    cache_commands.strategies,
    build_command.build,
    store_commands.images,
    store_commands.inspect,
    store_commands.tag,
    store_commands.rmi,
    store_commands.pull,
    store_commands.push,
    store_commands.save,
    store_commands.load,
    merge_command.merge,
):
    app.command()(command)
registry_app.command("save")(cache_commands.registry_save)
registry_app.command("verify")(cache_commands.registry_verify)
