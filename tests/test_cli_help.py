"""Every option and argument of every ``mrepo`` command has help text, and no help page shows an
unfilled placeholder (``{folder}``, ``<bool>``): walked over the real typer/click command tree."""

from __future__ import annotations

import re

import typer
from typer.testing import CliRunner

from mrepo.cli import app

#: typer's type placeholders anywhere, and ``{name}`` argument placeholders in the usage line.
TYPE_PLACEHOLDER = re.compile(r"<(?:bool|str|int|float|path|datetime|list\[\w+\])>")
USAGE_PLACEHOLDER = re.compile(r"\{[A-Za-z_]+\}")


def walk(command, path: tuple[str, ...] = ()):
    """(path, command) for the command and its subcommands (typer ships its own click: duck-typed)."""
    yield path, command
    if hasattr(command, "commands"):
        for name, sub in sorted(command.commands.items()):
            yield from walk(sub, (*path, name))


COMMANDS = list(walk(typer.main.get_command(app)))


def test_the_tree_is_walked() -> None:
    names = {" ".join(p) for p, _ in COMMANDS}
    assert {"refine", "clone", "import relion5-tomo", "pr check", "species show", "serve", "sim frames"} <= names


def test_every_parameter_has_help() -> None:
    missing = []
    for path, command in COMMANDS:
        for param in command.params:
            if param.name == "help" or getattr(param, "hidden", False):
                continue
            text = getattr(param, "help", None)
            if not text or not text.strip():
                missing.append(f"mrepo {' '.join(path)} {param.opts[0] if param.opts else param.name}")
    assert not missing, "parameters without help text:\n" + "\n".join(missing)


def test_help_pages_have_no_placeholders() -> None:
    runner = CliRunner()
    found = []
    for path, _ in COMMANDS:
        result = runner.invoke(app, [*path, "--help"], terminal_width=200)
        assert result.exit_code == 0, (path, result.output)
        usage = next(line for line in result.output.splitlines() if "Usage:" in line)
        for hit in TYPE_PLACEHOLDER.findall(result.output) + USAGE_PLACEHOLDER.findall(usage):
            found.append(f"mrepo {' '.join(path)}: {hit}")
    assert not found, "placeholders in help pages:\n" + "\n".join(found)
