"""Maintenance: ``verify`` recomputes every reachable hash and checks record schemas; ``repair``
replaces damaged objects by verified copies from another repository; ``gc`` sweeps unreachable
objects.

Reachability starts at every ref (branches, tags, remote-tracking refs, pull
requests) and follows the reference objects inside records.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..store import Backend, CorruptObject, Entry, ObjectNotFound, Storage, is_hash, references, reflog
from ..store.errors import InvalidRecord
from ..store.integrity import ArrayReceiver, check_array_metadata, check_object_bytes
from ..store.objects import ObjectType, array_prefix, object_key
from .raw_verify import verify_in_place
from .schema import check_record_bytes, ref_target_kind
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
    """What ``verify`` found: one-line problems, and the damaged objects as (type, hash)."""

    checked: int = 0
    problems: list[str] = field(default_factory=list)
    damaged: list[tuple[ObjectType, str]] = field(default_factory=list)

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


def check_array(backend: Backend, h: str) -> None:
    """Array ``h`` on ``backend``: canonical ``zarr.json`` naming it, every chunk matching its
    digest and decoding with zero padding, the data hashing to ``h`` (one streaming pass, one
    slab in memory). Raises ObjectNotFound or CorruptObject."""
    prefix = array_prefix(h)
    try:
        metadata = backend.get(prefix + "zarr.json")
    except ObjectNotFound:
        raise ObjectNotFound(f"array {h}: missing") from None
    receiver = ArrayReceiver(h, check_array_metadata(h, metadata))
    for key in receiver.keys():
        try:
            receiver.add(key, backend.get(prefix + key))
        except ObjectNotFound:
            raise CorruptObject(f"array {h}: chunk {key} is missing") from None
    receiver.finish()


def _verify_array(storage: Storage, h: str) -> str | None:
    """None when the array is intact (see :func:`check_array`), else a one-line problem."""
    try:
        check_array(storage.backend, h)
    except ObjectNotFound:
        return f"array {h}: missing"
    except CorruptObject as exc:
        return f"array {h}: corrupt ({exc})"
    return None


def _verify_record(storage: Storage, h: str) -> str | None:
    """None when record ``h`` hashes to its name, is canonical and matches its kind's schema."""
    try:
        check_record_bytes(h, storage.backend.get(object_key(h)))
    except ObjectNotFound:
        return f"record {h}: missing"
    except InvalidRecord as exc:
        return f"record {h}: invalid ({exc})"
    except CorruptObject as exc:
        return f"record {h}: corrupt ({exc})"
    return None


def _verify_ref_targets(storage: Storage) -> list[str]:
    """Refs that point at a record of the wrong kind (branches and tags -> commits, pulls -> pull requests)."""
    problems = []
    for key, h in storage.refs.list("refs/"):
        try:
            kind, _ = storage.objects.get_record_with_kind(h)
        except (ObjectNotFound, CorruptObject, ValueError):
            continue  # reported as a damaged record
        expected = ref_target_kind(key)
        if kind != expected:
            problems.append(f"{key}: points at a {kind} record {h}, not a {expected}")
    return problems


def verify(storage: Storage, *, workers: int = 8, progress: Progress | None = None,
           raw: bool = True) -> VerifyReport:
    """Recompute the hash of every reachable object, check record schemas and ref target kinds;
    report missing, corrupt or invalid objects (``report.damaged`` lists them for repair).

    With ``raw`` (default), raw data that items reference in place (imported without ``--copy``)
    is hashed whole and compared with its item key (:mod:`mrepo.graph.raw_verify`).
    """
    report = VerifyReport()
    storage.objects.clear_cache()  # re-read everything from the backend
    objs = reachable(storage, on_problem=report.problems.append)
    report.problems.extend(_verify_ref_targets(storage))

    def check(item: tuple[str, ObjectType]) -> str | None:
        h, kind = item
        if kind == "array":
            return _verify_array(storage, h)
        if kind == "record":
            return _verify_record(storage, h)
        return storage.objects.verify_object(kind, h)

    items = sorted(objs.items())
    with ThreadPoolExecutor(workers) as pool:
        for i, ((h, kind), problem) in enumerate(zip(items, pool.map(check, items)), 1):
            if problem:
                report.damaged.append((kind, h))
                if not any(p.startswith(f"{kind} {h}:") for p in report.problems):
                    report.problems.append(problem)
            if progress:
                progress("verify", i, len(items))
    report.checked = len(items)
    if raw:
        raw_checked, raw_problems = verify_in_place([h for h, k in items if k == "record"], storage=storage,
                                                    workers=workers, progress=progress)
        report.checked += raw_checked
        report.problems.extend(raw_problems)
    report.problems.sort()
    return report


