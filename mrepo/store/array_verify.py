"""Verifying an array received from someone else, in bounded memory.

A Zarr v3 array arrives as a ``zarr.json`` (shape, dtype, chunk shape, array hash and one
digest per chunk file) and its chunk files. The ``zarr.json`` is checked first by
:func:`mrepo.store.integrity.check_array_metadata` (canonical form, the whole chunk grid,
declared size within the receiver's limit); then :func:`verify_array` checks that

- every chunk file matches its digest, and its zstd frame declares exactly the chunk's
  size before anything is decompressed (a 30 KB upload cannot become 1 GiB of memory);
- the array hash, computed slab by slab along axis 0 in C order: memory holds one slab
  (chunk rows x the full trailing axes) and one chunk, never the whole array.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Container

import blake3
import numpy as np
from numcodecs import Zstd

from . import zarr_codec
from .errors import CorruptObject
from .hashing import array_header

#: Largest slab (chunk rows x trailing axes) verification holds in memory.
MAX_SLAB_BYTES = 512 << 20
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def zstd_content_size(data: bytes) -> int | None:
    """Frame content size declared in a zstd frame header (RFC 8878 §3.1.1), None if absent/unreadable."""
    if len(data) < 6 or data[:4] != _ZSTD_MAGIC:
        return None
    fhd = data[4]
    fcs_flag, single, dict_flag = fhd >> 6, (fhd >> 5) & 1, fhd & 3
    pos = 5 + (0 if single else 1) + (0, 1, 2, 4)[dict_flag]
    size = (1 if single else 0, 2, 4, 8)[fcs_flag]
    if size == 0 or len(data) < pos + size:
        return None
    value = int.from_bytes(data[pos:pos + size], "little")
    return value + 256 if size == 2 else value


def chunk_nbytes(meta: zarr_codec.ArrayMeta) -> int:
    shape = meta.chunks if meta.shape else ()
    return math.prod(shape) * np.dtype(meta.dtype).itemsize


def decode_chunk_bounded(meta: zarr_codec.ArrayMeta, data: bytes, where: str) -> np.ndarray:
    """Decode one chunk after checking that it declares exactly the chunk's size (no decompression bomb)."""
    expected = chunk_nbytes(meta)
    if meta.zstd:
        declared = zstd_content_size(data)
        if declared != expected:
            raise CorruptObject(f"{where}: zstd frame declares {declared} bytes, the chunk holds {expected}")
        try:
            raw = Zstd().decode(data)
        except Exception as exc:  # noqa: BLE001 - a damaged frame may raise anything
            raise CorruptObject(f"{where}: chunk does not decompress ({type(exc).__name__})") from None
    else:
        raw = data
    if len(raw) != expected:
        raise CorruptObject(f"{where}: chunk holds {len(raw)} bytes, expected {expected}")
    return np.frombuffer(raw, dtype=meta.dtype).reshape(meta.chunks if meta.shape else ())


def check_slab_size(h: str, meta: zarr_codec.ArrayMeta, limit: int = MAX_SLAB_BYTES) -> None:
    """CorruptObject when verifying the array would hold more than ``limit`` bytes at once."""
    if meta.shape:
        slab = min(meta.chunks[0], meta.shape[0]) * math.prod(meta.shape[1:]) * np.dtype(meta.dtype).itemsize
        if slab > limit:
            raise CorruptObject(f"array {h}: chunking {list(meta.chunks)} needs {slab} bytes per slab to verify "
                                f"(limit {limit})")


def check_chunk(meta: zarr_codec.ArrayMeta, key: str, data: bytes, where: str) -> None:
    """A chunk file against the digest its ``zarr.json`` declares (CorruptObject otherwise)."""
    expected = meta.chunk_digests.get(key)
    if expected is None:
        raise CorruptObject(f"{where}: unexpected chunk file {key}")
    if zarr_codec.chunk_digest(data) != expected:
        raise CorruptObject(f"{where}: chunk {key} does not match its digest")


def verify_array(h: str, meta: zarr_codec.ArrayMeta, get_chunk: Callable[[str], bytes], *,
                 digests_checked: Container[str] = ()) -> None:
    """Recompute array ``h`` from its chunks (``get_chunk(key)`` -> stored bytes), slab by slab.

    Checks every chunk's digest (except the keys in ``digests_checked``: bytes the caller already
    checked with :func:`check_chunk` and holds unchanged) and declared size; raises CorruptObject
    on any mismatch.
    """
    where = f"array {h}"
    hasher = blake3.blake3(array_header(np.dtype(meta.dtype), meta.shape))

    def block(key: str) -> np.ndarray:
        data = get_chunk(key)
        if key not in digests_checked:
            check_chunk(meta, key, data, where)
        return decode_chunk_bounded(meta, data, f"{where} chunk {key}")

    if not meta.shape:
        hasher.update(block("c").tobytes())
    elif math.prod(meta.shape):
        c0, s0 = meta.chunks[0], meta.shape[0]
        rest_grid = [range(math.ceil(s / c)) for s, c in zip(meta.shape[1:], meta.chunks[1:])]
        for i0 in range(math.ceil(s0 / c0)):
            rows = min(c0, s0 - i0 * c0)
            slab = np.empty((rows, *meta.shape[1:]), dtype=meta.dtype)
            for rest in itertools.product(*rest_grid):
                index = (i0, *rest)
                sl = tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(rest, meta.chunks[1:], meta.shape[1:]))
                b = block(zarr_codec.chunk_key(index))
                _check_padding(b, rows, sl, meta.chunks, f"{where} chunk {zarr_codec.chunk_key(index)}")
                slab[(slice(0, rows), *sl)] = b[tuple(slice(0, x.stop - x.start) for x in (slice(0, rows), *sl))]
            hasher.update(memoryview(np.ascontiguousarray(slab)).cast("B"))
    if hasher.hexdigest() != h:
        raise CorruptObject(f"{where}: content does not match its hash")


def _check_padding(block: np.ndarray, rows: int, sl: tuple[slice, ...], chunks: tuple[int, ...], where: str) -> None:
    """Edge chunks are padded with zeros (the fill value): anything else is refused."""
    valid = (rows, *(x.stop - x.start for x in sl))
    for axis, v in enumerate(valid):
        if v < chunks[axis] and block[(slice(None),) * axis + (slice(v, None),)].any():
            raise CorruptObject(f"{where}: padding beyond the array edge is not zero")
