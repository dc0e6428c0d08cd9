"""Staged array uploads: chunks wait under ``staging/<hash>/<upload>/`` until ``zarr.json`` arrives.

A chunk cannot be verified alone, so an array becomes visible under
``arrays/<hash>/`` only when its ``zarr.json`` has been uploaded and the staged
copy decodes to the hash in its name (``ObjectStore.get_array(verify=True)``)
with a ``zarr.json`` in exactly mrepo's canonical form. Then the chunk files are
copied (chunks first, ``zarr.json`` last) and the staging folder is removed.
Uploads are keyed by the client's upload id, so two clients sending the same
array with different chunkings never mix their files.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Iterator

import numpy as np

from ..store import Backend, CorruptObject, Entry, InvalidInput, ObjectStore, Storage, zarr_codec
from ..store.backends import Token
from ..store.objects import array_prefix

STAGING = "staging/"
UPLOAD_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def staging_prefix(h: str, upload: str) -> str:
    return f"{STAGING}{h}/{upload}/"


class StagedView(Backend):
    """Read-only view of one staged upload that looks like ``arrays/<hash>/`` to an ObjectStore."""

    def __init__(self, base: Backend, h: str, upload: str):
        self.base = base
        self.url = f"{base.url} (staged {h[:12]}/{upload})"
        self._from = array_prefix(h)
        self._to = staging_prefix(h, upload)

    def _key(self, key: str) -> str:
        if not key.startswith(self._from):
            raise InvalidInput(f"staged view has no key {key!r}")
        return self._to + key[len(self._from):]

    def get(self, key: str) -> bytes:
        return self.base.get(self._key(key))

    def exists(self, key: str) -> bool:
        return self.base.exists(self._key(key))

    def list(self, prefix: str) -> Iterator[Entry]:
        for e in self.base.list(self._key(prefix)):
            yield Entry(self._from + e.key[len(self._to):], e.size, e.mtime)

    def put(self, key: str, data: bytes) -> None:
        raise InvalidInput("staged view is read-only")

    def delete(self, key: str) -> None:
        raise InvalidInput("staged view is read-only")

    def read_versioned(self, key: str) -> tuple[bytes | None, Token]:
        raise InvalidInput("staged view has no refs")

    def cas(self, key: str, expected: Token, data: bytes | None) -> Token:
        raise InvalidInput("staged view has no refs")


class ArrayStaging:
    """Stage array files and publish an array once it verifies."""

    def __init__(self, storage: Storage, *, max_array_bytes: int = 8 << 30):
        self.storage = storage
        self.max_array_bytes = max_array_bytes
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock(self, h: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(h, threading.Lock())

    def stage(self, h: str, upload: str, path: str, data: bytes) -> None:
        """Keep one chunk file of an upload until its ``zarr.json`` arrives."""
        self.storage.backend.put(staging_prefix(h, upload) + path, data)

    def publish(self, h: str, upload: str, metadata: bytes) -> bool:
        """Verify the staged upload with ``metadata`` as its ``zarr.json`` and make it visible.

        Returns False when the array was already complete (nothing stored). Raises
        CorruptObject (nothing published, the upload discarded) when it does not verify.
        """
        with self._lock(h):
            try:
                if self.storage.objects.has_array(h):
                    return False
                self._verify(h, upload, metadata)
                self._copy(h, upload, metadata)
                return True
            finally:
                self.discard(h, upload)

    def _verify(self, h: str, upload: str, metadata: bytes) -> None:
        meta = zarr_codec.parse_metadata(metadata, f"array {h}")
        if meta.hash != h:
            raise CorruptObject(f"array {h}: zarr.json names hash {meta.hash!r}")
        nbytes = math.prod(meta.shape) * np.dtype(meta.dtype).itemsize
        if nbytes > self.max_array_bytes:
            raise CorruptObject(f"array {h}: {nbytes} bytes is more than this server accepts ({self.max_array_bytes})")
        if len(meta.chunks) != len(meta.shape) or any(c < 1 for c in meta.chunks):
            raise CorruptObject(f"array {h}: chunk shape {meta.chunks} does not fit shape {meta.shape}")
        self.storage.backend.put(staging_prefix(h, upload) + "zarr.json", metadata)
        staged = ObjectStore(StagedView(self.storage.backend, h, upload), max_workers=4)
        try:
            arr = staged.get_array(h, verify=True)
        except CorruptObject:
            raise
        except Exception as exc:  # a damaged chunk can make the decompressor raise anything
            raise CorruptObject(f"array {h}: staged upload does not decode ({type(exc).__name__}: {exc})") from None
        finally:
            staged.close()
        if zarr_codec.metadata_document(arr, meta.chunks, h, meta.chunk_digests) != metadata:
            raise CorruptObject(f"array {h}: zarr.json is not in mrepo's canonical form")

    def _copy(self, h: str, upload: str, metadata: bytes) -> None:
        backend = self.storage.backend
        src, dst = staging_prefix(h, upload), array_prefix(h)
        meta = zarr_codec.parse_metadata(metadata, f"array {h}")
        keys = sorted(meta.chunk_digests) or sorted(
            e.key[len(src):] for e in backend.list(src) if not e.key.endswith("zarr.json"))
        for key in keys:
            if backend.exists(src + key):
                backend.put(dst + key, backend.get(src + key))
        backend.put(dst + "zarr.json", metadata)

    def discard(self, h: str, upload: str) -> None:
        """Remove the staged files of one upload."""
        backend = self.storage.backend
        for e in list(backend.list(staging_prefix(h, upload))):
            backend.delete(e.key)

    def sweep(self, max_age_seconds: float = 24 * 3600.0) -> int:
        """Delete staged files older than ``max_age_seconds`` (abandoned uploads); returns the count."""
        cutoff = time.time() - max_age_seconds
        n = 0
        for e in list(self.storage.backend.list(STAGING)):
            if e.mtime < cutoff:
                self.storage.backend.delete(e.key)
                n += 1
        return n
