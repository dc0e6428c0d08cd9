"""Executors: run one iteration's item tasks and reduce their half-set sums.

- :class:`LocalExecutor` runs the tasks in this process (``threads`` items at a time);
- ``RayExecutor`` runs them in a pool of Ray actors (:mod:`mrepo.workers.ray_pool`; imported
  lazily, so importing this module does not import Ray).

Both go through the same :class:`~mrepo.workers.runner.ItemRunner` (its own module,
:mod:`mrepo.workers.runner`, re-exported here): species references loaded once per
iteration and kept resident (:class:`ResidentReferences`), the per-item result cache
(:mod:`mrepo.workers.cache`: a finished item is never refined twice), and a running
sum of the items' :class:`~mrepo.workers.api.HalfSums`. Sums are exact fixed point,
so the reduced sums, the new maps and the commit do not depend on which executor,
how many workers, or in which order items finished. Layout of the sums: see
:mod:`mrepo.workers.api` (centred half-transform grids of :mod:`mrepo.kernels.gridding`).

Progress: ``run(tasks, progress=callback)`` calls ``callback(ProgressEvent)`` in the
calling thread after each finished item (the command line displays them:
:mod:`mrepo.cli.progress`).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable
from typing import Any

from .api import HalfSums, ItemResult, ItemTask, IterationOutput, largest_first
from .runner import (  # noqa: F401 - re-exported: the executors' public surface
    ItemRunner,
    LoadFn,
    Progress,
    ProgressCounter,
    ProgressEvent,
    RefineFn,
    ResidentReferences,
    accumulate_sums,
    check_tasks,
    match_worker_threads,
    task_id,
)


def sum_owned(parts: list[dict[str, HalfSums]]) -> dict[str, HalfSums]:
    """The total of per-runner sums that nobody else holds, added in place into the first part of each
    species (no full-size copy: 3 GiB per part at box 256); the same integers in any order (:func:`accumulate_sums`)."""
    total: dict[str, HalfSums] = {}
    for part in parts:
        accumulate_sums(total, part, owned=True)
        part.clear()  # each part's arrays are freed once added
    return dict(sorted(total.items()))


class LocalExecutor:
    """Runs tasks in this process, ``threads`` items at a time, largest first.

    All threads share one :class:`ResidentReferences` (one reference load per
    iteration); each keeps its own running sums, tree-reduced at the end.
    """

    def __init__(self, threads: int = 1, *, use_cache: bool = True, refine: RefineFn | None = None,
                 load_references: LoadFn | None = None):
        if int(threads) < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.threads = int(threads)
        self.references = ResidentReferences(load_references)
        self.runners = [ItemRunner(self.references, use_cache=use_cache, refine=refine) for _ in range(self.threads)]

    def run(self, tasks: Iterable[ItemTask], *, progress: Progress | None = None) -> IterationOutput:
        tasks = check_tasks(tasks)
        match_worker_threads(tasks)
        counter = ProgressCounter(tasks, progress)
        for r in self.runners:
            r.take_sums()  # a previous run that failed may have left partial sums
        results: dict[tuple[str, str], ItemResult] = {}
        if self.threads == 1:
            for task in largest_first(tasks):
                results[task_id(task)] = res = self.runners[0].run(task)
                counter.finished(res)
        else:
            self._run_threads(tasks, results, counter)
        sums = sum_owned([r.take_sums() for r in self.runners])
        return IterationOutput([results[task_id(t)] for t in tasks], sums)

    def _run_threads(self, tasks: list[ItemTask], results: dict, counter: ProgressCounter) -> None:
        todo: queue.Queue[ItemTask] = queue.Queue()
        for t in largest_first(tasks):
            todo.put(t)
        finished: queue.Queue[ItemResult | BaseException] = queue.Queue()
        stop = threading.Event()

        def work(runner: ItemRunner) -> None:
            while not stop.is_set():
                try:
                    task = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    finished.put(runner.run(task))
                except BaseException as exc:  # handed to the calling thread
                    finished.put(exc)
                    return

        pool = [threading.Thread(target=work, args=(r,), daemon=True) for r in self.runners]
        for th in pool:
            th.start()
        try:
            for _ in range(len(tasks)):
                got = finished.get()
                if isinstance(got, BaseException):
                    raise got
                results[task_id(got.task)] = got
                counter.finished(got)
        finally:
            stop.set()
            for th in pool:
                th.join()

    def close(self) -> None:
        for r in self.runners:
            r.close()


def __getattr__(name: str) -> Any:
    """``RayExecutor`` is imported lazily (``from mrepo.workers.executors import RayExecutor``
    imports Ray only then)."""
    if name == "RayExecutor":
        from .ray_pool import RayExecutor

        return RayExecutor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
