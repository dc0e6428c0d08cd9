"""Worker of the commit race test: imported by spawned processes, so it imports only mrepo."""

from __future__ import annotations

from typing import Any


def commit_worker(url: str, index: int, barrier: Any, results: Any, env: dict[str, str]) -> None:
    """Store a population, wait for every racer at ``barrier``, then commit it to ``main``.

    ``env`` (S3 endpoint and credentials) is applied first: a forkserver's children inherit
    the server's environment, not the test's.

    Puts ``(index, "ok" | "conflict" | "error", commit hash or message)`` on ``results``.
    """
    import os

    os.environ.update(env)
    from mrepo.graph import Population, Repository
    from mrepo.store import RefConflict

    try:
        repo = Repository.open(url)
        population = Population(f"racer{index}", metadata={"racer": index}).save(repo.objects)
        repo.head("main")  # open connections before the start signal
        barrier.wait(timeout=120)
        h = repo.commit(population, message=f"racer {index}", branch="main", author=f"racer{index}")
        results.put((index, "ok", h))
    except RefConflict as exc:
        results.put((index, "conflict", str(exc)))
    except BaseException as exc:  # reported to the test, which fails on it
        results.put((index, "error", repr(exc)))
