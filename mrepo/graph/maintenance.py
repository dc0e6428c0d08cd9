"""Maintenance: ``verify`` recomputes every reachable hash; ``gc`` sweeps unreachable objects.

Reachability starts at every ref (branches, tags, remote-tracking refs, pull
requests) and follows the reference objects inside records.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..store import Backend, CorruptObject, Entry, ObjectNotFound, Storage, is_hash, references, reflog, zarr_codec
from ..store.objects import ObjectType, array_prefix, object_key
from .transfer import Progress

DEFAULT_GRACE_SECONDS = 24 * 3600.0
#: Write-once pointer files (e.g. the refinement result cache ``cache/items/<inputs>``), each
#: holding one record hash: roots for gc while younger than the grace period, swept after.
CACHE_PREFIX = "cache/"


def cache_pointers(backend: Backend) -> list[tuple[Entry, str | None]]:
    """Every pointer under ``cache/`` with the record hash it holds (None when unreadable)."""
    out: list[tuple[Entry, str | None]] = []
    for entry in backend.list(CACHE_PREFIX):
        try:
            text = backend.get(entry.key).decode("ascii").strip()
        except (ObjectNotFound, UnicodeDecodeError):
            text = ""
        out.append((entry, text if is_hash(text) else None))
    return out


@dataclass
class VerifyReport:
    checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def reachable(storage: Storage, *, on_problem: Callable[[str], None] | None = None,
              extra_roots: list[str] = ()) -> dict[str, ObjectType]:
    """Every object reachable from any ref (and from ``extra_roots`` records): hash -> type.
    Missing or corrupt records are reported through ``on_problem``."""
    found: dict[str, ObjectType] = {}
    stack: list[tuple[str, str]] = [(h, "a young object") for h in extra_roots]
    for key, h in storage.refs.list("refs/"):
        stack.append((h, key))
    while stack:
        h, origin = stack.pop()
        if h in found:
            continue
        found[h] = "record"
        try:
            body = storage.objects.get_record(h)
        except ObjectNotFound:
            if on_problem:
                on_problem(f"record {h}: missing (referenced from {origin})")
            continue
        except (CorruptObject, ValueError) as exc:
            if on_problem:
                on_problem(f"record {h}: corrupt ({exc})")
            continue
        for kind, child in references(body):
            if kind == "record":
                stack.append((child, h))
            else:
                found.setdefault(child, kind)
    return found


def _verify_array(storage: Storage, h: str) -> str | None:
    """Check an array's data hash and that its zarr.json is exactly what mrepo writes."""
    try:
        arr = storage.objects.get_array(h, verify=True)
        meta = storage.objects.array_meta(h)
        expected = zarr_codec.metadata_document(arr, meta.chunks, h, meta.chunk_digests)
        if storage.backend.get(array_prefix(h) + "zarr.json") != expected:
            return f"array {h}: corrupt (zarr.json differs from its canonical form)"
    except ObjectNotFound:
        return f"array {h}: missing"
    except (CorruptObject, ValueError) as exc:
        return f"array {h}: corrupt ({exc})"
    except Exception as exc:  # a damaged chunk can make the decompressor raise anything
        return f"array {h}: corrupt ({type(exc).__name__}: {exc})"
    return None


def verify(storage: Storage, *, workers: int = 8, progress: Progress | None = None) -> VerifyReport:
    """Recompute the hash of every reachable object; report missing or corrupt ones."""
    report = VerifyReport()
    storage.objects.clear_cache()  # re-read everything from the backend
    objs = reachable(storage, on_problem=report.problems.append)

    def check(item: tuple[str, ObjectType]) -> str | None:
        h, kind = item
        if kind == "array":
            return _verify_array(storage, h)
        return storage.objects.verify_object(kind, h)

    items = sorted(objs.items())
    with ThreadPoolExecutor(workers) as pool:
        for i, problem in enumerate(pool.map(check, items), 1):
            if problem and problem not in report.problems:
                report.problems.append(problem)
            if progress:
                progress("verify", i, len(items))
    report.checked = len(items)
    report.problems.sort()
    return report


