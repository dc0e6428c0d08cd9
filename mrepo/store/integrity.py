"""Checks of received bytes against their names: nothing from another store is trusted.

A transfer (and the server, on upload) passes every object through these functions
before writing it under its final name:

- records and blobs (:func:`check_object_bytes`): BLAKE3 of the bytes equals the name
  and the bytes carry a known tag; records are parsed strictly
  (:func:`parse_canonical_record`: no duplicate keys, no NaN/Infinity, the bytes are
  exactly the canonical JSON of the parsed body);
- arrays (:func:`check_array_metadata`, :func:`check_slab_size`, :class:`ArrayReceiver`):
  ``zarr.json`` is exactly the document mrepo writes for that shape, dtype and chunking,
  names the array's hash, lists a digest for exactly every chunk of the grid and declares a
  size within the receiver's limit; each chunk's BLAKE3 equals its digest, its zstd frame
  declares exactly one chunk's bytes before anything is decompressed (a 30 KB upload cannot
  become 1 GiB of memory), it decodes to exactly one chunk with zero padding, and the
  assembled array's hash (computed slab by slab along axis 0, in C order) equals the name.
  Chunks are checked as they stream through (one read); memory holds the slabs in flight,
  never the whole array, when they arrive in slab order (:meth:`ArrayReceiver.admit`).

Every failure is a one-line :class:`CorruptObject` (or :class:`InvalidRecord`).
"""

from __future__ import annotations

import json
import math
import re
import threading
from typing import Any

import blake3
import numpy as np
from numcodecs import Zstd

from . import zarr_codec
from .errors import CorruptObject, InvalidInput, InvalidRecord
from .hashing import ALLOWED_DTYPES, BLOB_TAG, RECORD_TAG, array_header, canonical_json, hash_bytes, is_hash

#: Largest array (declared uncompressed bytes) a store accepts from another one.
MAX_ARRAY_BYTES = 16 << 30
#: Largest number of chunks one array may have.
MAX_CHUNKS = 1 << 20
#: Largest slab (chunk rows x the full trailing axes) that verifying an array holds in memory.
MAX_SLAB_BYTES = 512 << 20
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_KIND = re.compile(r"^[a-z][a-z0-9-]{0,63}$")


