"""Transfers through ``mrepo serve`` over the batch protocol (:mod:`mrepo.api.batch`).

:func:`copy_closure` is what :func:`mrepo.graph.transfer.copy_closure` runs when either side is
an HTTP remote. Instead of one request per object it

- **push** (to a server): asks the server which records, arrays and blobs of the closure it lacks or
  holds damaged (``batch/have``; present intact ones are freshened): in one request for a closure
  of up to :data:`ONE_ROUND_RECORDS` records, read here in full; else walking the closure level by
  level, once per level for its records (not descending into present ones) and once for the arrays
  and blobs. Then it sends one pack in write order: arrays
  (``zarr.json``, then chunks), blobs, records from the leaves up; chunk files of a local store go
  from the page cache to the socket (:class:`mrepo.store.file_body.FileBody`). The server verifies every
  frame before it becomes visible;
- **pull** (from a server): walks the closure level by level, taking the records the destination
  lacks or holds damaged (:mod:`mrepo.store.soundness`, as a local transfer) from the first levels
  of the closure, received in one request (``batch/closure``), and downloading the rest in one
  pack per level, then the missing or damaged arrays and blobs in one pack. Every
  received object is verified before it is written: records and blobs by hash (records also in
  canonical form and by schema), arrays chunk by chunk as they stream in (digest, size, decoding)
  and by the array hash, slab by slab (:class:`mrepo.store.integrity.ArrayReceiver`; chunks are
  written as they pass, ``zarr.json`` only after the hash). Records are written last, leaves first.

Both are resumable: what was stored before a failure stays stored, and a rerun (or the
automatic retry after a lost connection) negotiates again and moves only the rest.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ..store import CorruptObject, MrepoError, ObjectNotFound, Storage, zarr_codec
from ..store.file_body import stored_body
from ..store.hashing import parse_record_bytes
from ..store.http_backend import HttpBackend, ServerError
from ..store.integrity import (
    MAX_ARRAY_BYTES,
    ArrayReceiver,
    Buffers,
    check_array_metadata,
    check_object_bytes,
    check_slab_size,
    chunk_keys,
)
from ..store.objects import array_prefix, object_key
from ..store.parallel import per_key, settle, window
from ..store.walk import leaves_first, levels, split_references
from .schema import check_record_bytes
from .transfer import Progress, TransferStats, intact

#: Most concurrent streams that carry a push's arrays (each its own connection).
STREAMS = 2
#: Array bytes per push stream: a push of less goes in one stream, with its blobs and records after
#: the arrays in the same pack. The server verifies the chunks of one stream in parallel already; on
#: the same machine a second stream only added a request, a thread on each side and contention (bench_
#: server's push of three 32 MiB maps, median of 8: 1.35x direct in one stream, 1.6x in two); parallel
#: connections pay off for large pushes over long network paths, where one TCP stream is window-bound.
STREAM_BYTES = 256 << 20
#: Download streams of a pull (each its own connection and receiving thread).
PULL_STREAMS = 3
#: Up to this many arrays, a pull asks their sizes first (``batch/sizes``) to deal them to streams of about
#: equal bytes; more are dealt round-robin (many arrays even out, and the server would read every
#: ``zarr.json`` to answer: 67-133 ms for bench_server's 1,000 small arrays).
SIZED_PULL = 256
#: Chunk bytes of one download stream being verified and written at once.
CHECK_BYTES = 32 << 20
#: A push whose closure holds up to this many records negotiates in one request (:func:`_negotiate_push`).
ONE_ROUND_RECORDS = 512


def supports(src: Storage, dst: Storage) -> bool:
    """True when one side is an mrepo server (the batch protocol applies)."""
    return isinstance(dst.backend, HttpBackend) or isinstance(src.backend, HttpBackend)


def _balanced(sizes: dict[str, int], streams: int = STREAMS) -> list[list[str]]:
    """The hashes of ``sizes`` (hash -> bytes) in at most ``streams`` non-empty groups of about equal
    bytes (largest first, each to the lightest group), each group in hash order."""
    groups: list[list[str]] = [[] for _ in range(min(streams, len(sizes)))]
    load = [0] * len(groups)
    for h in sorted(sizes, key=lambda h: (-sizes[h], h)):
        i = load.index(min(load))
        groups[i].append(h)
        load[i] += sizes[h]
    return [sorted(g) for g in groups]


def _split(hashes: list[str], streams: int = STREAMS) -> list[list[str]]:
    """``hashes`` dealt round-robin into at most ``streams`` non-empty groups."""
    n = min(streams, len(hashes))
    return [hashes[i::n] for i in range(n)]


def _pull_groups(http: HttpBackend, hashes: list[str]) -> list[list[str]]:
    """The arrays to pull dealt to the download streams by the sizes the server declares (``batch/sizes``,
    one request): dealt by hash order, the three large maps of a species could all go to one stream and
    the pull then ran as one stream. The sizes only balance the streams (what arrives is checked); arrays
    the server gave no size for count as empty; a server without ``batch/sizes``, or more than
    :data:`SIZED_PULL` arrays: round-robin."""
    if len(hashes) <= 1 or len(hashes) > SIZED_PULL:
        return _split(hashes)
    sizes = http.batch.sizes(hashes)
    return _balanced({h: sizes.get(h, 0) for h in hashes}, PULL_STREAMS) if sizes else _split(hashes)


#: The records of one closure level the destination lacks: ``(hash, bytes, parsed body)``.
FetchLevel = Callable[[list[str]], Iterable[tuple[str, bytes, Any]]]


def _walk(roots: list[str], fetch_level: FetchLevel
          ) -> tuple[dict[str, list[str]], dict[str, bytes], set[str], set[str]]:
    """The closure of ``roots`` level by level, descending only into the records ``fetch_level``
    returns (those the destination lacks): (hash -> child records, hash -> record bytes, arrays,
    blobs named by those records)."""
    records: dict[str, list[str]] = {}
    data_of: dict[str, bytes] = {}
    arrays: set[str] = set()
    blobs: set[str] = set()
    seen: set[str] = set(roots)
    frontier = roots
    while frontier:
        level = list(fetch_level(frontier))
        frontier = []
        for h, data, body in level:
            data_of[h] = data
            records[h], new_records, new_data = split_references(body, seen)
            frontier.extend(new_records)
            for kind, child in new_data:
                (arrays if kind == "array" else blobs).add(child)
    return records, data_of, arrays, blobs


def copy_closure(src: Storage, dst: Storage, roots: Iterable[str], *, workers: int = 16,
                 progress: Progress | None = None) -> TransferStats:
    """Copy every object reachable from ``roots`` that ``dst`` lacks or holds damaged, through the batch
    protocol (the server judges its own copies in ``batch/have``; a local destination by
    :func:`mrepo.graph.transfer.intact`)."""
    roots = list(dict.fromkeys(roots))
    http = dst.backend if isinstance(dst.backend, HttpBackend) else src.backend
    assert isinstance(http, HttpBackend)
    delay = http.backoff
    for attempt in range(http.retries):
        try:
            with ThreadPoolExecutor(workers, thread_name_prefix="mrepo-batch") as pool:
                if isinstance(dst.backend, HttpBackend):
                    dst.backend.flush_records()
                    return _push(src, dst.backend, roots, pool, progress)
                return _pull(src.backend, dst, roots, pool, progress)
        except ServerError:
            if attempt == http.retries - 1:
                raise
            time.sleep(delay)  # the server went away: negotiate again, send only what is still missing
            delay = min(delay * 2, 5.0)
    raise AssertionError("unreachable")


# ----------------------------------------------------------------------------- push


class _LargeClosure(Exception):
    """The closure holds more records than one negotiation request is for."""


def _negotiate_push(src: Storage, http: HttpBackend, roots: list[str], pool: ThreadPoolExecutor
                    ) -> tuple[dict[str, list[str]], dict[str, bytes], set[str], set[str]]:
    """What the server lacks of the closure of ``roots``: (lacking record -> child records, record
    bytes, lacking blobs, lacking arrays).

    A closure of up to :data:`ONE_ROUND_RECORDS` records is read here in full and the server asked
    once about every record, blob and array in it (one round trip instead of one per level and one
    for the data; a present record's blobs and arrays are asked about too, so a damaged one is sent
    again). A larger closure is walked level by level, asking about each level's records and
    descending only into those the server lacks (an incremental push of a large population asks
    about the few new records and what they name, not the whole population)."""
    read = 0

    def records_of(hashes: list[str]) -> Iterator[tuple[str, bytes, Any]]:
        for h, data in zip(hashes, per_key(pool, src.backend)(lambda h: src.backend.get(object_key(h)), hashes)):
            yield h, data, parse_record_bytes(data)[1]

    def every_record(frontier: list[str]) -> Iterator[tuple[str, bytes, Any]]:
        nonlocal read
        read += len(frontier)
        if read > ONE_ROUND_RECORDS:
            raise _LargeClosure
        return records_of(frontier)

    try:
        records, data_of, arrays, blobs = _walk(roots, every_record)
    except _LargeClosure:
        pass
    else:
        lacking, lacking_arrays = http.batch.missing(sorted(records) + sorted(blobs), sorted(arrays))
        records = {h: children for h, children in records.items() if h in lacking}
        return records, {h: data_of[h] for h in records}, blobs & lacking, lacking_arrays

    def lacking_records(frontier: list[str]) -> Iterator[tuple[str, bytes, Any]]:
        lacking, _ = http.batch.missing(frontier, [])
        return records_of([h for h in frontier if h in lacking])

    records, data_of, arrays, blobs = _walk(roots, lacking_records)
    lacking_blobs, lacking_arrays = http.batch.missing(sorted(blobs), sorted(arrays))
    return records, data_of, lacking_blobs, lacking_arrays


def _push(src: Storage, http: HttpBackend, roots: list[str], pool: ThreadPoolExecutor,
          progress: Progress | None) -> TransferStats:
    stats = TransferStats()
    records, data_of, lacking_blobs, lacking_arrays = _negotiate_push(src, http, roots, pool)
    order = leaves_first(records)
    total = len(lacking_arrays) + len(lacking_blobs) + len(order)
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress:
            progress("objects", done, total)

    def array_meta(h: str) -> tuple[bytes, zarr_codec.ArrayMeta]:
        metadata = src.backend.get(array_prefix(h) + "zarr.json")
        return metadata, zarr_codec.parse_metadata(metadata, f"array {h}")

    # Every zarr.json first (small): the arrays are dealt to the streams by size.
    metas = dict(zip(sorted(lacking_arrays), per_key(pool, src.backend)(array_meta, sorted(lacking_arrays))))
    lock = threading.Lock()

    def array_frames(group: list[str]) -> Iterator[tuple[str, bytes]]:
        # The chunks of the current array are read ahead in the pool.
        for h in group:
            prefix, (metadata, meta) = array_prefix(h), metas[h]
            keys = chunk_keys(meta)  # grid order: the server checks the chunks slab by slab as they arrive
            # a chunk file of a local store goes from the page cache to the socket (sendfile); the
            # server verifies it as any upload
            yield prefix + "zarr.json", metadata
            n = len(metadata)
            for key, data in window(pool, lambda k, p=prefix: (k, stored_body(src.backend, p + k)), keys, size=8):
                n += len(data)
                yield prefix + key, data
            with lock:
                stats.bytes += n
                stats.array_bytes += n - len(metadata)
                stats.arrays += 1
                tick()

    def frames() -> Iterator[tuple[str, bytes]]:
        for key, data in window(pool, lambda h: (object_key(h), src.backend.get(object_key(h))),
                                 sorted(lacking_blobs)):
            stats.bytes += len(data)
            stats.blobs += 1
            tick()
            yield key, data
        for h in order:
            stats.bytes += len(data_of[h])
            stats.records += 1
            tick()
            yield object_key(h), data_of[h]

    # Arrays first, in parallel streams for a large push (STREAM_BYTES), then blobs and records: a
    # record is sent only once everything it names is on the server.
    sizes = {h: m.nbytes for h, (_, m) in metas.items()}
    groups = _balanced(sizes, max(1, min(STREAMS, -(-sum(sizes.values()) // STREAM_BYTES))))
    if len(groups) > 1:
        with ThreadPoolExecutor(len(groups), thread_name_prefix="mrepo-stream") as streams:
            for future in [streams.submit(lambda g: http.batch.upload(array_frames(g)), g) for g in groups]:
                future.result()
    elif groups or lacking_blobs or order:  # one stream: the records follow their arrays in the same pack
        http.batch.upload(itertools.chain(array_frames(groups[0] if groups else []), frames()))
        return stats
    if lacking_blobs or order:
        http.batch.upload(frames())
    return stats


# ----------------------------------------------------------------------------- pull


class _ArrayIn:
    """An array arriving in a download: each chunk is checked and written under its final key as it
    comes (in the pool); ``zarr.json``, which makes the array visible, only after the array hash."""

    def __init__(self, h: str, metadata: bytes, buffers: Buffers | None = None):
        self.h = h
        self.metadata = metadata
        meta = check_array_metadata(h, metadata, max_bytes=MAX_ARRAY_BYTES)
        check_slab_size(h, meta)
        self.receiver = ArrayReceiver(h, meta, buffers)
        self.checks: deque[tuple[Future, int]] = deque()
        self.written: list[str] = []
        self.published = False

    def take(self, dst: Storage, pool: ThreadPoolExecutor, path: str, data: bytes) -> None:
        """Check (in the pool) and write one chunk; raise the first failed one, bound the bytes in flight."""
        self.receiver.admit(path)  # a chunk of this array, not sent before, in slab order
        self.checks.append((pool.submit(self._store_chunk, dst, path, data), len(data)))
        for future in settle(self.checks, CHECK_BYTES):
            future.result()

    def _store_chunk(self, dst: Storage, path: str, data: bytes) -> None:
        self.receiver.add(path, data)
        key = array_prefix(self.h) + path
        dst.backend.put(key, data)
        self.written.append(key)

    def publish(self, dst: Storage) -> None:
        """Wait for every chunk, check the array hash, write ``zarr.json``."""
        failed = [f.exception() for f, _ in self.checks]
        self.checks.clear()
        if any(failed):
            raise next(e for e in failed if e is not None)
        self.receiver.finish()
        dst.backend.put(array_prefix(self.h) + "zarr.json", self.metadata)
        self.published = True

    def discard(self, dst: Storage) -> None:
        """After a failure: wait for the chunks in flight and remove those written (best effort)."""
        for future, _ in self.checks:
            future.exception()
        self.checks.clear()
        if self.published or dst.objects.has_array(self.h):
            return
        for key in self.written:
            try:
                dst.backend.delete(key)
            except MrepoError:
                return


def _pull(http: HttpBackend, dst: Storage, roots: list[str], pool: ThreadPoolExecutor,
          progress: Progress | None) -> TransferStats:
    stats = TransferStats()
    where = http.url
    buffers = Buffers()  # slab memory of the arrays' checks, reused from slab to slab

    # The first levels of the closure come in one request (batch/closure) once the roots are found
    # lacking; each level then takes what it lacks from them and downloads only the rest.
    prefetched: dict[str, bytes] | None = None

    def lacking_records(frontier: list[str]) -> Iterator[tuple[str, bytes, Any]]:
        nonlocal prefetched
        present = list(per_key(pool, dst.backend)(lambda h: intact(dst, "record", h), frontier))
        missing = [h for h, p in zip(frontier, present) if not p]
        if prefetched is None and missing:
            prefetched = http.batch.closure(missing)
        got: dict[str, bytes] = {}
        for h in missing:
            data = (prefetched or {}).pop(object_key(h), None)
            if data is not None:
                got[object_key(h)] = data
        rest = [h for h in missing if object_key(h) not in got]
        wanted = {object_key(h): h for h in rest}
        for key, data in (http.batch.download(rest, []) if rest else ()):
            if key not in wanted:
                raise CorruptObject(f"{where} sent {key}, which was not asked for")
            got[key] = data
        for h in missing:
            data = got.get(object_key(h))
            if data is None:
                raise ObjectNotFound(f"record {h} is missing on {where}")
            yield h, data, check_record_bytes(h, data)[1]

    records, data_of, arrays, blobs = _walk(roots, lacking_records)
    # present objects are checked as a local transfer checks them (:func:`mrepo.graph.transfer.intact`):
    # a damaged one is downloaded again and replaced
    need_arrays = [h for h, p in zip(sorted(arrays), pool.map(lambda h: intact(dst, "array", h), sorted(arrays)))
                   if not p]
    need_blobs = [h for h, p in zip(sorted(blobs), per_key(pool, dst.backend)(lambda h: intact(dst, "blob", h),
                                                                             sorted(blobs))) if not p]
    total = len(need_arrays) + len(need_blobs) + len(records)
    done = 0

    tick_lock = threading.Lock()

    def tick() -> None:
        nonlocal done
        with tick_lock:
            done += 1
            if progress:
                progress("objects", done, total)

    lock = threading.Lock()

    def count(**fields: int) -> None:
        with lock:
            for name, n in fields.items():
                setattr(stats, name, getattr(stats, name) + n)

    def receive(group_blobs: list[str], group_arrays: list[str]) -> None:
        """One download stream: verify each frame, write blobs, check and write array chunks as they
        come; arrays are published (hash, then ``zarr.json``) while the next ones arrive."""
        wanted_blobs = {object_key(h): h for h in group_blobs}
        wanted_arrays = set(group_arrays)
        current: _ArrayIn | None = None
        storing: list[tuple[Future, _ArrayIn]] = []
        try:
            for key, data in http.batch.download(group_blobs, group_arrays):
                if key.startswith("objects/"):
                    h = wanted_blobs.pop(key, None)
                    if h is None or current is not None:
                        raise CorruptObject(f"{where} sent {key} out of order or unasked")
                    if check_object_bytes(h, data) != "blob":
                        raise CorruptObject(f"object {h} from {where} is a record where a blob was referenced")
                    dst.backend.put(key, data)
                    count(blobs=1, bytes=len(data))
                    tick()
                    continue
                _, h, path = key.split("/", 2)
                if path == "zarr.json":
                    if h not in wanted_arrays or current is not None:
                        raise CorruptObject(f"{where} sent {key} out of order or unasked")
                    wanted_arrays.discard(h)
                    current = _ArrayIn(h, data, buffers)
                    count(bytes=len(data))
                else:
                    if current is None or current.h != h:
                        raise CorruptObject(f"{where} sent chunk {key} out of order or unasked")
                    current.take(dst, pool, path, data)
                    count(bytes=len(data), array_bytes=len(data))
                if current is not None and current.receiver.complete:
                    storing.append((publisher.submit(current.publish, dst), current))
                    current = None
                    count(arrays=1)
                    tick()
                    while len(storing) > 2:
                        storing[0][0].result()
                        storing.pop(0)
            while storing:
                storing[0][0].result()
                storing.pop(0)
        except BaseException:
            for future, arr in storing:
                future.exception()
                arr.discard(dst)
            if current is not None:
                current.discard(dst)
            raise
        if current is not None or wanted_arrays or wanted_blobs:
            lacking = sorted(wanted_arrays | set(wanted_blobs.values()) | ({current.h} if current else set()))
            raise ObjectNotFound(f"{where} did not send {len(lacking)} object(s), e.g. {lacking[0]}")

    groups = _pull_groups(http, need_arrays)
    if need_blobs or groups:
        jobs = [(need_blobs, groups[0] if groups else [])] + [([], g) for g in groups[1:]]
        # publishing waits for chunk checks in ``pool``: its own threads, so that it never starves them
        with ThreadPoolExecutor(len(jobs), thread_name_prefix="mrepo-stream") as streams, \
                ThreadPoolExecutor(len(jobs), thread_name_prefix="mrepo-publish") as publisher:
            for future in [streams.submit(receive, b, a) for b, a in jobs]:
                future.result()
    # Records last, leaves first (level by level, each level in parallel): a record present here
    # always has its whole closure here.
    for batch in levels(records):
        list(pool.map(lambda h: dst.backend.put(object_key(h), data_of[h]), batch))
        for h in batch:
            stats.records += 1
            stats.bytes += len(data_of[h])
            tick()
    return stats
