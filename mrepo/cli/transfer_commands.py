"""Transfer commands: clone, fetch, push, pull."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

from ..graph import MERGE_POLICIES, clone, fetch, pull, push
from ..graph.transfer import TransferStats
from .common import JsonOption, RepoOption, console, fail, open_repo, print_json, progress_bar, refuse_memory

WorkersOption = typer.Option(16, "--workers", "-j", help="Objects copied in parallel.")


def _summary(stats: TransferStats) -> str:
    return (f"{stats.records} record(s), {stats.arrays} array(s), {stats.blobs} blob(s), "
            f"{stats.bytes / 1e6:.1f} MB ({stats.array_bytes / 1e6:.1f} MB array data)")


def _transfer(label: str, json: bool, run: Callable[[Any], TransferStats], done: str) -> None:
    """Run one transfer (``run(progress)``) under a progress bar named ``label``; print its statistics as
    JSON, or as ``<done>: <summary>``."""
    with progress_bar(label, not json) as progress:
        stats = run(progress)
    if json:
        print_json(stats)
    else:
        console.print(f"{done}: {_summary(stats)}")


def register(app: typer.Typer) -> None:
    @app.command("clone")
    def clone_cmd(source: str = typer.Argument(..., help="Repository to copy: a folder, s3://bucket/prefix or "
                                                "http(s)://host/repo."),
                  destination: str = typer.Argument(..., help="Where to create the copy: a new folder or "
                                                    "s3://bucket/prefix."),
                  workers: int = WorkersOption, json: bool = JsonOption) -> None:
        """Copy a repository with all branches, tags and pull requests (its remote 'origin' is SOURCE)."""
        refuse_memory(destination, "clone into")
        _transfer("clone", json, lambda p: clone(source, destination, workers=workers, progress=p)[1],
                  f"Cloned {source} into {destination}")

    @app.command("fetch")
    def fetch_cmd(remote: str = typer.Argument("origin", help="Remote name or URL."),
                  repo: str = RepoOption, workers: int = WorkersOption, json: bool = JsonOption) -> None:
        """Copy a remote's branches into refs/remotes/<remote>/."""
        r = open_repo(repo)
        _transfer("fetch", json, lambda p: fetch(r, remote, workers=workers, progress=p), f"Fetched from {remote}")

    @app.command("push")
    def push_cmd(remote: str = typer.Argument("origin", help="Remote name or URL."),
                 branch: str = typer.Argument(None, help="Local branch (default: the default branch)."),
                 to: str = typer.Option(None, "--to", help="Remote branch name (default: same name)."),
                 force: bool = typer.Option(False, "--force", "-f", help="Allow a non-fast-forward update."),
                 repo: str = RepoOption, workers: int = WorkersOption, json: bool = JsonOption) -> None:
        """Send a branch to a remote (objects first, then the ref by compare-and-swap)."""
        r = open_repo(repo)
        _transfer("push", json, lambda p: push(r, remote, branch, remote_branch=to, force=force, workers=workers,
                                               progress=p), f"Pushed to {remote}")

    @app.command("pull")
    def pull_cmd(remote: str = typer.Argument("origin", help="Remote name or URL."),
                 branch: str = typer.Argument(None, help="Branch to update (default: the default branch)."),
                 policy: str = typer.Option("fail", help=f"Conflict policy: {' | '.join(MERGE_POLICIES)}."),
                 repo: str = RepoOption, workers: int = WorkersOption, json: bool = JsonOption) -> None:
        """Fetch and merge a remote branch."""
        if policy not in MERGE_POLICIES:
            fail(f"unknown policy {policy!r}: use one of {', '.join(MERGE_POLICIES)}", 2)
        r = open_repo(repo)
        with progress_bar("pull", not json) as progress:
            stats, result = pull(r, remote, branch, policy=policy, workers=workers, progress=progress)
        if json:
            print_json({"transfer": stats, "commit": result.commit, "kind": result.kind})
        else:
            console.print(f"Pulled from {remote}: {_summary(stats)}; {result.kind} to {result.commit[:12]}")
