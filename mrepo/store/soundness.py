"""Is an object that a store already holds still intact? The one rule a transfer and the server's
upload negotiation use to decide whether a present object may be skipped or must be replaced.

Cheap by design (it runs for every present object of a push or fetch): records and blobs up to
``rehash_bytes`` are reread and must hash to their name, larger blobs are taken as they are; an
array needs a canonical ``zarr.json`` naming it and every chunk file it lists, and its chunks are
checked against their digests only when they total at most ``rehash_bytes``. Damage beyond that
is what ``mrepo verify`` finds and ``verify --repair REMOTE`` replaces.
"""

from __future__ import annotations

from . import zarr_codec
from .backends import Backend
from .errors import CorruptObject, InvalidInput, ObjectNotFound
from .integrity import check_array_metadata, check_object_bytes
from .objects import array_prefix, object_key

__all__ = ["array_sound", "object_sound"]


def object_sound(backend: Backend, h: str, rehash_bytes: int, kind: str | None = None) -> bool:
    """Present record or blob ``h`` is intact: reread when at most ``rehash_bytes`` long and it must
    hash to ``h`` (and be of ``kind`` when given); a larger one is taken as is. False when absent
    or damaged."""
    key = object_key(h)
    try:
        if backend.get_size(key) > rehash_bytes:
            return True
        got = check_object_bytes(h, backend.get(key))
        return kind is None or got == kind
    except (ObjectNotFound, CorruptObject, InvalidInput):
        return False


def array_sound(backend: Backend, h: str, rehash_bytes: int) -> bool:
    """Present array ``h`` is intact: canonical ``zarr.json`` naming ``h``, every chunk file it lists
    present, and each chunk matching its digest when they total at most ``rehash_bytes``. False
    when absent or damaged."""
    prefix = array_prefix(h)
    try:
        meta = check_array_metadata(h, backend.get(prefix + "zarr.json"), max_bytes=1 << 62)
        sizes = {e.key[len(prefix):]: e.size for e in backend.list(prefix)}
        if not set(meta.chunk_digests) <= sizes.keys():
            return False
        if sum(sizes[k] for k in meta.chunk_digests) > rehash_bytes:
            return True
        return all(zarr_codec.chunk_digest(backend.get(prefix + k)) == d for k, d in meta.chunk_digests.items())
    except (ObjectNotFound, CorruptObject, InvalidInput):
        return False
