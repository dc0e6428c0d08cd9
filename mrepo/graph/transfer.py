"""Transfers between repositories: clone, fetch, push, pull.

Only objects the destination lacks (or holds damaged) are copied, several in
parallel, arrays as their stored Zarr files (no re-encoding). Nothing received is
trusted: every object is checked against its name while it streams through, and
every ref name against the receiving side's rules, before it becomes visible. Write order keeps the invariant that a
record present in a repository has its whole closure there: arrays and blobs
first, then records from the leaves up (a record is written only after every
record it references), then the ref by compare-and-swap. An interrupted transfer,
run again, finds the complete objects and copies only what is still missing.

The walk of the records and the copy of the data overlap: an array's chunks start
moving as soon as the walk finds the array missing, while the walk goes on in a pool
of its own, so the data pool is busy from the first array to the last.
"""

from __future__ import annotations

import hashlib
import heapq
import queue
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..store import (
    CorruptObject,
    InvalidInput,
    InvalidName,
    MrepoError,
    ObjectNotFound,
    RefConflict,
    Storage,
    branch_key,
    check_hash,
)
from ..store.integrity import ArrayReceiver, Buffers, check_array_metadata, check_object_bytes
from ..store.names import check_shared_ref_key
from ..store.objects import array_prefix, object_key
from ..store.soundness import array_sound, object_sound
from ..store.walk import levels, split_references
from .history import is_ancestor
from .repository import MergeResult, Repository
from .schema import check_record_bytes

Progress = Callable[[str, int, int], None]  # (phase, done, total)


@dataclass
class TransferStats:
    """What a transfer copied: object counts and bytes (array bytes separately)."""

    records: int = 0
    blobs: int = 0
    arrays: int = 0
    bytes: int = 0
    array_bytes: int = 0
    refs: dict[str, str] = field(default_factory=dict)

    def add(self, other: TransferStats) -> None:
        self.records += other.records
        self.blobs += other.blobs
        self.arrays += other.arrays
        self.bytes += other.bytes
        self.array_bytes += other.array_bytes


#: A present blob up to this size is reread and rehashed by a transfer; larger ones (raw data) are
#: left to ``verify`` / ``verify --repair``.
SMALL_BLOB = 4 << 20

#: The kinds' checks of a present object (:mod:`mrepo.store.soundness`): records and small blobs
#: reread, arrays by their canonical zarr.json and every chunk file against its recorded digest.
_SOUND: dict[str, Callable[[Storage, str], bool]] = {
    "record": lambda dst, h: object_sound(dst.backend, h, 1 << 62, "record"),
    "blob": lambda dst, h: object_sound(dst.backend, h, SMALL_BLOB, "blob"),
    "array": lambda dst, h: array_sound(dst.backend, h),
}


def _presence_key(kind: str, h: str) -> str:
    """The key whose presence makes object ``h`` of ``kind`` present (an array: its ``zarr.json``)."""
    return array_prefix(h) + "zarr.json" if kind == "array" else object_key(h)


def intact(dst: Storage, kind: str, h: str, listed: set[str] | None = None, src: Storage | None = None) -> bool:
    """Object ``h`` of ``kind`` (record, array, blob) is present at ``dst`` (freshened for gc) and
    sound by the kind's check; a server (``checks_writes``) verified it on upload and checks its
    own store, so there presence is enough. ``listed``: the keys ``dst`` held when the transfer
    began (:func:`_listed`); an object not among them is taken as absent without a request (one
    that appeared since is written again, with the same bytes). ``src``: where the transfer reads
    from; a local one lets an array's chunks on S3 be checked without downloading them
    (:func:`mrepo.store.soundness.array_sound`)."""
    if listed is not None and _presence_key(kind, h) not in listed:
        return False
    if not dst.objects.freshen(kind, h):
        return False
    if dst.backend.checks_writes:
        return True
    try:
        if kind == "array" and src is not None:
            return array_sound(dst.backend, h, src.backend)
        return _SOUND[kind](dst, h)
    except (ObjectNotFound, CorruptObject):
        return False


