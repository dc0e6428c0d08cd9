"""Transfers between repositories: clone, fetch, push, pull.

Only objects the destination lacks are copied, several in parallel, arrays as
their stored Zarr files (no re-encoding). Write order keeps the invariant that a
record present in a repository has its whole closure there: arrays and blobs
first, then records from the leaves up (a record is written only after every
record it references), then the ref by compare-and-swap. An interrupted transfer,
run again, finds the complete objects and copies only what is still missing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..store import InvalidInput, ObjectNotFound, RefConflict, Storage, branch_key, references
from ..store.objects import array_prefix, object_key
from .history import is_ancestor
from .repository import MergeResult, Repository

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


def _missing_closure(src: Storage, dst: Storage, roots: Iterable[str], pool: ThreadPoolExecutor
                     ) -> tuple[dict[str, list[str]], set[str], set[str]]:
    """Records missing at ``dst`` (hash -> missing child records), missing arrays and blobs.

    A record already at ``dst`` is not descended into: its closure is there by invariant.
    """
    records: dict[str, list[str]] = {}
    arrays: set[str] = set()
    blobs: set[str] = set()
    frontier = [h for h in dict.fromkeys(roots)]
    seen: set[str] = set(frontier)
    while frontier:
        # Records and arrays found present are freshened (see ObjectStore.freshen): gc keeps young
        # objects and their closures, so nothing this transfer relies on can be swept under it.
        present = list(pool.map(lambda h: dst.objects.freshen("record", h), frontier))
        missing = [h for h, p in zip(frontier, present) if not p]
        bodies = list(pool.map(src.objects.get_record, missing))
        next_records: list[str] = []
        checks: list[tuple[str, str]] = []
        for h, body in zip(missing, bodies):
            children = []
            for kind, child in references(body):
                if kind == "record":
                    children.append(child)
                    if child not in seen:
                        seen.add(child)
                        next_records.append(child)
                elif child not in seen:
                    seen.add(child)
                    checks.append((kind, child))
            records[h] = children
        has = list(pool.map(lambda kc: dst.objects.freshen("array", kc[1]) if kc[0] == "array"
                            else dst.objects.has_object(kc[1]), checks))
        for (kind, child), ok in zip(checks, has):
            if not ok:
                (arrays if kind == "array" else blobs).add(child)
        frontier = next_records
    # Only keep edges to records that are themselves missing.
    for h, children in records.items():
        records[h] = [c for c in children if c in records]
    return records, arrays, blobs


def copy_closure(src: Storage, dst: Storage, roots: Iterable[str], *, workers: int = 16,
                 progress: Progress | None = None) -> TransferStats:
    """Copy every object reachable from ``roots`` (record hashes) that ``dst`` lacks."""
    stats = TransferStats()
    with ThreadPoolExecutor(workers, thread_name_prefix="mrepo-transfer") as pool:
        records, arrays, blobs = _missing_closure(src, dst, roots, pool)

        # Arrays: chunk files first, zarr.json last (per array).
        array_files: list[tuple[str, list[str]]] = []
        for h in sorted(arrays):
            keys = [e.key for e in src.backend.list(array_prefix(h))]
            meta = array_prefix(h) + "zarr.json"
            if meta not in keys:
                raise ObjectNotFound(f"array {h} is missing or incomplete in {src.url}")
            array_files.append((h, sorted(k for k in keys if k != meta)))
        total = sum(len(ks) + 1 for _, ks in array_files) + len(blobs) + len(records)
        done = 0

        def tick(n: int = 1) -> None:
            nonlocal done
            done += n
            if progress:
                progress("objects", done, total)

        def copy_key(key: str) -> int:
            data = src.backend.get(key)
            dst.backend.put(key, data)
            return len(data)

        chunk_keys = [k for _, ks in array_files for k in ks] + [object_key(b) for b in sorted(blobs)]
        for key, n in zip(chunk_keys, pool.map(copy_key, chunk_keys)):
            stats.bytes += n
            if key.startswith("arrays/"):
                stats.array_bytes += n
            tick()
        metas = [array_prefix(h) + "zarr.json" for h, _ in array_files]
        for n in pool.map(copy_key, metas):
            stats.bytes += n
            tick()
        stats.arrays, stats.blobs = len(array_files), len(blobs)

        # Records by height: leaves first.
        height: dict[str, int] = {}

        def h_of(h: str) -> int:
            stack = [(h, False)]
            while stack:
                node, expanded = stack.pop()
                if node in height:
                    continue
                kids = records[node]
                if expanded or not kids:
                    height[node] = 1 + max((height[c] for c in kids), default=-1)
                else:
                    stack.append((node, True))
                    stack.extend((c, False) for c in kids if c not in height)
            return height[h]

        levels: dict[int, list[str]] = {}
        for h in records:
            levels.setdefault(h_of(h), []).append(h)
        for level in sorted(levels):
            keys = [object_key(h) for h in levels[level]]
            for n in pool.map(copy_key, keys):
                stats.bytes += n
                tick()
        stats.records = len(records)
    return stats


# ----------------------------------------------------------------------------- high-level operations


def _ref_updates_for(src: Repository, prefixes: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for prefix in prefixes:
        out.update(dict(src.refs.list(prefix)))
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
        stats = copy_closure(repo.storage, other.storage, [head], workers=workers, progress=progress)
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