def check_object_bytes(h: str, data: bytes) -> str:
    """``"record"`` or ``"blob"`` when ``data`` hashes to ``h`` with a known tag; else CorruptObject."""
    if hash_bytes(data) != h:
        raise CorruptObject(f"object {h} is corrupt: its content does not match its hash")
    if data.startswith(RECORD_TAG):
        return "record"
    if data.startswith(BLOB_TAG):
        return "blob"
    raise CorruptObject(f"object {h} is neither a record nor a blob (unknown tag)")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k[:40]!r}")
        out[k] = v
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def parse_canonical_record(data: bytes, h: str = "") -> tuple[str, Any]:
    """(kind, body) of record bytes, refusing anything that is not exactly canonical
    (InvalidRecord): kind ``[a-z][a-z0-9-]*``, UTF-8 JSON without duplicate keys or
    NaN/Infinity whose canonical form is the stored payload byte for byte."""
    where = f"record {h}" if h else "record"
    if not data.startswith(RECORD_TAG):
        raise InvalidRecord(f"{where} does not start with the record tag")
    kind_bytes, sep, payload = data[len(RECORD_TAG):].partition(b"\0")
    kind = kind_bytes.decode("ascii", "replace")
    if not sep or not _KIND.match(kind):
        raise InvalidRecord(f"{where}: invalid record kind {kind[:40]!r}")
    try:
        body = json.loads(payload.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
        canonical = canonical_json(body)
    except (ValueError, InvalidInput, RecursionError) as exc:
        raise InvalidRecord(f"{where} ({kind}) is not canonical JSON: {exc}") from None
    if canonical != payload:
        raise InvalidRecord(f"{where} ({kind}) is not in canonical form (sorted keys, no white space, "
                            "shortest floats)")
    return kind, body


# ----------------------------------------------------------------------------- arrays


def _shape_stub(dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """A zero-stride array with the given dtype and shape (for :func:`zarr_codec.metadata_document`)."""
    return np.broadcast_to(np.zeros((), dtype=dtype), shape)


def check_array_metadata(h: str, data: bytes, *, max_bytes: int = MAX_ARRAY_BYTES) -> zarr_codec.ArrayMeta:
    """Parse and check the ``zarr.json`` of array ``h`` (see module docstring); CorruptObject."""
    where = f"array {h}"
    meta = zarr_codec.parse_metadata(data, where)
    if meta.hash != h:
        raise CorruptObject(f"{where}: zarr.json names hash {str(meta.hash)[:70]!r}")
    if meta.dtype not in ALLOWED_DTYPES:
        raise CorruptObject(f"{where}: dtype {meta.dtype!r} is not allowed")
    if len(meta.chunks) != len(meta.shape) or any(s < 0 for s in meta.shape) or any(c < 1 for c in meta.chunks):
        raise CorruptObject(f"{where}: chunk shape {meta.chunks} does not fit shape {meta.shape}")
    nbytes = meta.nbytes
    if nbytes > max_bytes:
        raise CorruptObject(f"{where}: declares {nbytes} bytes, more than the {max_bytes} accepted")
    if math.prod(meta.chunks) * np.dtype(meta.dtype).itemsize > max(max_bytes, 1):
        raise CorruptObject(f"{where}: chunk shape {meta.chunks} is larger than accepted")
    n_chunks = math.prod(math.ceil(s / c) for s, c in zip(meta.shape, meta.chunks)) if meta.shape else 1
    if n_chunks > MAX_CHUNKS or n_chunks != len(meta.chunk_digests):
        raise CorruptObject(f"{where}: zarr.json lists {len(meta.chunk_digests)} chunk digests for "
                            f"{n_chunks} chunks")
    grid = {zarr_codec.chunk_key(i) for i in zarr_codec.chunk_grid(meta.shape, meta.chunks)} if meta.shape \
        else {"c"}
    if set(meta.chunk_digests) != grid or not all(is_hash(d) for d in meta.chunk_digests.values()):
        raise CorruptObject(f"{where}: zarr.json chunk digests do not name exactly the chunk grid")
    expected = zarr_codec.metadata_document(_shape_stub(meta.dtype, meta.shape), meta.chunks, h,
                                            meta.chunk_digests, compressed=meta.zstd)
    if data != expected:
        raise CorruptObject(f"{where}: zarr.json is not in mrepo's canonical form")
    return meta


def check_slab_size(h: str, meta: zarr_codec.ArrayMeta, limit: int = MAX_SLAB_BYTES) -> None:
    """CorruptObject when verifying array ``h`` would hold more than ``limit`` bytes in one slab."""
    if meta.shape:
        slab = min(meta.chunks[0], meta.shape[0]) * math.prod(meta.shape[1:]) * np.dtype(meta.dtype).itemsize
        if slab > limit:
            raise CorruptObject(f"array {h}: chunking {list(meta.chunks)} needs {slab} bytes per slab to verify "
                                f"(limit {limit})")


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


def chunk_keys(meta: zarr_codec.ArrayMeta) -> list[str]:
    """The chunk keys of an array in grid (C) order: the order in which a stream of its chunks is
    verified in the least memory (:meth:`ArrayReceiver.admit` accepts them so)."""
    if not meta.shape:
        return ["c"]
    return [zarr_codec.chunk_key(i) for i in zarr_codec.chunk_grid(meta.shape, meta.chunks)]


class Buffers:
    """Memory for the slabs (and decoded chunks) of the :class:`ArrayReceiver` s of one transfer,
    reused from one slab to the next instead of new memory each time: a new buffer of 16 MiB is
    4096 pages that the kernel faults in and zeroes on first write, a cost of the order of the
    copy into it (measured on a push to S3: about a tenth of the receivers' CPU). Keeps at most
    ``keep`` bytes of free buffers; what is in use is not bounded here."""

    def __init__(self, keep: int = 128 << 20):
        self.keep = keep
        self._free: dict[int, list[np.ndarray]] = {}
        self._kept = 0
        self._lock = threading.Lock()

    def take(self, shape: tuple[int, ...], dtype: str) -> np.ndarray:
        """An uninitialised array of ``shape`` and ``dtype`` (a reused buffer when one is free)."""
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        with self._lock:
            free = self._free.get(nbytes)
            if free:
                self._kept -= nbytes
                buf = free.pop()
            else:
                buf = None
        if buf is None:
            buf = np.empty(nbytes, dtype=np.uint8)
        return buf.view(dtype).reshape(shape)

    def give(self, arr: np.ndarray) -> None:
        """Hand back an array from :meth:`take` once nothing refers to its memory."""
        buf = arr.base if arr.base is not None else arr
        if (not isinstance(buf, np.ndarray) or buf.base is not None or not buf.flags.owndata
                or not buf.flags.writeable or buf.dtype != np.uint8 or buf.ndim != 1):
            return  # not memory from take (a view of received bytes)
        with self._lock:
            if self._kept + buf.nbytes <= self.keep:
                self._free.setdefault(buf.nbytes, []).append(buf)
                self._kept += buf.nbytes


class ArrayReceiver:
    """Check the chunks of one array as they stream in, and its hash once all are in.

    ``add`` may be called from several threads, in any order. Decoded chunks are placed in
    slabs (chunk rows x the full trailing axes); each complete slab is hashed in C order as
    soon as all slabs before it are hashed, then dropped, so memory holds the slabs in
    flight rather than the whole array when chunks arrive roughly in grid order
    (:meth:`keys` gives that order; a stream from someone else passes each key through
    :meth:`admit` first, which enforces slab order). ``finish`` raises CorruptObject unless
    every chunk arrived and the array hashes to its name.

    ``buffers``: where slab memory comes from and goes back to (shared by the receivers of one
    transfer); None: new memory for each slab.
    """

    def __init__(self, h: str, meta: zarr_codec.ArrayMeta, buffers: Buffers | None = None):
        self.h = h
        self.meta = meta
        self._buffers = buffers
        self._pending = set(meta.chunk_digests)
        self._hasher = blake3.blake3(array_header(np.dtype(meta.dtype), meta.shape))
        rest = [math.ceil(s / c) for s, c in zip(meta.shape[1:], meta.chunks[1:])]
        self._per_slab = math.prod(rest)
        self._slabs: dict[int, list[Any]] = {}  # slab index -> [array, chunks still missing]
        self._next = 0
        self._lock = threading.Lock()
        self._hash_lock = threading.Lock()
        self._admitted: set[str] = set()
        self._row = 0

    def _take(self, shape: tuple[int, ...]) -> np.ndarray:
        if self._buffers is None:
            return np.empty(shape, dtype=self.meta.dtype)
        return self._buffers.take(shape, self.meta.dtype)

    def _give(self, arr: np.ndarray) -> None:
        """Return memory from :meth:`_take` (a view of received bytes is left alone)."""
        if self._buffers is not None:
            self._buffers.give(arr)

    def keys(self) -> list[str]:
        """Chunk keys in grid (C) order, the order that keeps the fewest slabs in memory."""
        return chunk_keys(self.meta)

    def admit(self, key: str) -> None:
        """Take the next chunk key of a stream, in arrival order, before its :meth:`add` (which may
        then run in any thread). CorruptObject for a key that is not a chunk of this array, that
        came before, or whose slab (its index along axis 0) precedes the last admitted one: chunks
        arrive slab by slab, so memory holds at most the slabs of the chunks in flight."""
        where = f"array {self.h} chunk {key}"
        if key not in self.meta.chunk_digests:
            raise CorruptObject(f"{where}: not a chunk of this array")
        if key in self._admitted:
            raise CorruptObject(f"{where} arrives twice")
        row = int(key.split("/")[1]) if self.meta.shape else 0
        if row < self._row:
            raise CorruptObject(f"{where} arrives after slab {self._row} (chunks must come slab by slab)")
        self._admitted.add(key)
        self._row = row

    @property
    def complete(self) -> bool:
        """True when every chunk was admitted."""
        return len(self._admitted) == len(self.meta.chunk_digests)

    @property
    def unadmitted(self) -> int:
        """Chunks not admitted yet."""
        return len(self.meta.chunk_digests) - len(self._admitted)

    def add(self, key: str, data: bytes) -> None:
        """Verify one chunk file (digest, size, padding) and place its data; CorruptObject."""
        meta, where = self.meta, f"array {self.h} chunk {key}"
        expected = meta.chunk_digests.get(key)
        if expected is None:
            raise CorruptObject(f"{where}: not a chunk of this array")
        if zarr_codec.chunk_digest(data) != expected:
            raise CorruptObject(f"{where} is corrupt: its content does not match its digest in zarr.json")
        shape = meta.chunks if meta.shape else ()
        if meta.zstd:
            # zstd itself checks the content against the size its frame declares: a frame that declares
            # exactly one chunk fills the whole output buffer (a shorter one would leave it unwritten)
            declared, expected_size = zstd_content_size(data), math.prod(shape) * np.dtype(meta.dtype).itemsize
            if declared != expected_size:
                raise CorruptObject(f"{where}: zstd frame declares {declared} bytes, the chunk holds {expected_size}")
        try:
            if meta.zstd:  # an output buffer of exactly one chunk: no decompression bomb
                block = self._take(shape)
                Zstd().decode(data, out=block.reshape(-1).view(np.uint8))
            elif len(data) == math.prod(shape) * np.dtype(meta.dtype).itemsize:
                block = np.frombuffer(data, dtype=meta.dtype).reshape(shape)  # plain bytes: a view
            else:
                raise ValueError(f"holds {len(data)} bytes, expected {math.prod(shape) * np.dtype(meta.dtype).itemsize}")
        except Exception as exc:  # the decompressor raises RuntimeError/ValueError on damaged frames
            raise CorruptObject(f"{where} does not decode: {exc}") from None
        if not meta.shape:
            with self._lock:
                self._pending.discard(key)
                self._slabs[0] = [block, 0]
            self._hash_ready()
            return
        index = tuple(int(i) for i in key.split("/")[1:])
        sl = tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(index, meta.chunks, meta.shape))
        valid = tuple(slice(0, x.stop - x.start) for x in sl)
        for axis, v in enumerate(valid):
            if v.stop < meta.chunks[axis] and block[(slice(None),) * axis + (slice(v.stop, None),)].any():
                raise CorruptObject(f"{where}: padding beyond the array edge is not zero")
        with self._lock:
            if key not in self._pending:
                self._give(block)
                return  # a repeated chunk (identical bytes, by its digest)
            self._pending.discard(key)
            slab = self._slabs.get(index[0])
            if slab is None:
                rows = sl[0].stop - sl[0].start
                slab = self._slabs[index[0]] = [self._take((rows, *meta.shape[1:])),
                                                self._per_slab]
        slab[0][(slice(None), *sl[1:])] = block[valid]
        self._give(block)
        with self._lock:
            slab[1] -= 1
        self._hash_ready()

    def _hash_ready(self, wait: bool = False) -> None:
        """Hash every complete slab that follows the last hashed one, in order. Without ``wait``,
        a thread that finds another one hashing returns at once (``finish`` catches up)."""
        if not self._hash_lock.acquire(blocking=wait):
            return
        try:
            while True:
                with self._lock:
                    slab = self._slabs.get(self._next)
                    if slab is None or slab[1] > 0:
                        return
                    del self._slabs[self._next]
                    self._next += 1
                self._hasher.update(memoryview(np.ascontiguousarray(slab[0])).cast("B") if slab[0].size else b"")
                self._give(slab[0])
        finally:
            self._hash_lock.release()

    def finish(self) -> None:
        """Raise CorruptObject unless every chunk arrived and the data hashes to the name."""
        if self._pending:
            raise CorruptObject(f"array {self.h}: {len(self._pending)} chunk(s) missing, e.g. "
                                f"{sorted(self._pending)[0]}")
        self._hash_ready(wait=True)
        if self._slabs:
            raise CorruptObject(f"array {self.h}: incomplete slabs after all chunks arrived")
        if self._hasher.hexdigest() != self.h:
            raise CorruptObject(f"array {self.h} is corrupt: its content does not match its hash")
