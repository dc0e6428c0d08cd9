"""Read an item's raw data (an MRC stack of frames or tilts) from the store or its URI.

Returns (n, y, x) float32 in stack order. The bytes are verified against the item's
BLAKE3 raw-data hash (blob hash, ``mrepo.store.hash_blob``/``hash_file``) before use.
No Fourier layout here.
"""

from __future__ import annotations

import io
from pathlib import Path
from urllib.parse import urlparse

import mrcfile
import numpy as np

from mrepo.graph import Item
from mrepo.store import CorruptObject, InvalidInput, ObjectStore, hash_blob, hash_file

__all__ = ["read_raw"]


def _parse_mrc(data: bytes, what: str) -> np.ndarray:
    try:
        with mrcfile.mrcinterpreter.MrcInterpreter(iostream=io.BytesIO(data), permissive=False) as mrc:
            stack = np.asarray(mrc.data, dtype=np.float32)
    except Exception as exc:  # mrcfile raises ValueError and others on bad headers
        raise InvalidInput(f"{what} is not a readable MRC file: {exc}") from exc
    return stack[None] if stack.ndim == 2 else stack


def read_raw(objects: ObjectStore, item: Item) -> np.ndarray:
    """The item's stack (n, y, x) float32, verified against ``item.raw.hash``."""
    raw = item.raw
    if raw.format.lower() != "mrc":
        raise InvalidInput(f"item {item.name!r}: raw format {raw.format!r} is not supported (only mrc)")
    if raw.stored:
        data = objects.get_blob(raw.hash, verify=True)
    else:
        if not raw.uri:
            raise InvalidInput(f"item {item.name!r}: raw data is neither stored nor has a uri")
        parsed = urlparse(raw.uri)
        path = Path(parsed.path if parsed.scheme == "file" else raw.uri)
        if not path.exists():
            raise InvalidInput(f"item {item.name!r}: raw data file {raw.uri} not found")
        if hash_file(path) != raw.hash:
            raise CorruptObject(f"item {item.name!r}: raw data {raw.uri} does not match its hash {raw.hash}")
        data = path.read_bytes()
        if hash_blob(data) != raw.hash:  # changed between hashing and reading
            raise CorruptObject(f"item {item.name!r}: raw data {raw.uri} changed while reading")
    stack = _parse_mrc(data, f"item {item.name!r} raw data")
    if stack.ndim != 3:
        raise InvalidInput(f"item {item.name!r}: raw data must be a stack (n, y, x), got {stack.shape}")
    return stack
