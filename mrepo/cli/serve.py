"""``mrepo serve`` (an HTTP remote with access control and a web view) and ``mrepo token add``."""

from __future__ import annotations

import importlib
from pathlib import Path

import typer

from .common import RepoOption, console, repo_url

token_app = typer.Typer(help="Bearer tokens of 'mrepo serve' (stored hashed in a TOML file).", no_args_is_help=True)


def serve(repo: str = RepoOption,
          host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
          port: int = typer.Option(8080, "--port", help="TCP port."),
          tokens: Path = typer.Option(None, "--tokens", help="Token file made by 'mrepo token add'."),
          anonymous_read: bool = typer.Option(False, "--anonymous-read", help="Let requests without a token read."),
          protect: list[str] = typer.Option(["main"], "--protect",
                                            help="Branch that moves only by a pull-request merge (repeatable)."),
          max_body: int = typer.Option(64 << 20, "--max-body", help="Largest request body in bytes."),
          no_access_log: bool = typer.Option(False, "--no-access-log", help="Do not write JSON access lines.")
          ) -> None:
    """Serve a repository over HTTP: clone/fetch/push/pull from http://HOST:PORT/repo, web view at /."""
    from ..api import create_app  # first: names "pip install 'mrepo[server]'" when the server extra is missing

    uvicorn = importlib.import_module("uvicorn")

    app = create_app(repo_url(repo), tokens, anonymous_read, tuple(protect), max_body,
                     access_log=False if no_access_log else None)
    console.print(f"serving {repo_url(repo)} at http://{host}:{port}/repo (web view http://{host}:{port}/)",
                  soft_wrap=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


@token_app.command("add")
def token_add(name: str = typer.Argument(..., help="Token name (shown in the access log)."),
              role: str = typer.Option(..., "--role", help="read, write or maintain."),
              tokens: Path = typer.Option(..., "--tokens", help="Token file (created when absent).")) -> None:
    """Create a token and print its secret once (only its hash is stored)."""
    from ..api.tokens import add_token

    secret = add_token(tokens, name, role)
    console.print(f"token {name} ({role}) added to {tokens}; its secret, shown only now:", soft_wrap=True)
    typer.echo(secret)


def register(app: typer.Typer) -> None:
    """Add ``serve`` and the ``token`` group to the mrepo command."""
    app.command("serve")(serve)
    app.add_typer(token_app, name="token")