def _is_record(storage: Storage, key: str) -> bool:
    try:
        return storage.backend.get(key)[:7] == b"record\0"
    except ObjectNotFound:
        return False


@dataclass
class GcReport:
    reachable: int = 0
    deleted_objects: int = 0
    deleted_arrays: int = 0
    deleted_bytes: int = 0
    kept_young: int = 0
    deleted_pointers: int = 0
    #: Commits kept because a reflog entry younger than the grace period names them.
    reflog_roots: list[str] = field(default_factory=list)


def gc(storage: Storage, *, grace_seconds: float = DEFAULT_GRACE_SECONDS, dry_run: bool = False,
       now: float | None = None) -> GcReport:
    """Delete objects unreachable from every ref and older than ``grace_seconds``.

    The grace period protects objects a concurrent writer has stored but not yet
    referenced (DESIGN.md: objects before refs): young records count as roots, so
    their whole closure survives, and writers freshen objects they find already
    present (``Backend.put_immutable``, ``ObjectStore.freshen``), as git does. An array
    folder's age is that of its newest file.
    """
    report = GcReport()  # kept_young: unreachable from refs, kept as young or reached from young records
    now = time.time() if now is None else now
    cutoff = now - grace_seconds
    entries = list(storage.backend.list("objects/"))
    young_records = []
    for entry in entries:
        h = entry.key.removeprefix("objects/").replace("/", "")
        if entry.mtime > cutoff and len(h) == 64 and _is_record(storage, entry.key):
            young_records.append(h)
    from_refs = reachable(storage, on_problem=lambda _: None)
    report.reachable = len(from_refs)
    # Young records are roots too: what a concurrent writer stored (or freshened) and is about to
    # reference keeps everything it reaches; so are the records young cache pointers name.
    pointers = cache_pointers(storage.backend)
    young_pointers = [h for e, h in pointers if h is not None and e.mtime > cutoff]
    # Commits a ref held within the grace period (reflog) survive, so a deleted branch or a forced
    # move can be undone (``mrepo branch --restore``) until the period ends.
    report.reflog_roots = sorted({h for e in reflog.read_all(storage.backend) if e.timestamp > cutoff
                                  for h in (e.old, e.new) if h and storage.objects.has_object(h)})
    live = reachable(storage, extra_roots=young_records + young_pointers + report.reflog_roots,
                     on_problem=lambda _: None)
    for entry, h in pointers:
        if h is None or entry.mtime <= cutoff:
            report.deleted_pointers += 1
            if not dry_run:
                storage.backend.delete(entry.key)

    for entry in entries:
        h = entry.key.removeprefix("objects/").replace("/", "")
        if h in from_refs:
            continue
        if entry.mtime > cutoff or h in live:
            report.kept_young += 1
            continue
        report.deleted_objects += 1
        report.deleted_bytes += entry.size
        if not dry_run:
            storage.backend.delete(object_key(h) if len(h) == 64 else entry.key)

    arrays: dict[str, list] = {}
    for entry in storage.backend.list("arrays/"):
        parts = entry.key.split("/")
        if len(parts) >= 3:
            arrays.setdefault(parts[1], []).append(entry)
    for h, entries in arrays.items():
        if h in from_refs:
            continue
        if max(e.mtime for e in entries) > cutoff or h in live:
            report.kept_young += 1
            continue
        report.deleted_arrays += 1
        report.deleted_bytes += sum(e.size for e in entries)
        if not dry_run:
            # zarr.json first, so a half-deleted array reads as incomplete, never as complete-but-wrong.
            for e in sorted(entries, key=lambda e: not e.key.endswith("zarr.json")):
                storage.backend.delete(e.key)
    if not dry_run:
        storage.objects.clear_cache()
    return report
