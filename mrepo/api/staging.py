"""Staged array uploads: chunks wait under ``staging/<hash>/<upload>/`` until ``zarr.json`` arrives.

A chunk cannot be verified alone, so an array becomes visible under
``arrays/<hash>/`` only when its ``zarr.json`` has been uploaded, is in exactly mrepo's
canonical form within the declared-size limit, and the staged chunks match their digests
and decode (bounded by the declared chunk size) to the hash in its name, slab by slab
(:class:`mrepo.store.integrity.ArrayReceiver`, reading the chunks in grid order: memory holds
one slab, never the array). Then the chunk files are moved (chunks first, ``zarr.json`` last)
and the staging folder is removed. Uploads are keyed by the client's upload id, so two clients
sending the same array with different chunkings never mix their files.

A present array is replaced by the same rule as the batch protocol
(:func:`mrepo.store.soundness.array_sound`): a chunk uploaded for a present array is staged only
when it differs from the stored file of that name, and its ``zarr.json`` publishes the upload over
the stored files when the stored copy fails its check; chunks not sent again are taken from the
stored copy, every one checked as part of the whole array.

Memory and disk stay bounded: a publication lock lives only while someone holds or waits for it
(a weak-valued map), and :meth:`ArrayStaging.sweep` removes abandoned files and, on a local
store, the staging folders left empty.
"""

from __future__ import annotations

import os
import re
import threading
import time
import weakref

from ..store import CorruptObject, LocalBackend, ObjectNotFound, Storage
from ..store.integrity import ArrayReceiver, check_array_metadata, check_slab_size
from ..store.objects import array_prefix
from ..store.soundness import array_sound

STAGING = "staging/"
UPLOAD_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def staging_prefix(h: str, upload: str) -> str:
    return f"{STAGING}{h}/{upload}/"


class ArrayStaging:
    """Stage array files and publish an array once it verifies."""

    def __init__(self, storage: Storage, *, max_array_bytes: int = 8 << 30):
        self.storage = storage
        self.max_array_bytes = max_array_bytes
        #: Publication locks by array hash; an entry goes when no one holds or waits for its lock.
        self._locks: weakref.WeakValueDictionary[str, threading.Lock] = weakref.WeakValueDictionary()
        self._guard = threading.Lock()

    def lock(self, h: str) -> threading.Lock:
        """The lock that serialises publishing array ``h`` (the same object for everyone who holds a
        reference to it; keep that reference until released)."""
        with self._guard:
            lock = self._locks.get(h)
            if lock is None:
                lock = self._locks[h] = threading.Lock()
            return lock

    def stage(self, h: str, upload: str, path: str, data: bytes) -> bool:
        """Keep one chunk file of an upload until its ``zarr.json`` arrives; False (nothing staged)
        when array ``h`` is present with a stored file of that name holding exactly ``data``."""
        backend = self.storage.backend
        if self.storage.objects.has_array(h):
            try:
                if backend.get(array_prefix(h) + path) == data:
                    return False
            except ObjectNotFound:
                pass
        backend.put(staging_prefix(h, upload) + path, data)
        return True

    def publish(self, h: str, upload: str, metadata: bytes) -> bool:
        """Verify the staged upload with ``metadata`` as its ``zarr.json`` and make it visible.

        Returns False when an intact copy was there already (nothing stored; see
        :func:`mrepo.store.soundness.array_sound`). A damaged present copy is replaced: chunks not
        staged are read from it, the whole array is verified, then the staged chunks are moved
        over the stored files and ``zarr.json`` written last. Raises CorruptObject (nothing
        published, the upload discarded) when it does not verify.
        """
        with self.lock(h):
            try:
                present = self.storage.objects.has_array(h)
                if present and array_sound(self.storage.backend, h):
                    return False
                staged = self._verify(h, upload, metadata, present)
                backend, src, dst = self.storage.backend, staging_prefix(h, upload), array_prefix(h)
                for key in staged:
                    backend.move(src + key, dst + key)
                backend.put(dst + "zarr.json", metadata)
                return True
            finally:
                self.discard(h, upload)

    def _verify(self, h: str, upload: str, metadata: bytes, present: bool) -> list[str]:
        """Check the chunks of ``h`` in grid order: staged ones, and when ``present`` the stored file
        of any chunk not staged; the keys of the staged ones."""
        meta = check_array_metadata(h, metadata, max_bytes=self.max_array_bytes)
        check_slab_size(h, meta)
        backend, prefix = self.storage.backend, staging_prefix(h, upload)
        receiver = ArrayReceiver(h, meta)
        staged: list[str] = []
        try:
            for key in receiver.keys():
                try:
                    data = backend.get(prefix + key)
                    staged.append(key)
                except ObjectNotFound:
                    if not present:
                        raise
                    data = backend.get(array_prefix(h) + key)
                receiver.add(key, data)
        except ObjectNotFound:
            raise CorruptObject(f"array {h}: the upload lacks chunks listed in its zarr.json") from None
        receiver.finish()
        return staged

    def discard(self, h: str, upload: str) -> None:
        """Remove the staged files of one upload."""
        backend = self.storage.backend
        for e in list(backend.list(staging_prefix(h, upload))):
            backend.delete(e.key)

    def sweep(self, max_age_seconds: float = 24 * 3600.0, folder_grace_seconds: float = 60.0) -> int:
        """Delete staged files older than ``max_age_seconds`` (abandoned uploads); returns the count.
        On a local store, also remove the staging folders that are empty and unchanged for
        ``folder_grace_seconds`` (an upload creating a folder just now keeps it)."""
        cutoff = time.time() - max_age_seconds
        n = 0
        for e in list(self.storage.backend.list(STAGING)):
            if e.mtime < cutoff:
                self.storage.backend.delete(e.key)
                n += 1
        self._remove_empty_folders(time.time() - folder_grace_seconds)
        return n

    def _remove_empty_folders(self, cutoff: float) -> None:
        """Remove empty folders below ``staging/`` last changed before ``cutoff`` (local stores only:
        object stores have no folders), deepest first."""
        backend = self.storage.backend
        if not isinstance(backend, LocalBackend):
            return
        top = str(backend.root / STAGING.rstrip("/"))
        old = []  # folders below ``top`` unchanged since ``cutoff``, before this sweep removes any
        for dirpath, _dirs, _files in os.walk(top):
            try:
                if dirpath != top and os.stat(dirpath).st_mtime < cutoff:
                    old.append(dirpath)
            except OSError:
                pass
        for dirpath in reversed(old):  # children before their parents
            try:
                os.rmdir(dirpath)  # only when empty: a folder that got a file meanwhile stays
            except OSError:
                pass