def _listed(dst: Storage, pool: ThreadPoolExecutor) -> set[str] | None:
    """The presence keys (:func:`_presence_key`) ``dst`` holds, when its ``objects/`` and its
    ``arrays/`` each list in one request (fewer than :attr:`~mrepo.store.backends.Backend.list_page`
    keys; the two requests in parallel); else None. A transfer to a new or small remote then
    learns what is absent with two requests instead of one round trip per object, level by level
    of the walk. None, too, where presence checks are local (``list_page`` 0), where a server
    checks what it is sent, and when the listing fails (the checks then go one by one)."""
    page = dst.backend.list_page
    if not page or dst.backend.checks_writes:
        return None

    def keys(prefix: str) -> set[str] | None:
        out: set[str] = set()
        for n, entry in enumerate(dst.backend.list(prefix), 1):
            if n >= page:  # another page would be needed: the store is not small
                return None
            if prefix == "objects/" or entry.key.endswith("/zarr.json"):
                out.add(entry.key)
        return out

    try:
        found = [f.result() for f in [pool.submit(keys, p) for p in ("objects/", "arrays/")]]
    except (MrepoError, OSError):
        return None
    if found[0] is None or found[1] is None:
        return None
    return found[0] | found[1]


def _receive_record(src: Storage, h: str) -> tuple[bytes, Any]:
    """Bytes and body of record ``h`` read from ``src``, checked (hash, canonical form, schema)."""
    data = src.backend.get(object_key(h))
    return data, check_record_bytes(h, data)[1]


class _ArrayCopy:
    """One array on its way from ``src`` to ``dst``: chunks are verified as they pass and written
    under their final keys (invisible until ``zarr.json``); ``zarr.json`` is written only after
    the whole array hashed to its name."""

    def __init__(self, h: str, metadata: bytes, buffers: Buffers | None = None):
        self.h = h
        self.metadata = metadata
        self.receiver = ArrayReceiver(h, check_array_metadata(h, metadata), buffers)
        self.keys = self.receiver.keys()
        self.written: list[str] = []
        self.published = False
        self._left = len(self.keys)
        self._lock = threading.Lock()

    def copy_chunk(self, src: Storage, dst: Storage, key: str) -> tuple[int, bool]:
        """Copy one chunk; the call that completes the array checks its hash and publishes it.
        Returns (chunk bytes, whether the array was published)."""
        full = array_prefix(self.h) + key
        data = src.backend.get(full)
        self.receiver.add(key, data)
        dst.backend.put(full, data)
        with self._lock:
            self.written.append(full)
            self._left -= 1
            last = self._left == 0
        if last:
            self.publish(dst)
        return len(data), last

    def publish(self, dst: Storage) -> None:
        self.receiver.finish()
        dst.backend.put(array_prefix(self.h) + "zarr.json", self.metadata)
        self.published = True

    def discard(self, dst: Storage) -> None:
        """After a failed transfer: remove the chunk files written for an array that never became
        visible (best effort; an array already complete at ``dst`` is left alone)."""
        if self.published or not self.written or dst.objects.has_array(self.h):
            return
        for key in list(self.written):
            try:
                dst.backend.delete(key)
            except MrepoError:  # e.g. a server: it discards its own staged uploads
                return


def copy_closure(src: Storage, dst: Storage, roots: Iterable[str], *, workers: int = 16,
                 progress: Progress | None = None) -> TransferStats:
    """Copy every object reachable from ``roots`` (record hashes) that ``dst`` lacks or holds damaged.

    Nothing received is trusted: a record's bytes must hash to its name, be canonical JSON and
    match its kind's schema (:mod:`mrepo.graph.schema`); a blob must hash to its name; an
    array's ``zarr.json`` must be canonical and name it, each chunk must match its digest and
    the assembled array must hash to its name (:mod:`mrepo.store.integrity`), all checked while
    the bytes stream through. An object becomes visible at ``dst`` only after its check; a
    failed check raises CorruptObject (or InvalidRecord) naming the object and ``src``, and no
    record or ref is written. A present object that fails its check is replaced.

    The same checks apply whichever way the objects go (clone, fetch, pull, and push into a
    local folder, S3 or a server): a push verifies its own repository's arrays in full too, so a
    source whose chunks match the digests of a ``zarr.json`` but whose content does not hash to
    the array's name (damage below those digests, or a forgery) is refused before the
    destination holds any of it.
    """
    from . import batch_transfer  # a server on either side: the batch protocol (few requests, verified)

    if batch_transfer.supports(src, dst):
        return batch_transfer.copy_closure(src, dst, roots, workers=workers, progress=progress)
    try:
        return _copy_closure(src, dst, roots, workers=workers, progress=progress)
    except CorruptObject as exc:
        raise type(exc)(f"{exc} (received from {src.url}; refused, nothing referencing it was stored)") from None


