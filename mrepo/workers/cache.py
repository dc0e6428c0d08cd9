"""Per-item result cache: a finished item is never refined twice for the same inputs.

An item's result is keyed by the hash of everything it depends on
(:func:`cache_inputs`): the item version hash, its raw-data key and source, the
species versions used as references, the settings JSON, the iteration number and
the code version (:func:`code_version`: ``mrepo.__version__`` plus a BLAKE3 digest of
the source files of ``mrepo/{kernels,workers,graph,store}``). The repository URL and
the particle count are not inputs (the same store reached by two URLs shares a cache).

Layout and write order (objects first, pointer last)::

    arrays/<h>/              the item's half-set sums, int64 fixed point (data, weight)
    objects/..               record ``item-result``: ``{"inputs", "item", "particles",
                             "nc_spectra", "sums": {species: {"data", "weight",
                             "particles"}}, "stats"}`` (refs as ``@record``/``@array``)
    cache/items/<inputs>     pointer: the item-result record hash + ``\\n`` (Backend.put)

A reader trusts a pointer only when every object it reaches is present (so a pointer
left dangling by ``gc`` reads as a miss and the item is simply refined again).

Garbage collection: ``item-result`` records and the per-item sums are reachable from
no ref, so ``gc`` sweeps them once they are older than its grace period (24 h by
default), and the refined item records of an iteration that was never committed go
with them. :func:`prune_cache` removes pointers older than a grace period or dangling;
:func:`cache_roots` lists the record hashes of younger pointers, which ``gc`` should
are roots for ``gc`` (mrepo.graph.maintenance: young pointers under ``cache/`` keep what
they reach; old or unreadable pointers are deleted), so a resumed iteration keeps its work.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..store import (
    Backend,
    CorruptObject,
    InvalidInput,
    ObjectNotFound,
    ObjectStore,
    array_ref,
    canonical_json,
    check_hash,
    deref,
    hash_record,
    record_ref,
)
from .api import HalfSums, ItemResult, ItemTask

CACHE_PREFIX = "cache/items/"
RECORD_KIND = "item-result"
_CODE_PACKAGES = ("kernels", "workers", "graph", "store")
#: What reading an absent, swept or damaged cache entry may raise.
_DAMAGED = (ObjectNotFound, InvalidInput, CorruptObject, UnicodeDecodeError, KeyError, TypeError)


@functools.cache
def code_version() -> str:
    """``<mrepo version>+<first 16 hex of BLAKE3 over the result-producing source files>``."""
    import blake3

    from .. import __version__

    root = Path(__file__).resolve().parents[1]
    digest = blake3.blake3()
    for package in _CODE_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return f"{__version__}+{digest.hexdigest()[:16]}"


def cache_inputs(task: ItemTask) -> dict[str, Any]:
    """The JSON inputs an item result depends on (see the module docstring)."""
    return {
        "source": task.source,
        "item_key": check_hash(task.item_key, "item key"),
        "item": check_hash(task.item_hash, "item hash"),
        "species": {name: check_hash(h, f"species {name!r} hash") for name, h in sorted(task.species.items())},
        "settings": task.settings,
        "iteration": int(task.iteration),
        "polarity": task.polarity,
        "code": code_version(),
    }


def cache_key(task: ItemTask) -> str:
    """The inputs hash under which ``task``'s result is cached (64 hex)."""
    return hash_record("item-result-inputs", cache_inputs(task))


def pointer_key(key: str) -> str:
    return CACHE_PREFIX + check_hash(key, "cache key")


def _json_stats(stats: dict[str, Any]) -> dict[str, Any]:
    """The canonical-JSON-safe entries of a stats dict (numpy scalars as numbers; others dropped)."""
    out: dict[str, Any] = {}
    for k, v in stats.items():
        v = v.item() if isinstance(v, np.generic) else v
        try:
            canonical_json(v)
        except InvalidInput:
            continue
        out[str(k)] = v
    return out


@dataclass(frozen=True)
class CacheEntry:
    """A pointer: inputs hash, item-result record hash, pointer modification time (epoch s)."""

    key: str
    record: str
    mtime: float


