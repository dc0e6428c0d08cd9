"""Reading an item's raw data back, verified against its BLAKE3 hash.

Raw data lives either in place (``uri``, a ``file://`` URL) or in the repository
(``stored``); a manifest (several tilt images) lists its files. No Fourier layout
is involved in this module.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import unquote, urlparse

from ..graph import Item, RawData, Repository
from ..store import CorruptObject, InvalidInput, hash_file

__all__ = ["raw_paths", "uri_path", "verify_raw"]


def uri_path(uri: str | None) -> Path:
    """Local path of a ``file://`` uri (or plain path)."""
    if not uri:
        raise InvalidInput("raw data has no uri")
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path))
    raise InvalidInput(f"raw data uri {uri!r} is not a local file")


def raw_paths(repo: Repository, item: Item) -> list[Path]:
    """The file(s) holding an item's raw data in stack order: one stack, or the manifest's tilt images."""
    if item.raw.format == "manifest":
        manifest = json.loads(repo.objects.get_blob(item.raw.hash))
        return [uri_path(f["uri"]) for f in manifest["files"]]
    return [uri_path(item.raw.uri)]


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