#: Most threads of the walk (record reads, presence checks, ``zarr.json`` reads): small requests
#: that keep the data pool fed; the data (chunks, blobs) moves in ``workers`` threads of its own.
WALK_WORKERS = 16


def _copy_closure(src: Storage, dst: Storage, roots: Iterable[str], *, workers: int,
                  progress: Progress | None) -> TransferStats:
    walk = ThreadPoolExecutor(min(WALK_WORKERS, workers), thread_name_prefix="mrepo-walk")
    data = ThreadPoolExecutor(workers, thread_name_prefix="mrepo-transfer")
    try:
        return _Pipeline(src, dst, walk, data, progress, workers).run(roots)
    finally:  # on a refused object, stop at once: cancel what has not started
        walk.shutdown(wait=True, cancel_futures=True)
        data.shutdown(wait=True, cancel_futures=True)


class _Pipeline:
    """One transfer as events on the calling thread: the walk finds what ``dst`` lacks (records
    received and checked, arrays and blobs found missing) and each missing array or blob is
    handed to the data pool at once; tasks report to one queue, so the state below is touched
    by the calling thread only. Records are written last, leaves first.

    The data pool is fed ``workers`` tasks at a time, smallest array first (blobs before arrays,
    an array's chunks in grid order): the small arrays of tables and masks, found one level
    below the large maps, no longer wait behind every chunk of the maps, so the last files to
    move are chunks of the largest array rather than small files and their ``zarr.json``."""

    def __init__(self, src: Storage, dst: Storage, walk: ThreadPoolExecutor, data: ThreadPoolExecutor,
                 progress: Progress | None, workers: int):
        self.src, self.dst, self.walk, self.data = src, dst, walk, data
        self.slots = workers  # data tasks submitted at once
        self.queued: list[tuple[int, int, Callable[..., None], Callable[..., Any], tuple]] = []  # heap
        self.order = 0  # tie-break of the heap: first queued, first run
        self.progress = progress
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.running = 0  # tasks submitted whose event is not yet handled
        self.walking = 0  # of which walk tasks: the total is known when none is left
        self.seen: set[str] = set()
        self.records: dict[str, bytes] = {}
        self.children: dict[str, list[str]] = {}
        self.copies: list[_ArrayCopy] = []
        self.blobs = 0
        self.stats = TransferStats()
        self.done = 0  # files copied (chunks, zarr.json, blobs; then records)
        self.reported = 0  # of which passed to ``progress`` (once the total is known)
        self.total = 0
        self.listed: set[str] | None = None  # what ``dst`` held at the start, when it is small
        self.buffers = Buffers()  # slab memory of the arrays' checks, reused from array to array

    # ------------------------------------------------------------------ tasks (pool threads)
    def _submit(self, pool: ThreadPoolExecutor, handler: Callable[..., None], fn: Callable[..., Any],
                *args: Any) -> None:
        self.running += 1
        if pool is self.walk:
            self.walking += 1

        def task() -> None:
            try:
                self.events.put((pool, handler, args, fn(*args), None))
            except BaseException as exc:  # handed to the calling thread, which stops the transfer
                self.events.put((pool, handler, args, None, exc))

        pool.submit(task)

    def _visit_record(self, h: str) -> tuple[bytes, Any] | None:
        """None when record ``h`` is intact at ``dst`` (its closure is there by invariant), else its
        bytes and body received from ``src`` and checked. Present records are freshened (see
        ObjectStore.freshen): gc keeps young objects and their closures, so nothing this transfer
        relies on can be swept under it."""
        return None if intact(self.dst, "record", h, self.listed) else _receive_record(self.src, h)

    def _check_data(self, kind: str, h: str) -> _ArrayCopy | str | None:
        """None when array or blob ``h`` is intact at ``dst``; else the blob's hash, or the array's
        copy started (its ``zarr.json`` read and checked) in the same task, so its chunks can move
        without waiting behind the presence checks of other arrays."""
        if intact(self.dst, kind, h, self.listed, self.src):
            return None
        return self._start_array(h) if kind == "array" else h

    def _start_array(self, h: str) -> _ArrayCopy:
        try:
            return _ArrayCopy(h, self.src.backend.get(array_prefix(h) + "zarr.json"), self.buffers)
        except ObjectNotFound:
            raise ObjectNotFound(f"array {h} is missing or incomplete in {self.src.url}") from None

    def _copy_blob(self, h: str) -> int:
        data = self.src.backend.get(object_key(h))
        if check_object_bytes(h, data) != "blob":
            raise CorruptObject(f"object {h} is a record where a blob is referenced")
        self.dst.backend.put(object_key(h), data)
        return len(data)


    # ------------------------------------------------------------------ handlers (calling thread)
    def _on_record(self, args: tuple[str], received: tuple[bytes, Any] | None) -> None:
        if received is None:
            return
        (h,), (data, body) = args, received
        self.records[h] = data
        self.children[h], new_records, new_data = split_references(body, self.seen)
        for child in new_records:
            self._submit(self.walk, self._on_record, self._visit_record, child)
        for kind, child in new_data:
            self._submit(self.walk, self._on_data, self._check_data, kind, child)

    def _on_data(self, args: tuple[str, str], found: _ArrayCopy | str | None) -> None:
        if found is None:
            return
        if isinstance(found, str):
            self.blobs += 1
            self.total += 1
            self._queue_data(0, self._on_blob, self._copy_blob, found)
            return
        c = found
        self.copies.append(c)
        self.stats.bytes += len(c.metadata)
        self.total += len(c.keys) + 1
        size = c.receiver.meta.nbytes  # decoded bytes
        if not c.keys:  # an empty array: nothing to wait for
            self._queue_data(0, self._on_blob, c.publish, self.dst)
        for key in c.keys:  # grid order: slabs complete (and are hashed) one after the other
            self._queue_data(size, self._on_chunk, c.copy_chunk, self.src, self.dst, key)

    def _queue_data(self, size: int, handler: Callable[..., None], fn: Callable[..., Any], *args: Any) -> None:
        """Queue a data task of an object of ``size`` bytes (smaller objects run first)."""
        heapq.heappush(self.queued, (size, self.order, handler, fn, args))
        self.order += 1
        self._feed()

    def _feed(self) -> None:
        """Submit queued data tasks while fewer than ``slots`` run."""
        while self.queued and self.running - self.walking < self.slots:
            _, _, handler, fn, args = heapq.heappop(self.queued)
            self._submit(self.data, handler, fn, *args)

    def _on_chunk(self, args: tuple, result: tuple[int, bool]) -> None:
        n, published = result
        self.stats.bytes += n
        self.stats.array_bytes += n
        self._tick(2 if published else 1)  # the chunk, and the zarr.json it completed

    def _on_blob(self, args: tuple, n: int | None) -> None:
        """A blob copied (``n`` bytes), or an empty array's ``zarr.json`` written (None)."""
        self.stats.bytes += n or 0
        self._tick()

    def _tick(self, n: int = 1) -> None:
        """Count ``n`` files copied; report each to ``progress`` once the walk has ended (the total,
        records included, is known then), one call per file."""
        self.done += n
        if self.progress is None or self.walking:
            return
        while self.reported < self.done:
            self.reported += 1
            self.progress("objects", self.reported, self.total + len(self.records))

    # ------------------------------------------------------------------ the run
    def _drain(self) -> None:
        """Handle events until every submitted task has reported; the first failure stops the
        transfer (chunk files of arrays not yet visible are removed) and is raised."""
        try:
            while self.running:
                pool, handler, args, result, exc = self.events.get()
                self.running -= 1
                if pool is self.walk:
                    self.walking -= 1
                if exc is not None:
                    raise exc
                handler(args, result)
                self._feed()
                self._tick(0)  # when the walk has just ended: report what was copied meanwhile
        except BaseException:
            self.walk.shutdown(wait=True, cancel_futures=True)  # nothing still writing before cleaning up
            self.data.shutdown(wait=True, cancel_futures=True)
            for c in self.copies:
                c.discard(self.dst)
            raise

    def run(self, roots: Iterable[str]) -> TransferStats:
        frontier = [check_hash(h, "root") for h in dict.fromkeys(roots)]
        self.seen.update(frontier)
        self.listed = _listed(self.dst, self.walk)
        for h in frontier:
            self._submit(self.walk, self._on_record, self._visit_record, h)
        self._drain()
        stats = self.stats
        stats.arrays, stats.blobs = len(self.copies), self.blobs

        def put_record(h: str) -> int:
            self.dst.backend.put(object_key(h), self.records[h])
            return len(self.records[h])

        # Records by height: leaves first (bytes already received and checked while walking); only
        # edges to records that are themselves missing count.
        children = {h: [c for c in kids if c in self.records] for h, kids in self.children.items()}
        for level in levels(children):
            for n in self.data.map(put_record, level):
                stats.bytes += n
                self._tick()
        stats.records = len(self.records)
        self.dst.objects.clear_cache()  # records it held damaged may have been replaced
        for h in frontier:  # written and checked: the ref's target check need not read them back
            if h in self.records:
                self.dst.objects.remember_record(h, self.records[h])
        return stats


