"""The branch an import or edit commits to: its head, or one refusal (``RefNotFound``, exit 7 "not found")
naming the branches there are. Used by the importers and by the ``mrepo`` command's ``--branch`` options.
No Fourier layout is involved in this module.
"""

from __future__ import annotations

from ..graph import Population, Repository
from ..store import RefNotFound

__all__ = ["branch_head", "branch_population"]


def branch_head(repo: Repository, branch: str | None = None, *, hint: str = "") -> tuple[str, str]:
    """(branch name, head commit) of ``branch`` (the default branch when None); ``RefNotFound`` naming the
    existing branches when it has no commit, ``hint`` appended (e.g. ``": import data first"``)."""
    target = branch or repo.default_branch
    head = repo.head(target)
    if head is None:
        raise RefNotFound(f"branch {target!r} does not exist (branches: {', '.join(repo.branches()) or '-'}){hint}")
    return target, head


def branch_population(repo: Repository, branch: str | None = None) -> tuple[Population, str]:
    """(population, head commit) at the head of ``branch``; refused as :func:`branch_head` when it has none."""
    _, head = branch_head(repo, branch, hint=": import data first")
    return repo.population(head), head
