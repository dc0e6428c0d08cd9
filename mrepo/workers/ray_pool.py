"""Ray execution of one iteration: a pool of actors fed from a dynamic largest-first queue.

Each actor (:class:`ItemWorker`) holds one :class:`~mrepo.workers.executors.ItemRunner`:
it loads the species references once per iteration and keeps them resident, reads raw
data from the store and writes the refined item models itself (``refine_item``), caches
each item's result in the store (:mod:`mrepo.workers.cache`), hands back only hashes and
statistics, and keeps the running sum of its items' half-set sums. One actor per GPU
(``num_gpus=gpus_per_worker``) when the cluster has GPUs, else one per CPU slot
(``num_cpus=1``); actors are spread over the nodes. Tasks whose settings name a CUDA ``device`` run
only on GPU actors (each sees its GPU as ``cuda``/``cuda:0``; the command line reserves one per actor).

The driver keeps every actor busy with exactly one task in flight and hands out the
next (largest first) when one returns (``ray.wait``). At the end of the iteration it
takes each actor's sums in turn and adds them into one total (exact fixed point: any order
gives the same bits), so the driver holds the total and one actor's sums at a time.

Fault tolerance: when an actor dies (``ray.kill``, its process killed, its node lost),
its in-flight task *and every item it had finished this iteration* are queued again,
because its running sums died with it; a fresh actor takes its slot. The re-run of a
finished item is a cache hit (hashes and sums read back from the store), so no
refinement is repeated and the reduced sums, hence the commit, equal those of an
undisturbed run. The driver commits only after :meth:`RayExecutor.run` returns, so no
partial iteration ever reaches a branch. After ``max_failures`` actor deaths in one
iteration, or a task that saw ``max_task_failures`` actors die under it, the
iteration fails with :class:`WorkerFailure`.
"""

from __future__ import annotations

import logging
import os
from collections import Counter, deque
from collections.abc import Iterable
from typing import Any

try:
    import ray
    from ray.exceptions import RayActorError
except ImportError:  # one line naming the extra instead of a traceback
    from ..store import MissingExtra

    raise MissingExtra("the Ray executor (--executor ray) needs the optional package 'ray': "
                       "pip install 'mrepo[ray]' (or 'mrepo[all]')") from None

from ..store import InvalidInput, MrepoError
from . import stages
from .api import HalfSums, ItemResult, ItemTask, IterationOutput, largest_first
from .executors import (
    ItemRunner,
    LoadFn,
    Progress,
    ProgressCounter,
    RefineFn,
    ResidentReferences,
    accumulate_sums,
    check_tasks,
    match_worker_threads,
    task_id,
)

#: Environment variables of the driver set in each actor (store endpoints and credentials); passed
#: to the actor's constructor rather than as a Ray runtime_env, so that actors can start in
#: Ray's pre-started worker processes.
FORWARDED_ENV_PREFIXES = ("MREPO_", "AWS_")


class WorkerFailure(MrepoError):
    """Ray workers kept dying; the iteration was abandoned (nothing was committed)."""


class ItemWorker:
    """Actor body: runs item tasks with resident references and keeps their running sums."""

    def __init__(self, use_cache: bool, refine: RefineFn | None, load: LoadFn | None, env: dict[str, str]):
        os.environ.update(env)  # store endpoint and credentials of the driver (read when stores open)
        self.runner = ItemRunner(ResidentReferences(load), use_cache=use_cache, refine=refine)

    def run(self, task: ItemTask, relay: Any = None) -> ItemResult:
        """Refine ``task``; with ``relay`` (a :class:`~mrepo.workers.stages.StageRelay` actor) its
        stage events go to the driver."""
        if relay is None:
            return self.runner.run(task)
        forward = stages.Forwarder(relay)
        with stages.stage_hook(forward):
            try:
                return self.runner.run(task)
            finally:
                last = forward.flush()
                if last is not None:
                    ray.get(last)  # in the relay before the result reaches the driver, which then drains it

    def take_sums(self) -> dict[str, HalfSums]:
        return self.runner.take_sums()

    def info(self) -> dict[str, Any]:
        """Process id, node id and how many times references were loaded (for tests and logs)."""
        return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(),
                "reference_loads": self.runner.references.loads}


