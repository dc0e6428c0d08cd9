"""The ``mrepo`` command: a thin typer layer over ``mrepo.Repository`` and friends.

One module per command group registers its commands on :data:`app`; optional groups
(simulator, import/export, refinement, server, pull requests) are mounted when
their modules are present.
"""

from __future__ import annotations

import importlib

import typer

from .. import __version__
from . import repo_commands, transfer_commands
from .common import GLOBAL_REPO, MrepoGroup, console

app = typer.Typer(
    cls=MrepoGroup,
    name="mrepo",
    help="A distributed, content-addressed repository for cryo-EM populations.",
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

# Command groups contributed by other layers: (module, attribute, group name).
_OPTIONAL_GROUPS = [
    ("mrepo.cli.sim", "app", "sim"),
    ("mrepo.cli.source", "app", "source"),
    ("mrepo.cli.species", "app", "species"),
    ("mrepo.cli.io_commands", "register", None),
    ("mrepo.cli.refine", "register", None),
    ("mrepo.cli.pr", "app", "pr"),
    ("mrepo.cli.serve", "register", None),
]
for _module, _attr, _name in _OPTIONAL_GROUPS:
    try:
        _mod = importlib.import_module(_module)
    except ModuleNotFoundError as _exc:
        if _exc.name != _module:
            raise
        continue
    if _name is None:
        getattr(_mod, _attr)(app)
    else:
        app.add_typer(getattr(_mod, _attr), name=_name)


def main() -> None:
    """Console-script entry point."""
    app()