# ----------------------------------------------------------------------------- high-level operations


def _ref_updates_for(src: Repository, prefixes: tuple[str, ...]) -> dict[str, str]:
    """The refs of ``src`` below ``prefixes`` (one listing of ``refs/``, filtered here: one request
    to a server instead of one per prefix), every name checked by the receiving side's rules
    (:func:`mrepo.store.names.check_shared_ref_key`) before anything is copied."""
    out: dict[str, str] = {}
    for key, value in src.refs.list("refs/"):
        if not key.startswith(prefixes):
            continue
        try:
            check_shared_ref_key(key)
        except InvalidName as exc:
            raise InvalidName(f"{src.url} lists a ref with an invalid name: {exc}") from None
        out[key] = value
    return out


def clone(src_url: str, dst_url: str, *, src_options: dict | None = None, dst_options: dict | None = None,
          workers: int = 16, progress: Progress | None = None) -> tuple[Repository, TransferStats]:
    """Create a new repository at ``dst_url`` holding every branch, tag and pull request of ``src_url``."""
    src = Repository.open(src_url, src_options)
    dst = Repository.init(dst_url, dst_options, default_branch=src.default_branch)
    refs = _ref_updates_for(src, ("refs/heads/", "refs/tags/", "refs/pulls/"))
    stats = copy_closure(src.storage, dst.storage, refs.values(), workers=workers, progress=progress)
    for key, value in sorted(refs.items()):
        dst.refs.update(key, value, None, operation=f"clone from {src_url}")
        if key.startswith("refs/heads/"):
            dst.refs.update("refs/remotes/origin/" + key.removeprefix("refs/heads/"), value, None,
                            operation=f"clone from {src_url}")
    dst.add_remote("origin", src_url)
    stats.refs = refs
    src.close()
    return dst, stats


