"""Concurrency and crash safety: many pushers, one contended branch, a server killed mid-upload."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mrepo.graph import Commit, Population, Repository, fetch, push, verify
from mrepo.store import RefConflict, hash_bytes
from tests.api.conftest import Served, make_tokens
from tests.api.server import free_port, start_subprocess
from tests.factories import make_population


def _commits(repo: Repository, base: str, n: int, tag: str) -> list[str]:
    """``n`` commits on top of ``base``, each with its own population record (new objects to push)."""
    pop = repo.population(base)
    out = []
    for i in range(n):
        p = replace(pop, metadata={"client": f"{tag}{i}"})
        c = Commit((base,), p.save(repo.objects), "t", "2025-01-02T00:00:00Z", f"{tag} {i}", {"name": "commit"}, "test")
        out.append(c.save(repo.objects))
    return out


def test_32_pushers_and_8_racers(served: Served, tmp_path) -> None:
    local = Repository.init(str(tmp_path / "local"))
    base = local.commit(make_population(local, n_items=1), message="base", branch="race", author="t",
                        time="2025-01-01T00:00:00Z")
    push(local, served.url, "race", options=served.opts("write"))
    solo, racers = _commits(local, base, 32, "solo"), _commits(local, base, 8, "race")
    for i, h in enumerate(solo):
        local.refs.update(f"refs/heads/b{i}", h, None)
    for i, h in enumerate(racers):
        local.refs.update(f"refs/heads/r{i}", h, None)

    def job(args: tuple[str, str]) -> str:
        branch, remote_branch = args
        try:
            push(local, served.url, branch, remote_branch=remote_branch, options=served.opts("write"), workers=2)
            return "ok"
        except RefConflict:
            return "conflict"

    jobs = [(f"b{i}", f"b{i}") for i in range(32)] + [(f"r{i}", "race") for i in range(8)]
    start = time.monotonic()
    with ThreadPoolExecutor(40) as pool:
        results = list(pool.map(job, jobs))
    assert time.monotonic() - start < 60
    assert results[:32] == ["ok"] * 32
    assert sorted(results[32:]) == ["conflict"] * 7 + ["ok"]
    server = served.repo()
    assert {b: server.head(b) for b in (f"b{i}" for i in range(32))} == {f"b{i}": h for i, h in enumerate(solo)}
    winner = racers[results[32:].index("ok")]
    assert server.head("race") == winner
    assert verify(server.storage).ok


def _intact(root: Path) -> None:
    """Every visible object on disk hashes to its name; every visible array verifies."""
    repo = Repository.open(str(root))
    for entry in repo.storage.backend.list("objects/"):
        h = entry.key.removeprefix("objects/").replace("/", "")
        assert hash_bytes(repo.storage.backend.get(entry.key)) == h
    for entry in repo.storage.backend.list("arrays/"):
        if entry.key.endswith("zarr.json"):
            repo.objects.get_array(entry.key.split("/")[1], verify=True)
    repo.close()


def test_server_killed_mid_upload_then_push_retry_completes(tmp_path) -> None:
    root = tmp_path / "srv"
    Repository.init(str(root)).close()
    tokens = make_tokens(tmp_path / "tokens.toml")
    local = Repository.init(str(tmp_path / "local"))
    head = local.commit(make_population(local, n_items=40, species=("a", "b", "c")), message="big", branch="dev",
                        author="t", time="2025-01-01T00:00:00Z")
    port = free_port()
    log = tmp_path / "server.log"
    proc = start_subprocess(root, port, tmp_path / "tokens.toml", log=log)
    url = f"http://127.0.0.1:{port}/repo"
    outcome: dict[str, object] = {}

    def pusher() -> None:
        try:
            push(local, url, "dev", options={"token": tokens["write"], "retries": 30, "backoff": 0.1}, workers=4)
            outcome["ok"] = True
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = exc

    thread = threading.Thread(target=pusher)
    arrays = root / "arrays"
    try:
        thread.start()
        deadline = time.monotonic() + 60
        # The batch stream stores arrays first: kill the server as soon as the first one is visible.
        while not (arrays.exists() and any(arrays.glob("*/zarr.json"))):
            assert time.monotonic() < deadline, "upload did not start"
            time.sleep(0.001)
        proc.kill()
        proc.wait(10)
        assert Repository.open(str(root)).head("dev") is None  # the ref never moved
        _intact(root)
        stored_before = {p.parent.name for p in arrays.glob("*/zarr.json")}
        proc = start_subprocess(root, port, tmp_path / "tokens.toml", log=log)
        thread.join(120)
        assert outcome.get("ok"), outcome
        uploads = [json.loads(line) for line in log.read_text().splitlines()
                   if line.startswith("{") and "/repo/batch/upload" in line]
        assert uploads and uploads[-1]["status"] == 200  # the retry after the restart completed
        assert stored_before
    finally:
        proc.kill()
        proc.wait(10)
    repo = Repository.open(str(root))
    assert repo.head("dev") == head
    report = verify(repo.storage)
    assert report.ok, report.problems
    _intact(root)


@pytest.mark.parametrize("n", [1])
def test_population_identity_after_push(served: Served, tmp_path, n: int) -> None:
    local = Repository.init(str(tmp_path / "p"))
    local.commit(make_population(local, n_items=n), message="m", branch="dev", author="t", time="2025-01-01T00:00:00Z")
    push(local, served.url, "dev", options=served.opts("write"))
    assert served.repo().population("dev") == local.population("dev")
    assert isinstance(served.repo().population("dev"), Population)


def test_fetch_killed_mid_download_resumes_without_refetching_arrays(tmp_path) -> None:
    """Arrays received and verified before a server kill stay; the retry downloads only the rest."""
    root = tmp_path / "srv"
    Repository.init(str(root)).close()
    tokens = make_tokens(tmp_path / "tokens.toml")
    seed = Repository.open(str(root))
    rng = np.random.default_rng(0)  # 30 incompressible 2 MiB arrays: the download takes a while
    volumes = {f"v{i}": {"@array": seed.objects.put_array(rng.normal(size=(8, 256, 256)).astype(np.float32))}
               for i in range(30)}
    pop = replace(make_population(seed, n_items=4), metadata=volumes)
    head = seed.commit(pop, message="big", branch="dev", author="t", time="2025-01-01T00:00:00Z")
    port = free_port()
    proc = start_subprocess(root, port, tmp_path / "tokens.toml")
    url = f"http://127.0.0.1:{port}/repo"
    local = Repository.init(str(tmp_path / "local"))
    local.add_remote("origin", url)
    outcome: dict[str, object] = {}

    def fetcher() -> None:
        try:
            fetch(local, "origin", options={"token": tokens["read"], "retries": 1}, workers=4)
            outcome["ok"] = True
        except Exception as exc:  # noqa: BLE001 - the killed server makes this fetch fail
            outcome["error"] = exc

    arrays = tmp_path / "local" / "arrays"
    thread = threading.Thread(target=fetcher)
    try:
        thread.start()
        deadline = time.monotonic() + 60
        while not (arrays.exists() and any(arrays.glob("*/zarr.json"))):
            assert time.monotonic() < deadline and thread.is_alive(), outcome
            time.sleep(0.001)
        proc.kill()
        proc.wait(10)
        thread.join(60)
        kept = {p.parent.name for p in arrays.glob("*/zarr.json")}
        assert kept and local.refs.get("refs/remotes/origin/dev") is None
        assert verify(local.storage).ok  # only complete, verified objects are visible
        proc = start_subprocess(root, port, tmp_path / "tokens.toml")
        stats = fetch(local, "origin", options={"token": tokens["read"]})
    finally:
        proc.kill()
        proc.wait(10)
    assert local.refs.get("refs/remotes/origin/dev") == head
    total = len({e.key.split("/")[1] for e in seed.storage.backend.list("arrays/")})
    assert stats.arrays == total - len(kept)
    assert verify(local.storage).ok
