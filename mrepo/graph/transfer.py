"""Transfers between repositories: clone, fetch, push, pull.

Only objects the destination lacks (or holds damaged) are copied, several in
parallel, arrays as their stored Zarr files (no re-encoding). Nothing received is
trusted: every object is checked against its name while it streams through, and
every ref name against the receiving side's rules, before it becomes visible. Write order keeps the invariant that a
record present in a repository has its whole closure there: arrays and blobs
first, then records from the leaves up (a record is written only after every
record it references), then the ref by compare-and-swap. An interrupted transfer,
run again, finds the complete objects and copies only what is still missing.
"""

from __future__ import annotations

import hashlib
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
from ..store.integrity import ArrayReceiver, check_array_metadata, check_object_bytes
from ..store.names import check_shared_ref_key
from ..store.objects import array_prefix, object_key
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


def _record_sound(dst: Storage, h: str) -> bool:
    """The bytes of record ``h`` at ``dst`` still hash to ``h``."""
    return check_object_bytes(h, dst.backend.get(object_key(h))) == "record"


def _array_sound(dst: Storage, h: str) -> bool:
    """Array ``h`` at ``dst`` has a canonical ``zarr.json`` naming it and every chunk file it lists.
    Chunk contents are not reread here: ``verify`` does that, and ``verify --repair REMOTE``
    replaces what it finds damaged."""
    prefix = array_prefix(h)
    meta = check_array_metadata(h, dst.backend.get(prefix + "zarr.json"))
    listed = {e.key[len(prefix):] for e in dst.backend.list(prefix)}
    return set(meta.chunk_digests) <= listed


#: A present blob up to this size is reread and rehashed by a transfer; larger ones (raw data) are
#: left to ``verify`` / ``verify --repair``.
SMALL_BLOB = 4 << 20


def _blob_sound(dst: Storage, h: str) -> bool:
    """Blob ``h`` at ``dst``, when small, still hashes to its name (a large one is taken as is)."""
    key = object_key(h)
    return dst.backend.get_size(key) > SMALL_BLOB or check_object_bytes(h, dst.backend.get(key)) == "blob"


_SOUND: dict[str, Callable[[Storage, str], bool]] = {"record": _record_sound, "array": _array_sound,
                                                     "blob": _blob_sound}


def _intact(dst: Storage, kind: str, h: str) -> bool:
    """Object ``h`` of ``kind`` (record, array, blob) is present at ``dst`` (freshened for gc) and
    sound by the kind's check; a server (``checks_writes``) verified it on upload and checks its
    own store, so there presence is enough."""
    if not dst.objects.freshen(kind, h):
        return False
    if dst.backend.checks_writes:
        return True
    try:
        return _SOUND[kind](dst, h)
    except (ObjectNotFound, CorruptObject):
        return False


def _receive_record(src: Storage, h: str) -> tuple[bytes, Any]:
    """Bytes and body of record ``h`` read from ``src``, checked (hash, canonical form, schema)."""
    data = src.backend.get(object_key(h))
    return data, check_record_bytes(h, data)[1]


def _missing_closure(src: Storage, dst: Storage, roots: Iterable[str], pool: ThreadPoolExecutor
                     ) -> tuple[dict[str, bytes], dict[str, list[str]], set[str], set[str]]:
    """Records ``dst`` lacks (or holds damaged) with their verified bytes, the edges between
    them (hash -> missing child records), and the arrays and blobs ``dst`` lacks or holds damaged.

    A record intact at ``dst`` is not descended into: its closure is there by invariant.
    """
    records: dict[str, bytes] = {}
    children: dict[str, list[str]] = {}
    arrays: set[str] = set()
    blobs: set[str] = set()
    frontier = [check_hash(h, "root") for h in dict.fromkeys(roots)]
    seen: set[str] = set(frontier)
    while frontier:
        # Records and arrays found present are freshened (see ObjectStore.freshen): gc keeps young
        # objects and their closures, so nothing this transfer relies on can be swept under it.
        present = list(pool.map(lambda h: _intact(dst, "record", h), frontier))
        missing = [h for h, p in zip(frontier, present) if not p]
        received = list(pool.map(lambda h: _receive_record(src, h), missing))
        next_records: list[str] = []
        checks: list[tuple[str, str]] = []
        for h, (data, body) in zip(missing, received):
            records[h] = data
            children[h], new_records, new_data = split_references(body, seen)
            next_records.extend(new_records)
            checks.extend(new_data)
        has = list(pool.map(lambda kc: _intact(dst, *kc), checks))
        for (kind, child), ok in zip(checks, has):
            if not ok:
                (arrays if kind == "array" else blobs).add(child)
        frontier = next_records
    # Only keep edges to records that are themselves missing.
    for h, kids in children.items():
        children[h] = [c for c in kids if c in records]
    return records, children, arrays, blobs


