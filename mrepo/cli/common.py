"""Shared pieces of the ``mrepo`` command: repository selection, output, errors, progress."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, is_dataclass
from typing import Any

import click
import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from ..graph import Repository
from ..store import InvalidInput, MrepoError

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

RepoOption = typer.Option(None, "--repo", "-R", help="Repository URL (default: $MREPO_REPO, then the current folder).",
                          show_default=False)
JsonOption = typer.Option(False, "--json", help="Print machine-readable JSON.")


#: Set by the top-level ``mrepo --repo URL`` option; a command's own ``--repo`` wins.
GLOBAL_REPO: dict[str, str | None] = {"url": None}


def repo_url(url: str | None) -> str:
    """The repository URL: ``--repo``, then ``MREPO_REPO``, then the current folder."""
    return url or GLOBAL_REPO["url"] or os.environ.get("MREPO_REPO") or os.getcwd()


def open_repo(url: str | None) -> Repository:
    return Repository.open(repo_url(url))


def branch_head(r: Repository, branch: str | None) -> tuple[str, str]:
    """(branch name, head commit) of ``branch``, the default branch when ``None``; ``RefNotFound`` (exit 7)
    naming the existing branches when it does not exist (:func:`mrepo.io.branches.branch_head`, which the
    importers use too)."""
    from ..io.branches import branch_head as head_of  # imported when used: io loads pandas and mrcfile

    return head_of(r, branch)


def check_device(device: str, executor: str) -> str:
    """``--device`` of refine/reconstruct: its spelling always, CUDA's presence here when the items run in
    this process (Ray workers check it on their machines, and get a GPU each: :func:`open_executor`);
    ``BadParameter`` with the one-line reason otherwise."""
    from mrepo.workers.device import check_device_name, resolve_device

    try:
        if executor == "local":
            resolve_device(device, "refinement device")
        else:
            check_device_name(device, "refinement device")
            if device.startswith("cuda:") and device != "cuda:0":
                raise ValueError(f"refinement device {device!r}: with --executor ray use --device cuda "
                                 "(each actor sees only the GPU Ray gave it, as cuda:0)")
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    return device


def open_executor(kind: str, *, address: str | None = None, workers: int | None = None,
                  gpus_per_worker: float = 0, device: str = "cpu") -> Any:
    """The item executor named by ``--executor``: ``local`` (this process) or ``ray`` (``address``,
    ``workers`` and ``gpus_per_worker`` passed on when set; a CUDA ``device`` reserves one GPU per
    actor unless ``gpus_per_worker`` says otherwise); ``BadParameter`` for anything else."""
    if kind == "ray" and device.startswith("cuda") and not gpus_per_worker:
        gpus_per_worker = 1
    if kind == "local":
        from mrepo.workers.executors import LocalExecutor

        return LocalExecutor()
    if kind == "ray":
        from mrepo.workers.executors import RayExecutor

        return RayExecutor(**{k: v for k, v in (("address", address), ("workers", workers),
                                                ("gpus_per_worker", gpus_per_worker)) if v})
    raise typer.BadParameter(f"--executor must be 'local' or 'ray', got {kind!r}")


def refuse_memory(url: str, action: str) -> None:
    """A ``memory://`` repository lives only as long as one process: creating one from the command line
    would report success and lose the data, so ``init`` and ``clone`` refuse it (exit 2)."""
    if url.startswith("memory://"):
        raise InvalidInput(f"cannot {action} {url}: a memory:// repository dies with the process; "
                           "use a folder or s3://bucket/prefix")


def to_jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(to_jsonable(value), indent=2, sort_keys=True) + "\n")


def fail(message: str, code: int = 1) -> None:
    """Print a one-line error and exit."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def progress_bar(description: str, enabled: bool = True):  # noqa: ANN201 - a context manager
    """The command line's progress display (:mod:`mrepo.cli.progress`) fed by ``(phase, done, total)``:
    a bar on a terminal, timestamped log lines otherwise."""
    from .progress import progress_display

    return progress_display(description, enabled, console=err_console)


_TYPE_NAMES = {"str": "TEXT", "int": "INTEGER", "float": "FLOAT", "path": "PATH", "Path": "PATH"}


def _classic_display_type(self: Any, ctx: Any) -> str | None:
    """Value placeholders as scientists know them from click/argparse (``--size INTEGER``,
    ``--out PATH``; flags show none) instead of typer's ``<int>``/``<bool>``."""
    if getattr(self, "is_flag", False) or getattr(self, "count", False):
        return None
    label = _typer_display_type(self, ctx).strip("<>")
    if label.startswith("list[") and label.endswith("]"):
        label = label[5:-1]
    return _TYPE_NAMES.get(label, label if "|" in label else label.upper())


def _classic_usage_name(self: Any) -> str:
    """Arguments in the usage line as ``NAME`` (required) or ``[NAME]`` instead of ``{name}``."""
    name = self.display_name_raw.upper()
    name = name if self.required else f"[{name}]"
    return name + ("..." if self.nargs != 1 else "")


_typer_display_type = getattr(typer.core._TyperParameter, "display_type", None)
if _typer_display_type is not None and hasattr(typer.core.TyperArgument, "_usage_display_name"):
    typer.core._TyperParameter.display_type = _classic_display_type
    typer.core.TyperArgument._usage_display_name = _classic_usage_name


class MrepoGroup(TyperGroup):
    """Top-level click group: mrepo errors become a one-line message and the error's exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MrepoError as exc:
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)  # "[s3]" is not markup
            ctx.exit(exc.exit_code)
