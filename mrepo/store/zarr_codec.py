"""Encoding and decoding of immutable Zarr v3 arrays, written without zarr-python's async stack.

Each array lives in its own folder ``arrays/<hash>/`` as a plain Zarr v3 array:
``zarr.json`` (codecs ``bytes`` little-endian + ``zstd``; regular chunk grid; default
chunk keys ``c/i/j/k``; attribute ``mrepo.hash``) and its chunk files. Any Zarr v3
reader (zarr-python, napari through fsspec) opens it. Chunks are written first and
``zarr.json`` last, so an array is complete exactly when its ``zarr.json`` exists.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass

import blake3
import numpy as np
from numcodecs import Zstd

from .errors import CorruptObject, InvalidInput
from .hashing import as_canonical_array, canonical_dtype

#: Uncompressed bytes per chunk the automatic chunking aims below.
TARGET_CHUNK_BYTES = 4 << 20
ZSTD_LEVEL = 1
#: zstd is used for an array only when it saves at least this fraction (:func:`worth_compressing`).
MIN_COMPRESSION_GAIN = 0.10

_ZARR_DTYPES = {
    "|b1": "bool", "|i1": "int8", "|u1": "uint8", "<i2": "int16", "<u2": "uint16", "<i4": "int32",
    "<u4": "uint32", "<i8": "int64", "<u8": "uint64", "<f2": "float16", "<f4": "float32",
    "<f8": "float64", "<c8": "complex64", "<c16": "complex128",
}
_NUMPY_DTYPES = {v: k for k, v in _ZARR_DTYPES.items()}


@dataclass(frozen=True)
class ArrayMeta:
    """What ``zarr.json`` says about an array."""

    shape: tuple[int, ...]
    dtype: str  # canonical little-endian numpy dtype string
    chunks: tuple[int, ...]
    hash: str | None
    zstd: bool
    chunk_digests: dict[str, str]

    @property
    def nbytes(self) -> int:
        """Bytes of the decoded array (shape x item size)."""
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize


def auto_chunks(shape: tuple[int, ...], itemsize: int, target: int = TARGET_CHUNK_BYTES) -> tuple[int, ...]:
    """Chunk shape: halve the largest dimension until a chunk is at most ``target`` bytes."""
    chunks = [max(1, s) for s in shape]
    while math.prod(chunks) * itemsize > target and max(chunks) > 1:
        i = int(np.argmax(chunks))
        chunks[i] = (chunks[i] + 1) // 2
    return tuple(chunks)


def _fill_value(dtype: str) -> object:
    if dtype == "|b1":
        return False
    if dtype in ("<c8", "<c16"):
        return [0.0, 0.0]
    if dtype.startswith(("<f", "|f")):
        return 0.0
    return 0


def chunk_digest(data: bytes) -> str:
    """Integrity digest of one stored chunk file (BLAKE3 of its encoded bytes)."""
    return blake3.blake3(data).hexdigest()


def metadata_document(arr: np.ndarray, chunks: tuple[int, ...], array_hash: str,
                      chunk_digests: dict[str, str], *, compressed: bool = True) -> bytes:
    """The ``zarr.json`` of an array; ``chunk_digests`` (chunk key -> digest) let ``verify``
    detect any changed byte of any chunk file, whatever the codec. ``compressed``: codecs
    ``bytes`` + ``zstd`` (default) or ``bytes`` alone (see :func:`worth_compressing`)."""
    dt = canonical_dtype(arr.dtype)
    doc = {
        "zarr_format": 3,
        "node_type": "array",
        "shape": list(arr.shape),
        "data_type": _ZARR_DTYPES[dt],
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunks)}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": _fill_value(dt),
        "codecs": [
            {"name": "bytes", "configuration": {"endian": "little"}},
            {"name": "zstd", "configuration": {"level": ZSTD_LEVEL, "checksum": False}},
        ][:2 if compressed else 1],
        "attributes": {"mrepo": {"hash": array_hash, "chunks": dict(sorted(chunk_digests.items()))}},
    }
    if arr.ndim == 0:
        doc["codecs"][0] = {"name": "bytes", "configuration": {"endian": "little"}}
    return json.dumps(doc, indent=2).encode()


def chunk_key(index: tuple[int, ...]) -> str:
    """Default Zarr v3 chunk key (``c/0/1/2``; ``c`` for a 0-d array)."""
    return "/".join(["c", *map(str, index)])


def chunk_grid(shape: tuple[int, ...], chunks: tuple[int, ...]) -> Iterator[tuple[int, ...]]:
    return itertools.product(*(range(math.ceil(s / c)) if s else range(0) for s, c in zip(shape, chunks)))


def worth_compressing(arr: np.ndarray, chunks: tuple[int, ...]) -> bool:
    """True when zstd saves at least :data:`MIN_COMPRESSION_GAIN` on the array's first chunk.

    Noisy float data (half-maps, particle coordinates) barely compresses (about 8 %) but costs a
    full zstd decode on every read and every received copy; such arrays are stored as plain
    little-endian bytes. Deterministic for a given array and chunking."""
    for _, block in _blocks(as_canonical_array(arr), chunks):
        raw = block.tobytes()
        return len(Zstd(level=ZSTD_LEVEL).encode(raw)) <= (1 - MIN_COMPRESSION_GAIN) * len(raw)
    return True


def _blocks(arr: np.ndarray, chunks: tuple[int, ...]) -> Iterator[tuple[str, np.ndarray]]:
    """(chunk key, C-contiguous block) for every chunk; edge chunks padded with the fill value."""
    if arr.ndim == 0:
        yield "c", arr
        return
    for index in chunk_grid(arr.shape, chunks):
        sl = tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(index, chunks, arr.shape))
        block = arr[sl]
        if block.shape != chunks:
            padded = np.zeros(chunks, dtype=arr.dtype)
            padded[tuple(slice(0, b) for b in block.shape)] = block
            block = padded
        yield chunk_key(index), np.asarray(block, order="C")


def encode_chunks(arr: np.ndarray, chunks: tuple[int, ...], *, compress: bool = True
                  ) -> Iterator[tuple[str, bytes]]:
    """(chunk key, encoded bytes) for every chunk; edge chunks padded with the fill value."""
    codec = Zstd(level=ZSTD_LEVEL)
    for key, block in _blocks(as_canonical_array(arr), chunks):
        raw = block.tobytes()
        yield key, codec.encode(raw) if compress else raw


def parse_metadata(data: bytes, where: str) -> ArrayMeta:
    """Parse a ``zarr.json`` written by any Zarr v3 writer using bytes(+zstd) codecs."""
    try:
        doc = json.loads(data)
        shape = tuple(int(s) for s in doc["shape"])
        dtype = _NUMPY_DTYPES[doc["data_type"]]
        chunks = tuple(int(c) for c in doc["chunk_grid"]["configuration"]["chunk_shape"])
        names = [c["name"] for c in doc["codecs"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptObject(f"{where}: unreadable zarr.json ({exc})") from None
    if names not in (["bytes"], ["bytes", "zstd"]):
        raise CorruptObject(f"{where}: unsupported codecs {names}")
    info = doc.get("attributes", {}).get("mrepo", {})
    return ArrayMeta(shape, dtype, chunks, info.get("hash"), names == ["bytes", "zstd"], dict(info.get("chunks", {})))


def decode_chunk(meta: ArrayMeta, data: bytes | None, where: str) -> np.ndarray:
    """One chunk as an array of the full chunk shape (``None``: missing chunk, fill value)."""
    shape = meta.chunks if meta.shape else ()
    if data is None:
        return np.zeros(shape, dtype=meta.dtype)
    raw = Zstd().decode(data) if meta.zstd else data
    expected = math.prod(shape) * np.dtype(meta.dtype).itemsize
    if len(raw) != expected:
        raise CorruptObject(f"{where}: chunk holds {len(raw)} bytes, expected {expected}")
    return np.frombuffer(raw, dtype=meta.dtype).reshape(shape)


def assemble(meta: ArrayMeta, blocks: dict[str, np.ndarray]) -> np.ndarray:
    """The whole array from decoded chunks keyed by chunk key."""
    if not meta.shape:
        return blocks["c"].reshape(()).copy()
    out = np.empty(meta.shape, dtype=meta.dtype)
    for index in chunk_grid(meta.shape, meta.chunks):
        sl = tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(index, meta.chunks, meta.shape))
        block = blocks[chunk_key(index)]
        out[sl] = block[tuple(slice(0, s.stop - s.start) for s in sl)]
    return out


def check_finite(arr: np.ndarray, what: str) -> None:
    """Raise InvalidInput when a float/complex array holds NaN or Inf."""
    if arr.dtype.kind in "fc" and arr.size and not np.isfinite(arr).all():
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise InvalidInput(f"{what} contains {bad} NaN or Inf value(s)")
