"""Immutable objects by hash: records, blobs and Zarr v3 arrays on any backend.

Layout under the repository root::

    objects/ab/cdef...   records and blobs (the file holds exactly the hashed bytes)
    arrays/<hash>/       Zarr v3 arrays (``zarr.json`` written last marks completion)

Records refer to other objects only through reference objects, so the store can
walk the object graph without knowing the data model::

    {"@record": "<hash>"}   {"@array": "<hash>"}   {"@blob": "<hash>"}
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np

from . import zarr_codec
from .backends import Backend
from .errors import CorruptObject, InvalidInput, ObjectNotFound
from .hashing import (
    BLOB_TAG,
    as_canonical_array,
    check_hash,
    hash_array,
    hash_bytes,
    hash_file,
    hash_file_cached,
    parse_record_bytes,
    record_bytes,
)

ObjectType = Literal["record", "array", "blob"]
REF_KEYS: dict[str, ObjectType] = {"@record": "record", "@array": "array", "@blob": "blob"}


def ref(kind: ObjectType, h: str) -> dict[str, str]:
    """A reference object for embedding in a record body."""
    return {f"@{kind}": check_hash(h)}


def record_ref(h: str) -> dict[str, str]:
    return ref("record", h)


def array_ref(h: str) -> dict[str, str]:
    return ref("array", h)


def blob_ref(h: str) -> dict[str, str]:
    return ref("blob", h)


def deref(value: Any, kind: ObjectType | None = None) -> str:
    """The hash inside a reference object (checking its kind when given)."""
    if isinstance(value, dict) and len(value) == 1:
        (key, h), = value.items()
        if key in REF_KEYS and (kind is None or REF_KEYS[key] == kind):
            return h
    raise InvalidInput(f"expected a {kind or 'object'} reference, got {value!r}")


def references(body: Any) -> Iterator[tuple[ObjectType, str]]:
    """Every (type, hash) reference inside a record body, depth first."""
    stack = [body]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            if len(value) == 1:
                (key, h), = value.items()
                if key in REF_KEYS and isinstance(h, str):
                    yield REF_KEYS[key], h
                    continue
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)


def object_key(h: str) -> str:
    return f"objects/{h[:2]}/{h[2:]}"


def array_prefix(h: str) -> str:
    return f"arrays/{h}/"


class ObjectStore:
    """Content-addressed objects on one backend, with a bounded cache of decoded records."""

    def __init__(self, backend: Backend, *, max_workers: int = 16, cache_size: int = 4096):
        self.backend = backend
        self.max_workers = max_workers
        self._cache: OrderedDict[str, tuple[str, Any]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    # ------------------------------------------------------------------ helpers
    @property
    def pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="mrepo-io")
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self.backend.close()

    def clear_cache(self) -> None:
        """Forget decoded records (after objects were deleted or may have been damaged)."""
        with self._lock:
            self._cache.clear()

    def _cache_put(self, h: str, value: tuple[str, Any]) -> None:
        with self._lock:
            self._cache[h] = value
            self._cache.move_to_end(h)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    # ------------------------------------------------------------------ records
    def put_record(self, kind: str, body: Any) -> str:
        """Store a record; returns its hash (idempotent)."""
        data = record_bytes(kind, body)
        h = hash_bytes(data)
        self.backend.put_immutable(object_key(h), data)
        self._cache_put(h, (kind, parse_record_bytes(data)[1]))
        return h

    def remember_record(self, h: str, data: bytes) -> None:
        """Cache record ``h`` from ``data``, bytes the caller has just written here after checking
        them against ``h`` (a transfer), so that reading it back (a ref's target check) costs no
        request."""
        self._cache_put(h, parse_record_bytes(data))

    def get_record(self, h: str, kind: str | None = None) -> Any:
        """The body of record ``h`` (verified against its hash), checking its kind when given."""
        return self.get_record_with_kind(h, kind)[1]

    def get_record_with_kind(self, h: str, kind: str | None = None) -> tuple[str, Any]:
        check_hash(h)
        with self._lock:
            cached = self._cache.get(h)
        if cached is None:
            data = self.backend.get(object_key(h))
            if hash_bytes(data) != h:
                raise CorruptObject(f"object {h} is corrupt: its content does not match its hash")
            try:
                cached = parse_record_bytes(data)
            except ValueError:
                raise InvalidInput(f"object {h} is a blob, not a record") from None
            self._cache_put(h, cached)
        if kind is not None and cached[0] != kind:
            raise InvalidInput(f"object {h} is a {cached[0]} record, not a {kind}")
        return cached

    def has_object(self, h: str) -> bool:
        """True when the record or blob ``h`` is stored."""
        with self._lock:
            if h in self._cache:
                return True
        return self.backend.exists(object_key(h))

    # ------------------------------------------------------------------ blobs
    def put_blob(self, data: bytes) -> str:
        payload = BLOB_TAG + bytes(data)
        h = hash_bytes(payload)
        self.backend.put_immutable(object_key(h), payload)
        return h

    def put_blob_file(self, path: str | Path) -> str:
        """Copy a (possibly large) file into the store as a blob; returns its hash."""
        path = Path(path)
        h = hash_file(path)
        if self.backend.touch(object_key(h)):
            return h
        import tempfile

        with tempfile.NamedTemporaryFile(delete=False) as tmp:
            tmp.write(BLOB_TAG)
            with open(path, "rb") as f:
                while chunk := f.read(8 << 20):
                    tmp.write(chunk)
        try:
            self.backend.put_file(object_key(h), tmp.name)
        finally:
            Path(tmp.name).unlink(missing_ok=True)
        return h

    def get_blob(self, h: str, *, verify: bool = True) -> bytes:
        check_hash(h)
        data = self.backend.get(object_key(h))
        if not data.startswith(BLOB_TAG):
            raise InvalidInput(f"object {h} is a record, not a blob")
        if verify and hash_bytes(data) != h:
            raise CorruptObject(f"blob {h} is corrupt: its content does not match its hash")
        return data[len(BLOB_TAG):]

    def blob_file(self, h: str) -> tuple[Path, int] | None:
        """(local file, byte offset of the content) of the stored blob ``h``, verified against its hash
        (once per process while the file is unchanged: :func:`hash_file_cached`); None when the store
        is not a local folder or does not hold ``h``. CorruptObject when the file does not match."""
        check_hash(h)
        path = self.backend.local_file(object_key(h))
        if path is None:
            return None
        with open(path, "rb") as f:
            if f.read(len(BLOB_TAG)) != BLOB_TAG:
                raise InvalidInput(f"object {h} is a record, not a blob")
        if hash_file_cached(path, tagged=False) != h:
            raise CorruptObject(f"blob {h} is corrupt: its content does not match its hash")
        return path, len(BLOB_TAG)

    # ------------------------------------------------------------------ arrays
    def has_array(self, h: str) -> bool:
        return self.backend.exists(array_prefix(h) + "zarr.json")

    def freshen(self, kind: ObjectType, h: str) -> bool:
        """Refresh the age of a present object (see :meth:`Backend.put_immutable`); False if absent."""
        key = array_prefix(h) + "zarr.json" if kind == "array" else object_key(h)
        return self.backend.touch(key)

    def put_array(self, array: np.ndarray, *, chunks: tuple[int, ...] | None = None,
                  allow_nonfinite: bool = False, what: str = "array", _parallel: bool = True) -> str:
        """Store an array as Zarr v3 (chunks first, ``zarr.json`` last); returns its hash.

        Float arrays with NaN or Inf are refused unless ``allow_nonfinite``.
        """
        arr = as_canonical_array(array)
        if not allow_nonfinite:
            zarr_codec.check_finite(arr, what)
        h = hash_array(arr)
        chunks = tuple(chunks) if chunks else zarr_codec.auto_chunks(arr.shape, arr.dtype.itemsize)
        single_chunk = all(c >= s for c, s in zip(chunks, arr.shape))
        # Present already: freshen its zarr.json (gc age) instead of writing. A one-chunk array is
        # simply rewritten on backends where a PUT is cheaper than HEAD + copy (S3).
        if not (single_chunk and self.backend.cheap_overwrite) and self.backend.touch(array_prefix(h) + "zarr.json"):
            return h
        if len(chunks) != arr.ndim or any(c < 1 for c in chunks):
            raise InvalidInput(f"chunk shape {chunks} does not fit array shape {arr.shape}")
        prefix = array_prefix(h)
        digests: dict[str, str] = {}
        futures = []
        compress = zarr_codec.worth_compressing(arr, chunks)
        for key, data in zarr_codec.encode_chunks(arr, chunks, compress=compress):
            digests[key] = zarr_codec.chunk_digest(data)
            if _parallel:
                futures.append(self.pool.submit(self.backend.put, prefix + key, data))
            else:
                self.backend.put(prefix + key, data)
        for f in futures:
            f.result()
        self.backend.put(prefix + "zarr.json", zarr_codec.metadata_document(arr, chunks, h, digests,
                                                                             compressed=compress))
        return h

    def put_arrays(self, arrays: Iterable[np.ndarray]) -> list[str]:
        """Store many arrays in parallel (one task per array); returns their hashes in order."""
        futures = [self.pool.submit(self.put_array, a, _parallel=False) for a in arrays]
        return [f.result() for f in futures]

    def array_meta(self, h: str) -> zarr_codec.ArrayMeta:
        check_hash(h)
        try:
            data = self.backend.get(array_prefix(h) + "zarr.json")
        except ObjectNotFound:
            raise ObjectNotFound(f"array {h} not found in {self.backend.url}") from None
        return zarr_codec.parse_metadata(data, f"array {h}")

    def get_array(self, h: str, *, verify: bool = True) -> np.ndarray:
        """Read array ``h``. ``verify`` (default) recomputes its hash; ``verify=False`` is the
        documented fast path for trusted local stores."""
        meta = self.array_meta(h)
        prefix = array_prefix(h)
        keys = [zarr_codec.chunk_key(i) for i in zarr_codec.chunk_grid(meta.shape, meta.chunks)] if meta.shape \
            else ["c"]

        def load(key: str) -> tuple[str, np.ndarray]:
            try:
                data: bytes | None = self.backend.get(prefix + key)
            except ObjectNotFound:
                data = None
            if verify and meta.chunk_digests:
                expected = meta.chunk_digests.get(key)
                if (data is None) != (expected is None) or (
                        data is not None and zarr_codec.chunk_digest(data) != expected):
                    raise CorruptObject(f"array {h} chunk {key} is corrupt or missing")
            return key, zarr_codec.decode_chunk(meta, data, f"array {h} chunk {key}")

        if len(keys) == 1:
            blocks = dict([load(keys[0])])
        else:
            blocks = dict(self.pool.map(load, keys))
        arr = zarr_codec.assemble(meta, blocks)
        if verify and hash_array(arr) != h:
            raise CorruptObject(f"array {h} is corrupt: its content does not match its hash")
        return arr

    def array_keys(self, h: str) -> list[str]:
        """Every stored key of array ``h`` (chunks first, ``zarr.json`` last)."""
        keys = [e.key for e in self.backend.list(array_prefix(h)) if not e.key.endswith("zarr.json")]
        return sorted(keys) + [array_prefix(h) + "zarr.json"]

    # ------------------------------------------------------------------ graph walking
    def children(self, kind: ObjectType, h: str) -> list[tuple[ObjectType, str]]:
        """Objects directly referenced by ``h`` (only records reference anything)."""
        if kind != "record":
            return []
        return list(references(self.get_record(h)))

    def verify_object(self, kind: ObjectType, h: str) -> str | None:
        """None if object ``h`` is present and intact, else a one-line problem description."""
        try:
            if kind == "record":
                data = self.backend.get(object_key(h))
                if hash_bytes(data) != h:
                    return f"record {h}: corrupt (content does not match hash)"
                parse_record_bytes(data)
            elif kind == "blob":
                data = self.backend.get(object_key(h))
                if hash_bytes(data) != h or not data.startswith(BLOB_TAG):
                    return f"blob {h}: corrupt (content does not match hash)"
            else:
                self.get_array(h, verify=True)
        except ObjectNotFound:
            return f"{kind} {h}: missing"
        except (CorruptObject, ValueError) as exc:
            return f"{kind} {h}: corrupt ({exc})"
        return None