def local_ray_options(num_cpus: int) -> dict[str, Any]:
    """``ray.init`` options of a local Ray for refinement: quiet, no dashboard, and workers at
    normal priority (Ray starts workers at nice 15 by default, which on a shared machine
    made refinement in actors ~45 % slower than in-process)."""
    return {"num_cpus": num_cpus, "include_dashboard": False, "logging_level": logging.ERROR,
            "log_to_driver": False, "_system_config": {"worker_niceness": 0}}


def _pool_size(workers: int | None, gpus_per_worker: int | None) -> tuple[int, int]:
    """(gpus per worker, workers) for the connected cluster; InvalidInput when it cannot hold them."""
    resources = ray.cluster_resources()
    gpus = float(resources.get("GPU", 0))
    per = (1 if gpus >= 1 else 0) if gpus_per_worker is None else int(gpus_per_worker)
    if per and gpus < 1:
        raise InvalidInput("gpus_per_worker=1 but the Ray cluster has no GPU")
    slots = int(gpus) if per else int(resources.get("CPU", 0))
    n = int(workers) if workers is not None else max(1, slots)
    if n > slots:
        raise InvalidInput(f"{n} workers asked for but the Ray cluster has {slots} {'GPU' if per else 'CPU'} slots")
    return per, n


def forwarded_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIXES)}


