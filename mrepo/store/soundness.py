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
  missing, 0.13 -> 2.0 s on a loaded 2-core machine, ``benchmarks/bench_present_check.py``).
  Every array of any size: one flipped byte in a chunk is found and the array copied again.
- on S3 with a local source (a push, or a fetch from a local repository into a bucket), a
  chunk is not downloaded: the source's copy must match the recorded digest and the stored
  object must have its size and the CRC32 that S3 verified over the bytes it received (or, with
  no CRC32 kept, an ETag equal to the MD5 of the source's copy); one HEAD per chunk
  (:mod:`mrepo.store.stored_checksums`). Trusted here: the object store's own checksum of what
  it stores, in the user's own bucket, and CRC32/MD5 as a check against damage (not against a
  forger with write access to that bucket, who could equally rewrite ``zarr.json``). A chunk
  without a usable checksum, or whose source copy is missing or damaged, is downloaded and
  checked by its digest. This is only about objects already *present* at the destination:
  whatever a transfer *receives* from another store is verified in full against its name.

Damage below a present intact record is what ``mrepo verify`` finds and ``verify --repair
REMOTE`` replaces.
"""

from __future__ import annotations

from . import zarr_codec
from .backends import Backend, LocalBackend, MemoryBackend
from .errors import CorruptObject, InvalidInput, ObjectNotFound
from .integrity import check_array_metadata, check_object_bytes
from .objects import array_prefix, object_key
from .stored_checksums import offers_checksums, stored_checksum

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


def array_sound(backend: Backend, h: str, source: Backend | None = None) -> bool:
    """Present array ``h`` is intact: canonical ``zarr.json`` naming ``h`` and every chunk file it
    lists present with the BLAKE3 digest it records (stored bytes, not decoded; one chunk at a
    time, in key order, stopping at the first mismatch). False when absent or damaged.

    ``source``: a store holding the same array whose reads stay on this machine (a local folder or
    memory: the user's repository on a push). Where ``backend`` keeps checksums of its own (S3,
    :mod:`mrepo.store.stored_checksums`), each chunk is then not downloaded: the source's chunk
    file must match the recorded digest, and the stored object must have its size and the
    CRC32 (or MD5 ETag) S3 computed over the bytes it stored. A chunk the store cannot vouch for
    this way, or whose source copy is missing or differs from the digest, is downloaded and
    checked as without ``source``; a size or CRC32 that differs is damage."""
    prefix = array_prefix(h)
    local = source if isinstance(source, (LocalBackend, MemoryBackend)) and offers_checksums(backend) else None
    try:
        meta = check_array_metadata(h, backend.get(prefix + "zarr.json"), max_bytes=1 << 62)
        return all(_chunk_sound(backend, prefix + k, d, local) for k, d in sorted(meta.chunk_digests.items()))
    except (ObjectNotFound, CorruptObject, InvalidInput):
        return False


def _chunk_sound(backend: Backend, key: str, digest: str, source: Backend | None) -> bool:
    """Chunk file ``key`` at ``backend`` is present with ``digest``: compared through the store's
    checksum with ``source``'s copy when that copy has ``digest``, else read and hashed."""
    if source is not None:
        try:
            data = source.get(key)
        except ObjectNotFound:
            data = None
        if data is not None and zarr_codec.chunk_digest(data) == digest:
            stored = stored_checksum(backend, key)
            if stored is None:  # absent at the destination
                return False
            verdict = stored.matches(data)
            if verdict is not None:
                return verdict
    return zarr_codec.chunk_digest(backend.get(key)) == digest