@dataclass
class RepairReport:
    """What ``repair`` did: objects replaced by verified copies, and those it could not repair."""

    repaired: list[tuple[ObjectType, str]] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    rounds: int = 0


def repair(storage: Storage, remote: Storage, *, workers: int = 8, max_rounds: int = 8,
           progress: Progress | None = None, raw: bool = True) -> tuple[RepairReport, VerifyReport]:
    """Replace every damaged object of ``storage`` by a verified copy from ``remote``.

    Rounds of verify-then-fetch until nothing damaged is left or a round repairs nothing (a
    record fetched whole may reveal missing objects below it). Records come with whatever of
    their closure is missing (:func:`~mrepo.graph.transfer.copy_closure`); arrays and blobs are
    replaced by copies checked against their names (:mod:`mrepo.store.integrity`). Returns the
    repair report and the final verify report. Raw data referenced in place cannot be repaired
    from a remote: with ``raw`` it is hashed once, for the final report, not in every round.
    """
    from .transfer import copy_closure

    out = RepairReport()
    report = verify(storage, workers=workers, progress=progress, raw=False)
    while report.damaged and out.rounds < max_rounds:
        out.rounds += 1
        before = len(out.repaired)
        for kind, h in report.damaged:
            try:
                if kind == "record":
                    copy_closure(remote, storage, [h], workers=workers)
                    # copy_closure skips a present record whose bytes hash right (e.g. a malformed one)
                    if _verify_record(storage, h) is not None:
                        data = remote.backend.get(object_key(h))
                        check_record_bytes(h, data)
                        storage.backend.put(object_key(h), data)
                elif kind == "array":
                    _replace_array(remote, storage, h)
                else:
                    data = remote.backend.get(object_key(h))
                    if check_object_bytes(h, data) != "blob":
                        raise CorruptObject(f"object {h} is a record at the remote, not a blob")
                    storage.backend.put(object_key(h), data)
                out.repaired.append((kind, h))
            except (ObjectNotFound, CorruptObject) as exc:
                out.failed.append(f"{kind} {h}: {exc}")
        storage.objects.clear_cache()
        report = verify(storage, workers=workers, progress=progress, raw=False)
        if len(out.repaired) == before:
            break
    out.failed = sorted(set(out.failed))
    if raw:
        records = [h for h, k in reachable(storage, on_problem=lambda _: None).items() if k == "record"]
        raw_checked, raw_problems = verify_in_place(records, storage=storage, workers=workers, progress=progress)
        report.checked += raw_checked
        report.problems = sorted(report.problems + raw_problems)
    return out, report


def _replace_array(remote: Storage, storage: Storage, h: str) -> None:
    """Copy array ``h`` from ``remote`` over the local one, chunk by chunk, each checked as it passes;
    ``zarr.json`` last, after the array hashed to ``h``."""
    prefix = array_prefix(h)
    try:
        metadata = remote.backend.get(prefix + "zarr.json")
    except ObjectNotFound:
        raise ObjectNotFound(f"array {h} is not at {remote.url}") from None
    receiver = ArrayReceiver(h, check_array_metadata(h, metadata))
    chunks = []
    for key in receiver.keys():
        data = remote.backend.get(prefix + key)
        receiver.add(key, data)
        chunks.append((key, data))
    receiver.finish()
    storage.backend.delete(prefix + "zarr.json")  # incomplete while its chunks are rewritten
    for key, data in chunks:
        storage.backend.put(prefix + key, data)
    storage.backend.put(prefix + "zarr.json", metadata)


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
    report.reflog_roots = sorted({h for e in reflog.read_all(storage.backend, since=cutoff) if e.timestamp > cutoff
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
