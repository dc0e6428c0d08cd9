"""``verify`` of raw data referenced in place: every file an item names but the repository
does not hold (imported without ``--copy``) is hashed whole and compared with its key.

An item's identity is the BLAKE3 blob hash of its whole raw file (DESIGN.md: raw data is
hashed whole), so one changed voxel, a truncated file or a missing one is a problem. A
tilt-series manifest counts file by file, and so do a tilt series' raw tilt movies (``tilt_movies``). Files on other hosts (``uri`` not ``file://``)
are reported as not checked.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote, urlparse

from ..store import MrepoError, Storage, hash_file, is_hash

Progress = Callable[[str, int, int], None]


def local_file(uri: str | None) -> Path | None:
    """The local path of a ``file://`` uri or plain path; None for other schemes."""
    if not uri:
        return None
    parsed = urlparse(uri)
    return Path(unquote(parsed.path)) if parsed.scheme in ("", "file") else None


def in_place_files(storage: Storage, records: list[str]) -> dict[str, tuple[str, str | None]]:
    """Raw files that the item records among ``records`` reference in place: file hash -> (item
    name, uri). Unreadable records are skipped (the object checks report them)."""
    found: dict[str, tuple[str, str | None]] = {}
    for h in records:
        try:
            kind, body = storage.objects.get_record_with_kind(h)
        except (MrepoError, ValueError):
            continue
        if kind != "item":
            continue
        files = []
        for raw in (body.get("raw") or {}, body.get("tilt_movies")):  # tilt_movies: a tilt series' raw movies
            if not raw:
                continue
            if raw.get("format") != "manifest":
                files.append(raw)
                continue
            try:
                files.extend(json.loads(storage.objects.get_blob(raw["hash"]))["files"])
            except (MrepoError, ValueError, KeyError):
                continue
        for f in files:
            h_file = f.get("hash")
            if "blob" in f or not is_hash(h_file) or storage.objects.has_object(h_file):
                continue
            found.setdefault(h_file, (str(body.get("name")), f.get("uri")))
    return found


def check_file(h: str, name: str, uri: str | None) -> str | None:
    """None when the file at ``uri`` hashes to ``h``, else a one-line problem."""
    path = local_file(uri)
    if path is None:
        return f"raw data of item {name!r} at {uri!r}: not a local file, not checked"
    if not path.is_file():
        return f"raw data {path} (item {name!r}, referenced in place): missing"
    if hash_file(path) != h:
        return (f"raw data {path} (item {name!r}, referenced in place): changed — its BLAKE3 no longer "
                f"matches the item key {h[:16]}")
    return None


def verify_in_place(records: list[str], *, storage: Storage, workers: int = 4,
                    progress: Progress | None = None) -> tuple[int, list[str]]:
    """(files hashed, problems) for the raw data the item records among ``records`` reference in place."""
    files = sorted(in_place_files(storage, records).items())
    problems: list[str] = []
    with ThreadPoolExecutor(max(1, min(workers, 4))) as pool:
        for i, problem in enumerate(pool.map(lambda kv: check_file(kv[0], *kv[1]), files), 1):
            if problem:
                problems.append(problem)
            if progress:
                progress("raw data", i, len(files))
    return len(files), problems