class _ArrayCopy:
    """One array on its way from ``src`` to ``dst``: chunks are verified as they pass and written
    under their final keys (invisible until ``zarr.json``); ``zarr.json`` is written only after
    the whole array hashed to its name."""

    def __init__(self, h: str, metadata: bytes, *, deep: bool = True):
        self.h = h
        self.metadata = metadata
        self.receiver = ArrayReceiver(h, check_array_metadata(h, metadata), deep=deep)
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
                 progress: Progress | None = None, deep_arrays: bool = True) -> TransferStats:
    """Copy every object reachable from ``roots`` (record hashes) that ``dst`` lacks or holds damaged.

    Nothing received is trusted: a record's bytes must hash to its name, be canonical JSON and
    match its kind's schema (:mod:`mrepo.graph.schema`); a blob must hash to its name; an
    array's ``zarr.json`` must be canonical and name it, each chunk must match its digest and
    the assembled array must hash to its name (:mod:`mrepo.store.integrity`), all checked while
    the bytes stream through. An object becomes visible at ``dst`` only after its check; a
    failed check raises CorruptObject (or InvalidRecord) naming the object and ``src``, and no
    record or ref is written. A present object that fails its check is replaced.

    ``deep_arrays=False`` (``push``: the source is the user's own repository, whose arrays were
    checked or computed when they entered it) checks arrays as far as damage goes without
    decoding them: canonical ``zarr.json`` naming the array and every chunk against its digest.
    Whoever fetches from the destination checks the content again, in full.
    """
    from . import batch_transfer  # a server on either side: the batch protocol (few requests, verified)

    if batch_transfer.supports(src, dst):
        return batch_transfer.copy_closure(src, dst, roots, workers=workers, progress=progress)
    try:
        return _copy_closure(src, dst, roots, workers=workers, progress=progress, deep_arrays=deep_arrays)
    except CorruptObject as exc:
        raise type(exc)(f"{exc} (received from {src.url}; refused, nothing referencing it was stored)") from None


def _copy_closure(src: Storage, dst: Storage, roots: Iterable[str], *, workers: int,
                  progress: Progress | None, deep_arrays: bool) -> TransferStats:
    pool = ThreadPoolExecutor(workers, thread_name_prefix="mrepo-transfer")
    try:
        return _copy_with(pool, src, dst, roots, progress, deep_arrays)
    finally:  # on a refused object, stop at once: cancel what has not started
        pool.shutdown(wait=True, cancel_futures=True)


def _copy_with(pool: ThreadPoolExecutor, src: Storage, dst: Storage, roots: Iterable[str],
               progress: Progress | None, deep_arrays: bool = True) -> TransferStats:
    stats = TransferStats()
    records, children, arrays, blobs = _missing_closure(src, dst, roots, pool)

    def start_array(h: str) -> _ArrayCopy:
        try:
            return _ArrayCopy(h, src.backend.get(array_prefix(h) + "zarr.json"), deep=deep_arrays)
        except ObjectNotFound:
            raise ObjectNotFound(f"array {h} is missing or incomplete in {src.url}") from None

    copies = list(pool.map(start_array, sorted(arrays)))
    total = sum(len(c.keys) + 1 for c in copies) + len(blobs) + len(records)
    done = 0

    def tick(n: int = 1) -> None:
        nonlocal done
        done += n
        if progress:
            progress("objects", done, total)

    def copy_blob(h: str) -> int:
        data = src.backend.get(object_key(h))
        if check_object_bytes(h, data) != "blob":
            raise CorruptObject(f"object {h} is a record where a blob is referenced")
        dst.backend.put(object_key(h), data)
        return len(data)

    # Arrays: chunks in grid order (verified and hashed as they pass), zarr.json after the hash.
    tasks = [(c, k) for c in copies for k in c.keys]
    for c in copies:
        if not c.keys:  # an empty array: nothing to wait for
            c.publish(dst)
    for c in copies:
        stats.bytes += len(c.metadata)
        if not c.keys:
            tick()
    try:
        for (n, published) in pool.map(lambda t: t[0].copy_chunk(src, dst, t[1]), tasks):
            stats.bytes += n
            stats.array_bytes += n
            tick()
            if published:
                tick()  # its zarr.json
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)  # nothing still writing before cleaning up
        for c in copies:
            c.discard(dst)
        raise
    for n in pool.map(copy_blob, sorted(blobs)):
        stats.bytes += n
        tick()
    stats.arrays, stats.blobs = len(copies), len(blobs)

    def put_record(h: str) -> int:
        dst.backend.put(object_key(h), records[h])
        return len(records[h])

    # Records by height: leaves first (bytes already received and checked while walking).
    for level in levels(children):
        for n in pool.map(put_record, level):
            stats.bytes += n
            tick()
    stats.records = len(records)
    dst.objects.clear_cache()  # records it held damaged may have been replaced
    return stats


# ----------------------------------------------------------------------------- high-level operations


def _ref_updates_for(src: Repository, prefixes: tuple[str, ...]) -> dict[str, str]:
    """The refs of ``src`` below ``prefixes``, every name checked by the receiving side's rules
    (:func:`mrepo.store.names.check_shared_ref_key`) before anything is copied."""
    out: dict[str, str] = {}
    for prefix in prefixes:
        for key, value in src.refs.list(prefix):
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

    Refuses a non-fast-forward update unless ``force``.
    """
    branch = branch or repo.default_branch
    remote_branch = remote_branch or branch
    head = repo.head(branch)
    if head is None:
        raise InvalidInput(f"branch {branch!r} has no commits to push")
    other = Repository.open(remote_url(repo, remote), options)
    try:
        key = branch_key(remote_branch)
        current = other.refs.get(key)
        if current is not None and not force and current != head:
            if not repo.objects.has_object(current) or not is_ancestor(repo.objects, current, head):
                raise RefConflict(
                    f"push rejected: {remote}/{remote_branch} has commits that {branch} lacks; pull first "
                    "(or push with force)"
                )
        # the source is this repository: arrays checked for damage (digests), not re-decoded
        stats = copy_closure(repo.storage, other.storage, [head], workers=workers, progress=progress,
                             deep_arrays=False)
        if current != head:
            other.refs.update(key, head, current, operation=f"push {branch}" + (" --force" if force else ""))
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
