"""RayExecutor on a real local Ray instance (one per module): equivalence with the local
executor, actors killed mid-iteration, a store on a moto S3 server shared by the workers,
and a failed iteration that commits nothing. Items are refined by the real ``refine_item``."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

from mrepo.graph import Repository
from mrepo.store import InvalidInput
from mrepo.workers.cache import CACHE_PREFIX
from mrepo.workers.driver import refine_population
from mrepo.workers.executors import LocalExecutor, ProgressEvent
from mrepo.workers.settings import RefineSettings

from .test_executors import SETTINGS, assert_same_output, build_population, make_tasks

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray for the module (4 logical CPUs on this 2-core machine: room for replacements)."""
    from mrepo.workers.ray_pool import local_ray_options

    ray.init(**local_ray_options(4))
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def executor(ray_session, moto_endpoint):
    """Two CPU actors, created after the moto server so that they inherit its endpoint."""
    from mrepo.workers.executors import RayExecutor

    ex = RayExecutor(workers=2)
    yield ex
    ex.close()


def _repo(tmp_path: Path, name: str, n_items: int = 4) -> tuple[Repository, object]:
    repo = Repository.init(str(tmp_path / name))
    return repo, build_population(repo, n_items)


def test_ray_and_local_commit_the_same_population(executor, tmp_path: Path) -> None:
    settings = RefineSettings.from_json(SETTINGS)
    repo_a, _ = _repo(tmp_path, "a", 3)
    repo_b, _ = _repo(tmp_path, "b", 3)
    torch.set_num_threads(2)  # the executor gives the driver the workers' thread count (FSC sums depend on it)
    (ca,) = refine_population(repo_a, "main", 1, settings, executor)
    assert torch.get_num_threads() == settings.threads
    (cb,) = refine_population(repo_b, "main", 1, settings, LocalExecutor())
    assert repo_a.get_commit(ca).population == repo_b.get_commit(cb).population
    info = executor.info()
    assert len({i["pid"] for i in info}) == 2 and os.getpid() not in {i["pid"] for i in info}
    assert all(i["reference_loads"] <= 1 for i in info)  # once per iteration, whatever the item count
    assert len(list(repo_a.storage.backend.list(CACHE_PREFIX))) == 3  # written by the actors


@pytest.mark.parametrize("how", ["ray.kill", pytest.param("os.kill", marks=pytest.mark.slow)])
def test_worker_killed_mid_iteration_gives_the_undisturbed_commit(executor, tmp_path: Path, how: str) -> None:
    settings = RefineSettings.from_json(SETTINGS)
    repo_a, _ = _repo(tmp_path, "a", 4)
    repo_b, _ = _repo(tmp_path, "b", 4)
    victim = executor.actors[0]
    pid = executor.info()[0]["pid"]
    killed: list[int] = []

    def kill_once(event: ProgressEvent) -> None:
        if event.done == 2 and not killed:
            if how == "ray.kill":
                ray.kill(victim, no_restart=True)
            else:
                os.kill(pid, signal.SIGKILL)
            killed.append(event.done)

    (ca,) = refine_population(repo_a, "main", 1, settings, executor, progress=kill_once)
    assert killed and executor.failures == 1
    assert victim not in executor.actors  # replaced
    (cb,) = refine_population(repo_b, "main", 1, settings, LocalExecutor())
    assert repo_a.get_commit(ca).population == repo_b.get_commit(cb).population


def test_store_on_s3_shared_by_the_workers(executor, make_url, tmp_path: Path) -> None:
    repo_s3 = Repository.init(make_url("s3"))
    pop_s3 = build_population(repo_s3, 3)
    repo_b, pop_b = _repo(tmp_path, "b", 3)
    out = executor.run(make_tasks(repo_s3, pop_s3))
    assert_same_output(out, LocalExecutor().run(make_tasks(repo_b, pop_b)))
    assert len(list(repo_s3.storage.backend.list(CACHE_PREFIX))) == 3
    assert all(repo_s3.objects.has_object(r.item_hash) for r in out.results)  # items written by the actors


def test_memory_repository_is_refused(executor, make_url) -> None:
    repo = Repository.init(make_url("memory"))
    pop = build_population(repo, 1)
    with pytest.raises(InvalidInput, match="one process"):
        executor.run(make_tasks(repo, pop))


def test_cuda_tasks_are_refused_on_cpu_actors(executor, tmp_path: Path) -> None:
    import dataclasses

    repo, pop = _repo(tmp_path, "a", 1)
    tasks = [dataclasses.replace(t, settings={**t.settings, "device": "cuda"}) for t in make_tasks(repo, pop)]
    with pytest.raises(InvalidInput, match="'cuda' needs GPU actors"):
        executor.run(tasks)


def test_too_many_worker_deaths_fail_without_a_commit(executor, tmp_path: Path) -> None:
    from mrepo.workers.ray_pool import WorkerFailure

    settings = RefineSettings.from_json(SETTINGS)
    repo, _ = _repo(tmp_path, "a", 2)
    head = repo.head("main")
    saved = executor.max_failures
    executor.max_failures = 0
    try:
        with pytest.raises(WorkerFailure, match="died"):
            refine_population(repo, "main", 1, settings, executor,
                              progress=lambda e: ray.kill(executor.actors[0], no_restart=True))
    finally:
        executor.max_failures = saved
    assert repo.head("main") == head  # no partial commit
    (c,) = refine_population(repo, "main", 1, settings, executor)  # the pool is rebuilt; cache hits
    assert repo.get_commit(c).parents == (head,)


def test_pool_size_is_checked_against_the_cluster(ray_session) -> None:
    from mrepo.workers.executors import RayExecutor

    with pytest.raises(InvalidInput, match="4 CPU slots"):
        RayExecutor(workers=99)
    with pytest.raises(InvalidInput, match="no GPU"):
        RayExecutor(gpus_per_worker=1)
    with pytest.raises(InvalidInput, match="0 or 1"):
        RayExecutor(gpus_per_worker=0.5)
    assert ray.is_initialized()  # a Ray the executor did not start is left running