class RayExecutor:
    """Runs item tasks on a pool of Ray actors (see the module docstring).

    ``address``: a running cluster (``auto`` or ``ray://host:port``); without it a local Ray
    is started (:func:`local_ray_options`, ``num_cpus=workers``, default all CPUs) and
    stopped by :meth:`close`.
    If Ray is already initialised in this process it is used as it is and left running.
    ``workers``: actors in the pool (default: GPUs / ``gpus_per_worker``, else CPU slots).
    ``gpus_per_worker``: 0 for CPU actors, 1 for one actor per GPU (default: 1 if the
    cluster has GPUs). ``use_cache``: look up and store per-item results.
    """

    def __init__(self, address: str | None = None, workers: int | None = None, gpus_per_worker: int | None = None,
                 *, use_cache: bool = True, max_failures: int | None = None, max_task_failures: int = 3,
                 refine: RefineFn | None = None, load_references: LoadFn | None = None,
                 init_options: dict[str, Any] | None = None):
        if workers is not None and int(workers) < 1:
            raise InvalidInput(f"workers must be >= 1, got {workers}")
        if gpus_per_worker is not None and float(gpus_per_worker) not in (0.0, 1.0):
            raise InvalidInput(f"gpus_per_worker must be 0 or 1, got {gpus_per_worker}")
        self._actors: list[Any] = []
        self._relay: Any = None
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            if address:
                ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False, **(init_options or {}))
            else:
                ray.init(**{**local_ray_options(int(workers or os.cpu_count() or 1)), **(init_options or {})})
        try:
            self.gpus_per_worker, self.workers = _pool_size(workers, gpus_per_worker)
        except BaseException:
            self.close()
            raise
        self.use_cache = use_cache
        self.max_failures = 3 * self.workers if max_failures is None else int(max_failures)
        self.max_task_failures = int(max_task_failures)
        self._refine, self._load = refine, load_references
        self.failures = 0  # actor deaths seen in the last run

    # ------------------------------------------------------------------ pool
    def _new_actor(self) -> Any:
        options: dict[str, Any] = {"num_cpus": 1, "max_restarts": 0, "scheduling_strategy": "SPREAD"}
        if self.gpus_per_worker:
            options["num_gpus"] = self.gpus_per_worker
        return ray.remote(ItemWorker).options(**options).remote(self.use_cache, self._refine, self._load,
                                                                  forwarded_env())

    def _ensure_pool(self) -> None:
        while len(self._actors) < self.workers:
            self._actors.append(self._new_actor())

    def _replace(self, slot: int) -> None:
        try:
            ray.kill(self._actors[slot], no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass
        self._actors[slot] = self._new_actor()

    def _discard_pool(self) -> None:
        for a in self._actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self._actors = []

    @property
    def actors(self) -> list[Any]:
        """The current actor handles (one per worker slot; created by the first run)."""
        self._ensure_pool()
        return list(self._actors)

    def info(self) -> list[dict[str, Any]]:
        """Each actor's pid, node id and reference-load count."""
        return ray.get([a.info.remote() for a in self.actors])

    # ------------------------------------------------------------------ one iteration
    def run(self, tasks: Iterable[ItemTask], *, progress: Progress | None = None) -> IterationOutput:
        tasks = check_tasks(tasks)
        for t in tasks:
            if t.repo_url.startswith("memory://"):
                raise InvalidInput(f"{t.repo_url} lives in one process; Ray workers need a folder or s3:// URL")
            if str(t.settings.get("device", "cpu")).startswith("cuda") and not self.gpus_per_worker:
                raise InvalidInput(f"refinement device {t.settings['device']!r} needs GPU actors "
                                   "(gpus_per_worker=1, --gpus-per-worker 1); this pool has CPU actors only")
        match_worker_threads(tasks)
        self._ensure_pool()
        self.failures = 0
        counter = ProgressCounter(tasks, progress)
        results: dict[tuple[str, str], ItemResult] = {}
        sums: dict[str, HalfSums] = {}
        pending = deque(largest_first(tasks))
        # item stages of the actors, re-reported here, only while someone listens
        self._relay = ray.remote(num_cpus=0)(stages.StageRelay).remote() if stages.hooks_installed() else None
        try:
            while pending:
                owner = self._schedule(pending, results, counter)
                lost = self._collect(owner, sums)
                pending.extend(largest_first(lost))
            sums = dict(sorted(sums.items()))
        except BaseException:
            self._discard_pool()  # surviving actors may hold partial sums of this iteration
            raise
        finally:
            if self._relay is not None:
                ray.kill(self._relay)
                self._relay = None
        return IterationOutput([results[task_id(t)] for t in tasks], sums)

    def _schedule(self, pending: deque[ItemTask], results: dict[tuple[str, str], ItemResult],
                  counter: ProgressCounter) -> dict[int, list[ItemTask]]:
        """Run every pending task; returns slot -> tasks whose sums that slot's actor now holds."""
        owner: dict[int, list[ItemTask]] = {}
        task_failures: Counter[tuple[str, str]] = Counter()
        inflight: dict[Any, tuple[int, ItemTask]] = {}
        idle = deque(range(len(self._actors)))
        while pending or inflight:
            while idle and pending:
                slot, task = idle.popleft(), pending.popleft()
                inflight[self._actors[slot].run.remote(task, self._relay)] = (slot, task)
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=None if self._relay is None else 0.5)
            if self._relay is not None:
                stages.replay(ray.get(self._relay.drain.remote()))
            if not ready:
                continue
            (ref,) = ready
            slot, task = inflight.pop(ref)
            try:
                result = ray.get(ref)
            except RayActorError:
                task_failures[task_id(task)] += 1
                self._lost_actor(slot, f"while refining item {task.item_key[:12]}")
                if task_failures[task_id(task)] >= self.max_task_failures:
                    raise WorkerFailure(f"item {task.item_key[:12]} of source {task.source!r}: "
                                        f"{self.max_task_failures} workers died running it") from None
                lost = owner.pop(slot, [])
                pending.extendleft(reversed([task, *largest_first(lost)]))
                idle.append(slot)
                continue
            results[task_id(task)] = result
            owner.setdefault(slot, []).append(task)
            idle.append(slot)
            counter.finished(result)
        return owner

    def _collect(self, owner: dict[int, list[ItemTask]], total: dict[str, HalfSums]) -> list[ItemTask]:
        """Add each busy actor's sums into ``total``, one actor at a time (the driver and the object store
        then hold the total and one actor's sums, not every actor's: 3 GiB each at box 256); returns the
        tasks of actors that died."""
        lost: list[ItemTask] = []
        for slot in owner:
            try:
                part = ray.get(self._actors[slot].take_sums.remote())
            except RayActorError:
                self._lost_actor(slot, "before handing over its sums")
                lost.extend(owner[slot])
                continue
            accumulate_sums(total, part)  # exact: the same integers in any order
            del part
        return lost

    def _lost_actor(self, slot: int, when: str) -> None:
        self.failures += 1
        if self.failures > self.max_failures:
            raise WorkerFailure(f"{self.failures} Ray workers died in one iteration (last {when}); giving up")
        self._replace(slot)

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Stop the actors, and Ray itself if this executor started it."""
        self._discard_pool()
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
        self._owns_ray = False

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