def remote_url(repo: Repository, remote: str) -> str:
    """URL of a named remote, or ``remote`` itself when it looks like a URL or path."""
    remotes = repo.remotes()
    if remote in remotes:
        return remotes[remote]
    if "://" in remote or remote.startswith(("/", ".", "~")):
        return remote
    raise InvalidInput(f"unknown remote {remote!r} (known: {', '.join(sorted(remotes)) or 'none'})")


def _remote_name(repo: Repository, remote: str) -> str:
    """Name under refs/remotes/: the remote's name, or a short digest of an ad-hoc URL."""
    return remote if remote in repo.remotes() else "url-" + hashlib.sha1(remote.encode()).hexdigest()[:8]


def fetch(repo: Repository, remote: str, *, options: dict | None = None, workers: int = 16,
          progress: Progress | None = None) -> TransferStats:
    """Copy the remote's branches, tags and pull requests; set ``refs/remotes/<remote>/<branch>``."""
    other = Repository.open(remote_url(repo, remote), options)
    try:
        refs = _ref_updates_for(other, ("refs/heads/", "refs/tags/", "refs/pulls/"))
        stats = copy_closure(other.storage, repo.storage, refs.values(), workers=workers, progress=progress)
        name = _remote_name(repo, remote)
        for key, value in sorted(refs.items()):
            if key.startswith("refs/heads/"):
                local = f"refs/remotes/{name}/{key.removeprefix('refs/heads/')}"
            elif key.startswith("refs/tags/"):
                local = key if repo.refs.get(key) is None else None
            else:  # pull requests: keep the remote's numbering under refs/remotes/<name>/pulls/
                local = f"refs/remotes/{name}/pulls/{key.removeprefix('refs/pulls/')}"
            if local is None:
                continue
            current = repo.refs.get(local)
            if current != value:
                repo.refs.update(local, value, current, operation=f"fetch {remote}")
            stats.refs[local] = value
        return stats
    finally:
        other.close()


