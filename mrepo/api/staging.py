"""Staged array uploads: chunks wait under ``staging/<hash>/<upload>/`` until ``zarr.json`` arrives.

A chunk cannot be verified alone, so an array becomes visible under
``arrays/<hash>/`` only when its ``zarr.json`` has been uploaded, is in exactly mrepo's
canonical form within the declared-size limit, and the staged chunks match their digests
and decode (bounded by the declared chunk size) to the hash in its name, slab by slab
(:class:`mrepo.store.integrity.ArrayReceiver`, reading the chunks in grid order: memory holds
one slab, never the array). Then the chunk files are moved (chunks first, ``zarr.json`` last)
and the staging folder is removed. Uploads are keyed by the client's upload id, so two clients
sending the same array with different chunkings never mix their files.
"""

from __future__ import annotations

import re
import threading
import time

from ..store import CorruptObject, ObjectNotFound, Storage
from ..store.integrity import ArrayReceiver, check_array_metadata, check_slab_size, chunk_keys
from ..store.objects import array_prefix

STAGING = "staging/"
UPLOAD_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def staging_prefix(h: str, upload: str) -> str:
    return f"{STAGING}{h}/{upload}/"


class ArrayStaging:
    """Stage array files and publish an array once it verifies."""

    def __init__(self, storage: Storage, *, max_array_bytes: int = 8 << 30):
        self.storage = storage
        self.max_array_bytes = max_array_bytes
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def lock(self, h: str) -> threading.Lock:
        """The lock that serialises publishing array ``h``."""
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
        with self.lock(h):
            try:
                if self.storage.objects.has_array(h):
                    return False
                keys = self._verify(h, upload, metadata)
                backend, src, dst = self.storage.backend, staging_prefix(h, upload), array_prefix(h)
                for key in keys:
                    backend.move(src + key, dst + key)
                backend.put(dst + "zarr.json", metadata)
                return True
            finally:
                self.discard(h, upload)

    def _verify(self, h: str, upload: str, metadata: bytes) -> list[str]:
        """Check the staged chunks of ``h`` in grid order; their keys."""
        meta = check_array_metadata(h, metadata, max_bytes=self.max_array_bytes)
        check_slab_size(h, meta)
        prefix = staging_prefix(h, upload)
        receiver = ArrayReceiver(h, meta)
        try:
            for key in receiver.keys():
                receiver.add(key, self.storage.backend.get(prefix + key))
        except ObjectNotFound:
            raise CorruptObject(f"array {h}: the upload lacks chunks listed in its zarr.json") from None
        receiver.finish()
        return chunk_keys(meta)

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
