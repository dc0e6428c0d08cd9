"""The ``mrepo`` command: a thin typer layer over ``mrepo.Repository`` and friends.

One module per command group registers its commands on :data:`app`.
"""

from __future__ import annotations

import typer

from .. import __version__
from . import (
    exit_codes,
    io_commands,
    pr,
    reconstruct,
    refine,
    repo_commands,
    serve,
    sim,
    source,
    species,
    transfer_commands,
)
from .common import GLOBAL_REPO, MrepoGroup, console

app = typer.Typer(
    cls=MrepoGroup,
    name="mrepo",
    help="A distributed, content-addressed repository for cryo-EM populations.",
    epilog="Exit codes: " + exit_codes.summary() + " (docs/exit-codes.md). Read commands take --json (docs/json.md).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback(invoke_without_command=True)
def _main(version: bool = typer.Option(False, "--version", help="Print the version and exit."),
          repo: str = typer.Option(None, "--repo", "-R", help="Repository URL for every command "
                                   "(default: $MREPO_REPO, then the current folder).", show_default=False)) -> None:
    GLOBAL_REPO["url"] = repo
    if version:
        console.print(f"mrepo {__version__}")
        raise typer.Exit(0)


repo_commands.register(app)
transfer_commands.register(app)

app.add_typer(sim.app, name="sim")
app.add_typer(source.app, name="source")
app.add_typer(species.app, name="species")
pr.register_dedup(species.app)  # `mrepo species dedup` shares the collision code of pull requests
app.add_typer(pr.app, name="pr")
io_commands.register(app)
refine.register(app)
reconstruct.register(app)
serve.register(app)


def main() -> None:
    """Console-script entry point."""
    app()
