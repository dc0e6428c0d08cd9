"""16 processes race to commit to one branch, on local disk and on S3 (moto).

Every commit reported as successful must be in the branch history, every other attempt
must fail with RefConflict, and the repository must verify afterwards.

The default run starts the racers with multiprocessing's ``forkserver`` context: each
racer is a separate process forked from a freshly spawned server that has imported
mrepo and s3fs once (no threads or connections inherited from the test process), which
keeps 16 racers affordable on two cores. The ``slow`` variant uses ``spawn`` (16 full
interpreter start-ups).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue

import pytest

from mrepo.graph import Population, Repository, verify

from ._race_worker import commit_worker

RACERS = 16


def race(url: str, method: str) -> list[tuple[int, str, str]]:
    ctx = mp.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(["mrepo.graph", "mrepo.store.backends", "s3fs", "tests.graph._race_worker"])
    barrier = ctx.Barrier(RACERS)
    results = ctx.Queue()
    env = {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "MREPO_"))}
    procs = [ctx.Process(target=commit_worker, args=(url, i, barrier, results, env)) for i in range(RACERS)]
    for p in procs:
        p.start()
    out = []
    try:
        for _ in range(RACERS):
            out.append(results.get(timeout=180))
    except queue.Empty:
        pytest.fail(f"only {len(out)} of {RACERS} racers reported")
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    return sorted(out)


@pytest.mark.parametrize("method", ["forkserver", pytest.param("spawn", marks=pytest.mark.slow)])
@pytest.mark.parametrize("kind", ["local", pytest.param("s3", marks=pytest.mark.s3)])
def test_concurrent_commits_are_never_lost(make_url, kind: str, method: str) -> None:
    url = make_url(kind)
    repo = Repository.init(url)
    root = repo.commit(Population("start"), message="root", time="2020-01-01T00:00:00Z")

    outcomes = race(url, method)

    errors = [o for o in outcomes if o[1] == "error"]
    assert not errors, errors
    won = {h for _, status, h in outcomes if status == "ok"}
    lost = [o for o in outcomes if o[1] == "conflict"]
    assert len(won) + len(lost) == RACERS
    assert won, "no racer succeeded"
    history = [h for h, _ in repo.log("main")]
    assert set(history) == won | {root}  # every reported success is in the history, nothing else
    assert len(history) == len(won) + 1  # one linear chain: each winner built on the previous head
    assert all(len(c.parents) == 1 for _, c in repo.log("main")[:-1])
    assert all("another writer" in msg or "changed" in msg for _, _, msg in lost)
    report = verify(repo.storage, workers=4)
    assert report.ok, report.problems