def push(repo: Repository, remote: str, branch: str | None = None, *, remote_branch: str | None = None,
         force: bool = False, options: dict | None = None, workers: int = 16,
         progress: Progress | None = None) -> TransferStats:
    """Send ``branch`` to the remote and move its branch by compare-and-swap.

    Refuses a non-fast-forward update unless ``force``. Every object sent is verified against
    its name as by any transfer (:func:`copy_closure`; arrays in full: digests, decoding, array
    hash) before it becomes visible at the remote; a refused object raises CorruptObject and the
    remote's branch does not move.
    """
    branch = branch or repo.default_branch
    remote_branch = remote_branch or branch
    head = repo.head(branch)
    if head is None:
        raise InvalidInput(f"branch {branch!r} has no commits to push")
    other = Repository.open(remote_url(repo, remote), options)
    try:
        key = branch_key(remote_branch)
        current, token = other.refs.read(key)  # the swap below is made against this read
        if current is not None and not force and current != head:
            if not repo.objects.has_object(current) or not is_ancestor(repo.objects, current, head):
                raise RefConflict(
                    f"push rejected: {remote}/{remote_branch} has commits that {branch} lacks; pull first "
                    "(or push with force)"
                )
        stats = copy_closure(repo.storage, other.storage, [head], workers=workers, progress=progress)
        if current != head:
            other.refs.update(key, head, current, token=token,
                              operation=f"push {branch}" + (" --force" if force else ""))
        stats.refs[key] = head
        if remote in repo.remotes():
            tracking = f"refs/remotes/{remote}/{remote_branch}"
            repo.refs.update(tracking, head, repo.refs.get(tracking), operation=f"push {remote}")
        return stats
    finally:
        other.close()


def pull(repo: Repository, remote: str, branch: str | None = None, *, remote_branch: str | None = None,
         policy: str = "fail", options: dict | None = None, workers: int = 16,
         progress: Progress | None = None) -> tuple[TransferStats, MergeResult]:
    """Fetch, then merge ``remote/remote_branch`` into ``branch`` (fast-forward when possible)."""
    branch = branch or repo.default_branch
    remote_branch = remote_branch or branch
    stats = fetch(repo, remote, options=options, workers=workers, progress=progress)
    tracking = f"refs/remotes/{_remote_name(repo, remote)}/{remote_branch}"
    if repo.refs.get(tracking) is None:
        raise InvalidInput(f"remote {remote!r} has no branch {remote_branch!r}")
    result = repo.merge(tracking, into=branch, policy=policy,  # type: ignore[arg-type]
                        message=f"Merge {remote}/{remote_branch} into {branch}")
    return stats, result
