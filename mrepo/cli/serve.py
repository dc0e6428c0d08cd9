"""``mrepo serve`` (an HTTP remote with access control and a web view) and ``mrepo token add/list/remove/role``."""

from __future__ import annotations

import importlib
from pathlib import Path

import typer

from .common import JsonOption, RepoOption, console, print_json, repo_url

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

    serving = importlib.import_module("mrepo.api.serving")  # uvicorn with header deadline and keep-alive limit

    app = create_app(repo_url(repo), tokens, anonymous_read, tuple(protect), max_body,
                     access_log=False if no_access_log else None)
    console.print(f"serving {repo_url(repo)} at http://{host}:{port}/repo (web view http://{host}:{port}/)",
                  soft_wrap=True)
    serving.run(app, host, port)


@token_app.command("add")
def token_add(name: str = typer.Argument(..., help="Token name (shown in the access log)."),
              role: str = typer.Option(..., "--role", help="read, write or maintain."),
              tokens: Path = typer.Option(..., "--tokens", help="Token file (created when absent)."),
              expires: str = typer.Option(None, "--expires", help="Expiry: 30d, 12h, 90m, 2025-12-31 or "
                                          "2025-12-31T23:59:59Z (UTC). Default: never.", show_default=False)
              ) -> None:
    """Create a token and print its secret once (only its hash is stored)."""
    from ..api.tokens import add_token

    secret = add_token(tokens, name, role, expires=expires)
    console.print(f"token {name} ({role}) added to {tokens}; its secret, shown only now:", soft_wrap=True)
    typer.echo(secret)


@token_app.command("list")
def token_list(tokens: Path = typer.Option(..., "--tokens", help="Token file."),
               json: bool = JsonOption) -> None:
    """List tokens: name, role, created, expiry and last use recorded by the server."""
    from ..api.tokens import TokenStore, read_last_used, utc_stamp

    last = read_last_used(tokens)
    now = utc_stamp()
    rows = [{"name": e.name, "role": e.role, "created": e.created, "expires": e.expires,
             "expired": e.expired(now), "last_used": last.get(e.name)} for e in TokenStore.load(tokens).entries()]
    if json:
        print_json(rows)
        return
    for r in rows:
        state = " (expired)" if r["expired"] else ""
        console.print(f"{r['name']:<20} {r['role']:<9} created {r['created'] or '-'}  expires "
                      f"{r['expires'] or 'never'}{state}  last used {r['last_used'] or 'never'}", soft_wrap=True)
    if not rows:
        console.print(f"no tokens in {tokens}")


@token_app.command("remove")
def token_remove(name: str = typer.Argument(..., help="Token name."),
                 tokens: Path = typer.Option(..., "--tokens", help="Token file.")) -> None:
    """Remove a token; a running server refuses it from its next request on."""
    from ..api.tokens import remove_token

    entry = remove_token(tokens, name)
    console.print(f"token {entry.name} ({entry.role}) removed from {tokens}", soft_wrap=True)


@token_app.command("role")
def token_role(name: str = typer.Argument(..., help="Token name."),
               role: str = typer.Argument(..., help="read, write or maintain."),
               tokens: Path = typer.Option(..., "--tokens", help="Token file.")) -> None:
    """Change a token's role; a running server applies it from its next request on."""
    from ..api.tokens import set_role

    entry = set_role(tokens, name, role)
    console.print(f"token {entry.name} now has role {entry.role}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``serve`` and the ``token`` group to the mrepo command."""
    app.command("serve")(serve)
    app.add_typer(token_app, name="token")
