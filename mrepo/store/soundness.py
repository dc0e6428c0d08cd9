"""Is an object that a store already holds still intact? The one rule a transfer and the server's
upload negotiation use to decide whether a present object may be skipped or must be replaced.

It runs for every present object that a push, fetch, pull or batch upload reaches (the walk of a
transfer stops at a present, intact record: its closure is there by invariant, so an up-to-date
clone costs one check of its head), and costs at most one read of what it checks:

- a record, and a blob up to the caller's ``rehash_bytes``, is reread and must hash to its name
  (and be of its kind); a larger blob (raw data) is taken as it is, left to ``mrepo verify``: every
  new version of an item names its raw data again, so a full check would re-read every movie of
  every refined item on each push;
- an array needs a canonical ``zarr.json`` naming it and every chunk file it lists, each matching
  the BLAKE3 digest recorded for it in that ``zarr.json``: a hash of the stored (compressed)
  bytes, no decoding. One read of the array's chunk files, chunk by chunk (memory: one chunk),
  hashed at about 3 GB/s per core (measured: a fetch reaching 1 GiB of present arrays, none
  missing, 0.13 -> 2.0 s on a loaded 2-core machine, ``benchmarks/bench_present_check.py``); on S3
  the chunks are downloaded to be checked (a resumed push: about a pull of what is there).
  Every array of any size: one flipped byte in a chunk is found and the array copied again.

Damage below a present intact record is what ``mrepo verify`` finds and ``verify --repair
REMOTE`` replaces.
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


def array_sound(backend: Backend, h: str) -> bool:
    """Present array ``h`` is intact: canonical ``zarr.json`` naming ``h`` and every chunk file it
    lists present with the BLAKE3 digest it records (stored bytes, not decoded; read one chunk at a
    time, in key order, stopping at the first mismatch). False when absent or damaged."""
    prefix = array_prefix(h)
    try:
        meta = check_array_metadata(h, backend.get(prefix + "zarr.json"), max_bytes=1 << 62)
        return all(zarr_codec.chunk_digest(backend.get(prefix + k)) == d
                   for k, d in sorted(meta.chunk_digests.items()))
    except (ObjectNotFound, CorruptObject, InvalidInput):
        return False
