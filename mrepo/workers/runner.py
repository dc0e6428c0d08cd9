"""What every executor needs to run item tasks in one process and reduce their sums.

- :class:`ItemRunner`: refines tasks one by one (or takes them from the result cache,
  :mod:`mrepo.workers.cache`), keeps the running sum of their
  :class:`~mrepo.workers.api.HalfSums` and hands it over with :meth:`ItemRunner.take_sums`;
- :class:`ResidentReferences`: species references loaded once per iteration and kept;
- the exact reduction (:func:`accumulate_sums`), task checks
  (:func:`check_tasks`, :func:`task_id`), the torch thread count shared with the driver
  (:func:`match_worker_threads`), and progress events (:class:`ProgressEvent`,
  :class:`ProgressCounter`).

Used by :class:`mrepo.workers.executors.LocalExecutor` (threads in this process) and
:mod:`mrepo.workers.ray_pool` (one runner per Ray actor). Layout of the sums: see
:mod:`mrepo.workers.api`.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..store import Storage, canonical_json
from .api import HalfSums, ItemResult, ItemTask
from .cache import ResultCache

__all__ = ["ItemRunner", "ResidentReferences", "ProgressEvent", "ProgressCounter", "Progress", "RefineFn", "LoadFn",
           "check_tasks", "task_id", "accumulate_sums", "match_worker_threads"]

#: ``refine(task, references) -> ItemResult`` (default: :func:`mrepo.workers.refine_item.refine_item`).
#: The result's writeable sums are handed over: the runner adds the next items' sums into them.
RefineFn = Callable[[ItemTask, Any], ItemResult]
#: ``load(repo_url, species, settings) -> references`` (default: :func:`mrepo.workers.references.load_references`).
LoadFn = Callable[[str, dict[str, str], dict[str, Any]], Any]


@dataclass(frozen=True)
class ProgressEvent:
    """One more item finished: counts so far, seconds since the iteration started, the result."""

    done: int
    total: int
    particles_done: int
    particles_total: int
    elapsed: float
    result: ItemResult


Progress = Callable[[ProgressEvent], None]


def _default_refine(task: ItemTask, references: Any) -> ItemResult:
    from .refine_item import refine_item

    return refine_item(task, references)


def _default_load(repo_url: str, species: dict[str, str], settings: dict[str, Any]) -> Any:
    from .references import load_references
    from .settings import RefineSettings

    return load_references(repo_url, species, RefineSettings.from_json(settings))


def match_worker_threads(tasks: list[ItemTask]) -> None:
    """Give the calling (driver) process the torch thread count the workers use (settings
    ``threads``), whichever executor ran and whether or not any item was refined here.

    The driver reconstructs and computes FSC with torch after the executor returns, and
    those sums change in the last bits with the thread count; without this the commit
    would depend on the executor and on cache hits.
    """
    counts = {int(t.settings.get("threads", 1)) for t in tasks}
    if len(counts) > 1:
        raise ValueError(f"tasks of one iteration use different thread counts {sorted(counts)}")
    if counts:
        import torch

        torch.set_num_threads(counts.pop())


def check_tasks(tasks: Iterable[ItemTask]) -> list[ItemTask]:
    """The tasks as a list; ValueError when one is not an ItemTask or an item appears twice."""
    out = list(tasks)
    seen: set[tuple[str, str]] = set()
    for t in out:
        if not isinstance(t, ItemTask):
            raise ValueError(f"expected ItemTask, got {type(t).__name__}")
        if (t.source, t.item_key) in seen:
            raise ValueError(f"item {t.item_key[:12]} of source {t.source!r} appears twice in one iteration")
        seen.add((t.source, t.item_key))
    return out


def task_id(task: ItemTask) -> tuple[str, str]:
    return task.source, task.item_key


def _check_grids(name: str, x: HalfSums, y: HalfSums) -> None:
    if x.data.shape != y.data.shape or x.weight.shape != y.weight.shape:
        raise ValueError(f"species {name!r}: half-set sums of grids {x.data.shape} and {y.data.shape} differ")


def accumulate_sums(total: dict[str, HalfSums], part: dict[str, HalfSums], *, owned: bool = False) -> None:
    """Add ``part`` into ``total`` in place, exactly (fixed point: the same integers in any order). A species new to ``total`` is copied, unless ``owned`` (``part``'s arrays are then taken
    over: nobody else holds them, and they are writeable). Memory: ``total`` plus the part being added,
    whatever the number of parts (3 GiB per part at box 256)."""
    for name in sorted(part):
        s = part[name]
        mine = total.get(name)
        if mine is None:
            total[name] = s if owned else HalfSums(s.data.copy(), s.weight.copy(), s.particles)
        else:
            _check_grids(name, mine, s)
            mine.add(s)


class ResidentReferences:
    """Species references loaded once per (repository, species versions, settings) and kept."""

    def __init__(self, load: LoadFn | None = None):
        self._load = load or _default_load
        self._key: tuple[str, str, bytes] | None = None
        self._refs: Any = None
        self._lock = threading.Lock()
        self.loads = 0

    def get(self, task: ItemTask) -> Any:
        key = (task.repo_url, canonical_json(sorted(task.species.items())).decode(), canonical_json(task.settings))
        with self._lock:
            if key != self._key:
                self._refs = None  # free the previous iteration's maps first
                self._refs = self._load(task.repo_url, dict(task.species), task.settings)
                self._key = key
                self.loads += 1
            return self._refs


class ItemRunner:
    """Runs item tasks in one process and keeps the running sum of their half-set sums.

    :meth:`run` returns the result without sums (``sums=None``): they are folded into
    :attr:`sums`, which :meth:`take_sums` hands over and resets.
    """

    def __init__(self, references: ResidentReferences | None = None, *, use_cache: bool = True,
                 refine: RefineFn | None = None):
        self.references = references or ResidentReferences()
        self.use_cache = use_cache
        self._refine = refine or _default_refine
        self._stores: dict[str, Storage] = {}
        self.sums: dict[str, HalfSums] = {}

    def _cache(self, url: str) -> ResultCache:
        if url not in self._stores:
            self._stores[url] = Storage.open(url)
        return ResultCache(self._stores[url].objects)

    def run(self, task: ItemTask) -> ItemResult:
        """Refine ``task`` (or take its cached result), add its sums, return its hashes and stats."""
        t0 = time.perf_counter()
        cache = self._cache(task.repo_url) if self.use_cache else None
        result = cache.get(task) if cache is not None else None
        fresh = result is None
        if result is None:
            result = self._refine(task, self.references.get(task))
            if result.sums is None:
                raise ValueError(f"item {task.item_key[:12]}: refine returned no half-set sums")
            if cache is not None:
                cache.put(task, result)
            result.stats.setdefault("cached", False)
        for name, s in result.sums.items():
            mine = self.sums.get(name)
            if mine is None:
                # a fresh result's sums are this runner's to add into (no full-size copy: 3 GiB at box 256);
                # cached ones may be read-only or shared
                own = fresh and s.data.flags.writeable and s.weight.flags.writeable
                self.sums[name] = s if own else HalfSums(s.data.copy(), s.weight.copy(), s.particles)
            elif mine.data.shape != s.data.shape or mine.weight.shape != s.weight.shape:
                raise ValueError(f"species {name!r}: item {task.item_key[:12]} sums have grid {s.data.shape}, "
                                 f"expected {mine.data.shape}")
            else:
                mine.add(s)
        stats = {**result.stats, "seconds_total": time.perf_counter() - t0}
        stats.setdefault("particles", task.particles_total)
        return dataclasses.replace(result, task=task, sums=None, stats=stats)

    def take_sums(self) -> dict[str, HalfSums]:
        sums, self.sums = self.sums, {}
        return sums

    def close(self) -> None:
        for s in self._stores.values():
            s.close()
        self._stores.clear()


class ProgressCounter:
    """Turns finished results into :class:`ProgressEvent` (each item counted once)."""

    def __init__(self, tasks: list[ItemTask], progress: Progress | None):
        self.progress = progress
        self.total = len(tasks)
        self.particles_total = sum(t.particles_total for t in tasks)
        self.done: set[tuple[str, str]] = set()
        self.particles_done = 0
        self.start = time.perf_counter()

    def finished(self, result: ItemResult) -> None:
        key = task_id(result.task)
        if key in self.done:
            return
        self.done.add(key)
        self.particles_done += result.task.particles_total
        if self.progress is not None:
            self.progress(ProgressEvent(len(self.done), self.total, self.particles_done, self.particles_total,
                                        time.perf_counter() - self.start, result))
