"""Reading an item's raw data back, verified against its BLAKE3 hash.

Raw data lives either in place (``uri``, a ``file://`` URL) or in the repository
(``stored``); a manifest (several tilt images) lists its files. No Fourier layout
is involved in this module.
"""

from __future__ import annotations

import contextvars
import functools
import json
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

from ..graph import DataSource, Item, RawData, Repository
from ..store import CorruptObject, InvalidInput, hash_file

__all__ = ["check_reachable", "exports_raw_data", "raw_export_into", "raw_paths", "tilt_movie_paths", "uri_path",
           "verify_raw"]

#: Folder (below an export's output) where raw data stored only in the repository is written.
RAW_EXPORT_DIR = "raw"


def uri_path(uri: str | None) -> Path:
    """Local path of a ``file://`` uri (or plain path)."""
    if not uri:
        raise InvalidInput("raw data has no uri")
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path))
    raise InvalidInput(f"raw data uri {uri!r} is not a local file")


def raw_sections(repo: Repository, item: Item) -> list[int | None]:
    """Per entry of :func:`raw_paths`: the 0-based image within that file a manifest names (RELION's
    ``k@stack`` is ``k - 1``), or None for a whole file (one image, or the item's whole stack)."""
    if item.raw.format == "manifest":
        return [f.get("section") for f in json.loads(repo.objects.get_blob(item.raw.hash))["files"]]
    return [None]


def raw_paths(repo: Repository, item: Item) -> list[Path]:
    """The file(s) holding an item's raw data in stack order: one stack, or the manifest's tilt images.

    Inside :func:`raw_export_into` (an export), raw data held in the repository is written out
    and its copy returned, so an export never points at a file that only was there at import."""
    exporter = _EXPORT.get()
    if exporter is not None:
        return exporter.paths(item)
    if item.raw.format == "manifest":
        manifest = json.loads(repo.objects.get_blob(item.raw.hash))
        return [uri_path(f["uri"]) for f in manifest["files"]]
    return [uri_path(item.raw.uri)]


def check_reachable(repo: Repository, raw: RawData, what: str) -> None:
    """Refuse (InvalidInput, naming ``what``) raw data with a file neither stored nor at its uri."""
    for f in _raw_files(repo, raw):
        if repo.objects.has_object(f["hash"]):
            continue
        path = uri_path(f.get("uri")) if f.get("uri") else None
        if path is None or not path.is_file():
            raise InvalidInput(f"{what} lives neither in the repository nor at {path or 'a known path'} (imported "
                               "in place); restore the file or re-import with --copy")


def tilt_movie_paths(repo: Repository, item: Item) -> list[Path]:
    """The files of an item's raw tilt movies (:attr:`Item.tilt_movies`, one MRC movie per tilt in stack
    order); [] without movies. Inside :func:`raw_export_into`, movies held in the repository are written out
    as :func:`raw_paths` does."""
    if item.tilt_movies is None:
        return []
    exporter = _EXPORT.get()
    if exporter is not None:
        return exporter.raw_paths(item.tilt_movies, item.name)
    return [uri_path(f["uri"]) for f in _raw_files(repo, item.tilt_movies)]


def verify_raw(repo: Repository, raw: RawData) -> None:
    """Check in-place raw data against its hash (stored blobs are checked when read)."""
    if raw.format == "manifest":
        for f in json.loads(repo.objects.get_blob(raw.hash))["files"]:
            verify_raw(repo, RawData(f["hash"], f["size"], f.get("format", "mrc"), f["uri"]))
        return
    path = uri_path(raw.uri)
    if not path.is_file():
        raise InvalidInput(f"raw data {path} is missing")
    if hash_file(path) != raw.hash:
        raise CorruptObject(f"raw data {path} changed: its BLAKE3 hash no longer matches {raw.hash[:12]}")


# ----------------------------------------------------------------------------- exports


def _raw_files(repo: Repository, raw: RawData) -> list[dict[str, Any]]:
    """``{hash, uri, ...}`` of each file of ``raw`` in stack order."""
    if raw.format == "manifest":
        return list(json.loads(repo.objects.get_blob(raw.hash))["files"])
    return [raw.to_body()]


class _RawExport:
    """Where each raw file of an export comes from: a copy written from the repository under
    ``<out>/raw/<hash[:16]>/<file name>`` when the repository holds its bytes, else the file in place."""

    def __init__(self, repo: Repository, out: Path):
        self.repo = repo
        self.out = out
        self._done: dict[str, Path] = {}

    def check(self, item: Item) -> None:
        """Refuse (InvalidInput) an item whose raw data is neither stored nor at its uri."""
        check_reachable(self.repo, item.raw, f"item {item.name!r}: its raw data")

    def paths(self, item: Item) -> list[Path]:
        """Files of the item's raw data for the export."""
        return self.raw_paths(item.raw, item.name)

    def raw_paths(self, raw: RawData, item_name: str) -> list[Path]:
        """Files of ``raw`` (the raw data or raw tilt movies of item ``item_name``) for the export."""
        out: list[Path] = []
        for f in _raw_files(self.repo, raw):
            h = f["hash"]
            if h in self._done:
                out.append(self._done[h])
            elif self.repo.objects.has_object(h):
                name = uri_path(f["uri"]).name if f.get("uri") else f"{item_name}.{f.get('format', 'mrc')}"
                dest = self.out / RAW_EXPORT_DIR / h[:16] / name
                if not (dest.is_file() and dest.stat().st_size == int(f["size"])):
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.tmp")
                    tmp.write_bytes(self.repo.objects.get_blob(h))
                    os.replace(tmp, dest)
                self._done[h] = dest
                out.append(dest)
            else:
                path = uri_path(f.get("uri")) if f.get("uri") else None
                if path is None or not path.is_file():
                    raise InvalidInput(
                        f"item {item_name!r}: its raw file {path or f['hash'][:12]} lives neither in the repository "
                        "nor at its path (imported in place); restore the file or re-import with --copy")
                out.append(path)
        return out


_EXPORT: contextvars.ContextVar[_RawExport | None] = contextvars.ContextVar("mrepo_raw_export", default=None)


@contextmanager
def raw_export_into(repo: Repository, out: Path, items: list[Item] | None = None) -> Iterator[None]:
    """Within the block, :func:`raw_paths` writes repository-held raw data under ``out/raw/``.
    ``items`` are checked first, so an export that cannot reach some raw data writes nothing."""
    exporter = _RawExport(repo, Path(out))
    for item in items or []:
        exporter.check(item)
    token = _EXPORT.set(exporter)
    try:
        yield
    finally:
        _EXPORT.reset(token)


F = TypeVar("F", bound=Callable[..., Any])


def exports_raw_data(fn: F) -> F:
    """Decorator of ``export(repo, rev, out, ...)`` functions: runs them inside
    :func:`raw_export_into` with every item of the population at ``rev`` checked first."""

    @functools.wraps(fn)
    def wrapper(repo: Repository, rev: str, out: str | Path, *args: Any, **kwargs: Any) -> Any:
        pop = repo.population(rev)
        items = [Item.load(repo.objects, h) for s in pop.sources.values()
                 for h in DataSource.load(repo.objects, s).items.values()]
        with raw_export_into(repo, Path(out), items):
            return fn(repo, rev, out, *args, **kwargs)

    return wrapper  # type: ignore[return-value]