class ResultCache:
    """Item results of one repository, cached under their inputs hash."""

    def __init__(self, objects: ObjectStore):
        self.objects = objects
        self.backend: Backend = objects.backend

    def put(self, task: ItemTask, result: ItemResult) -> str:
        """Store ``result`` (which must still carry its own sums) for ``task``; returns the record hash."""
        if result.sums is None:
            raise ValueError(f"item {task.item_key[:12]}: a cached result needs its own half-set sums")
        inputs = cache_inputs(task)
        names = sorted(result.sums)
        arrays = self.objects.put_arrays(
            [a for n in names for a in (result.sums[n].data, result.sums[n].weight)])
        sums = {n: {"data": array_ref(arrays[2 * i]), "weight": array_ref(arrays[2 * i + 1]),
                    "particles": int(result.sums[n].particles)} for i, n in enumerate(names)}
        body = {
            "inputs": inputs,
            "item": record_ref(result.item_hash),
            "particles": {n: record_ref(h) for n, h in sorted(result.particles.items())},
            "nc_spectra": None if result.nc_spectra is None else array_ref(result.nc_spectra),
            "sums": sums,
            "stats": _json_stats(result.stats),
        }
        h = self.objects.put_record(RECORD_KIND, body)
        self.backend.put(pointer_key(hash_record("item-result-inputs", inputs)), (h + "\n").encode())
        return h

    def lookup(self, task: ItemTask) -> str | None:
        """The item-result record hash cached for ``task`` if it and all it reaches are present."""
        try:
            h = self.backend.get(pointer_key(cache_key(task))).decode().strip()
            check_hash(h, "cache pointer")
            body = self.objects.get_record(h, RECORD_KIND)
            return h if self._complete(body) else None
        except _DAMAGED:  # absent, dangling or damaged: a miss, never an error
            return None

    def _complete(self, body: dict[str, Any]) -> bool:
        records = [deref(body["item"]), *(deref(r) for r in body["particles"].values())]
        arrays = [deref(s[k]) for s in body["sums"].values() for k in ("data", "weight")]
        if body.get("nc_spectra") is not None:
            arrays.append(deref(body["nc_spectra"]))
        return all(self.objects.has_object(r) for r in records) and all(self.objects.has_array(a) for a in arrays)

    def get(self, task: ItemTask) -> ItemResult | None:
        """The cached result of ``task`` (with its sums and ``stats["cached"] = True``), or None."""
        h = self.lookup(task)
        if h is None:
            return None
        body = self.objects.get_record(h, RECORD_KIND)
        try:
            sums = {n: HalfSums(self.objects.get_array(deref(s["data"])), self.objects.get_array(deref(s["weight"])),
                                int(s["particles"])) for n, s in body["sums"].items()}
        except _DAMAGED:  # swept or damaged between lookup and read
            return None
        stats = {**body.get("stats", {}), "cached": True}
        nc = body.get("nc_spectra")
        return ItemResult(task, deref(body["item"]), {n: deref(r) for n, r in body["particles"].items()}, sums,
                          None if nc is None else deref(nc), stats)


def cache_entries(backend: Backend) -> list[CacheEntry]:
    """Every result-cache pointer of a repository (unreadable pointers are skipped)."""
    from ..graph.maintenance import cache_pointers

    return [CacheEntry(e.key.removeprefix(CACHE_PREFIX), h, e.mtime)
            for e, h in cache_pointers(backend) if h is not None and e.key.startswith(CACHE_PREFIX)]


def cache_roots(backend: Backend, *, grace_seconds: float, now: float | None = None) -> set[str]:
    """Record hashes of the pointers younger than ``grace_seconds`` (roots for ``gc``)."""
    cutoff = (time.time() if now is None else now) - grace_seconds
    return {e.record for e in cache_entries(backend) if e.mtime > cutoff}


def prune_cache(objects: ObjectStore, *, grace_seconds: float, now: float | None = None,
                dry_run: bool = False) -> int:
    """Delete pointers older than ``grace_seconds`` or whose result is no longer complete;
    returns how many were (or, with ``dry_run``, would be) deleted."""
    cutoff = (time.time() if now is None else now) - grace_seconds
    cache = ResultCache(objects)
    removed = 0
    for e in objects.backend.list(CACHE_PREFIX):
        try:
            h = objects.backend.get(e.key).decode().strip()
            check_hash(h)
            ok = e.mtime > cutoff and cache._complete(objects.get_record(h, RECORD_KIND))
        except _DAMAGED:  # unreadable pointer or record: prune it
            ok = False
        if not ok:
            removed += 1
            if not dry_run:
                objects.backend.delete(e.key)
    return removed

