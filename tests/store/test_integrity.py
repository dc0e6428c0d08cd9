"""Checks of received bytes (mrepo.store.integrity) against crafted input: a sender that
computes digests for what it sends, so only the checks against the *name* and the declared
shapes can catch it."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from numcodecs import Zstd

from mrepo.store import CorruptObject, ObjectStore, Storage, hash_array
from mrepo.store.errors import InvalidRecord
from mrepo.store.hashing import canonical_json
from mrepo.store.integrity import (
    ArrayReceiver,
    Buffers,
    check_array_metadata,
    check_object_bytes,
    parse_canonical_record,
)
from mrepo.store.objects import array_prefix
from mrepo.store.zarr_codec import chunk_digest, metadata_document


@pytest.fixture
def store() -> ObjectStore:
    return Storage.create("memory://integrity-" + str(random.random())).objects


def stored(store: ObjectStore, arr: np.ndarray, chunks=None) -> tuple[str, bytes, dict[str, bytes]]:
    h = store.put_array(arr, chunks=chunks)
    meta = store.array_meta(h)
    files = {k: store.backend.get(array_prefix(h) + k) for k in meta.chunk_digests}
    return h, store.backend.get(array_prefix(h) + "zarr.json"), files


def receive(h: str, metadata: bytes, files: dict[str, bytes], order=None) -> None:
    receiver = ArrayReceiver(h, check_array_metadata(h, metadata))
    for key in order or receiver.keys():
        receiver.add(key, files[key])
    receiver.finish()


@pytest.mark.parametrize("shape,chunks", [((), None), ((0, 4), None), ((7,), (3,)), ((5, 6, 7), (2, 4, 3)),
                                          ((40, 3), (7, 3))])
def test_any_order_of_chunks_verifies(store: ObjectStore, shape, chunks) -> None:
    arr = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    h, meta, files = stored(store, arr, chunks)
    order = list(files)
    random.Random(3).shuffle(order)
    receive(h, meta, files, order)


def crafted(arr: np.ndarray, chunks: tuple[int, ...], name: str, blocks: dict[str, bytes]) -> bytes:
    """A canonical zarr.json naming ``name`` with the digests of ``blocks`` (a lying sender)."""
    return metadata_document(arr, chunks, name, {k: chunk_digest(v) for k, v in blocks.items()})


def test_consistent_but_wrong_data_is_refused_by_the_array_hash(store: ObjectStore) -> None:
    real = np.arange(12, dtype=np.float32).reshape(3, 4)
    fake = real + 1
    h = hash_array(real)
    block = {"c/0/0": Zstd(level=1).encode(fake.tobytes())}
    with pytest.raises(CorruptObject, match="does not match its hash"):
        receive(h, crafted(real, (3, 4), h, block), block)


def test_non_zero_padding_is_refused(store: ObjectStore) -> None:
    arr = np.ones((3,), np.float32)
    padded = np.array([1, 1, 1, 7], np.float32)
    block = {"c/0": Zstd(level=1).encode(padded.tobytes())}
    h = hash_array(arr)
    with pytest.raises(CorruptObject, match="padding"):
        receive(h, crafted(arr, (4,), h, block), block)


def test_decompression_bomb_is_refused_before_it_grows(store: ObjectStore) -> None:
    arr = np.zeros((1024,), np.uint8)
    bomb = Zstd(level=1).encode(np.zeros(1 << 28, np.uint8).tobytes())  # 256 MiB of zeros in a few KB
    assert len(bomb) < 64 << 10
    h = hash_array(arr)
    with pytest.raises(CorruptObject, match="zstd frame declares 268435456 bytes, the chunk holds 1024"):
        receive(h, crafted(arr, (1024,), h, {"c/0": bomb}), {"c/0": bomb})


def test_zarr_json_must_be_canonical_and_complete(store: ObjectStore) -> None:
    arr = np.arange(10, dtype=np.int32)
    h, meta, files = stored(store, arr, (4,))
    doc = json.loads(meta)
    variants = {
        "reordered": json.dumps(doc, indent=2, sort_keys=True).encode(),
        "other name": meta.replace(h.encode(), b"0" * 64),
        "missing digest": crafted(arr, (4,), h, {k: v for k, v in files.items() if k != "c/1"}),
        "extra digest": crafted(arr, (4,), h, {**files, "c/9": b"x"}),
        "huge": json.dumps({**doc, "shape": [1 << 40]}, indent=2).encode(),
        "not json": b"{",
    }
    for what, data in variants.items():
        with pytest.raises(CorruptObject):
            check_array_metadata(h, data)
        assert what


def test_missing_and_foreign_chunks(store: ObjectStore) -> None:
    arr = np.arange(10, dtype=np.int32)
    h, meta, files = stored(store, arr, (4,))
    receiver = ArrayReceiver(h, check_array_metadata(h, meta))
    receiver.add("c/0", files["c/0"])
    with pytest.raises(CorruptObject, match="not a chunk"):
        receiver.add("c/7", files["c/0"])
    with pytest.raises(CorruptObject, match="does not match its digest"):
        receiver.add("c/1", files["c/0"])
    with pytest.raises(CorruptObject, match="missing"):
        receiver.finish()


def test_objects_and_records() -> None:
    data = b"blob\0abc"
    from mrepo.store.hashing import hash_bytes

    assert check_object_bytes(hash_bytes(data), data) == "blob"
    with pytest.raises(CorruptObject):
        check_object_bytes(hash_bytes(b"x"), data)
    with pytest.raises(CorruptObject, match="neither a record nor a blob"):
        check_object_bytes(hash_bytes(b"other"), b"other")
    ok = b"record\0commit\0" + canonical_json({"b": [1.5, -0.0], "a": "\u00e9"})
    assert parse_canonical_record(ok)[1] == {"a": "é", "b": [1.5, -0.0]}
    for bad in (b"record\0commit\0" + b'{"a":"\\u00e9"}', b"record\0commit\0{\"a\":1.50}", b"record\0commit\0[1,]",
                b"record\0commit", b"record\0Kind\0{}", b"record\0commit\0{\"a\":Infinity}"):
        with pytest.raises(InvalidRecord):
            parse_canonical_record(bad)


def test_noisy_arrays_are_stored_plain_and_compressible_ones_with_zstd(store: ObjectStore) -> None:
    noisy = np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32)
    flat = np.ones((64, 64), np.float32)
    for arr, zstd in ((noisy, False), (flat, True)):
        h, meta, files = stored(store, arr, (32, 64))
        assert check_array_metadata(h, meta).zstd is zstd
        receive(h, meta, files)
        assert np.array_equal(store.get_array(h), arr)
    assert store.put_array(noisy, chunks=(32, 64)) == hash_array(noisy)  # same content, same layout


def test_a_zstd_frame_shorter_than_its_chunk_is_refused(store: ObjectStore) -> None:
    # A frame of half a chunk would decode into the first half of the output buffer and leave the rest
    # as it was (zeros, for fresh memory): an array whose second half is zero would pass its hash.
    arr = np.zeros((1 << 16,), np.float32)
    arr[: 1 << 15] = 1.0
    short = Zstd(level=1).encode(arr[: 1 << 15].tobytes())
    h = hash_array(arr)
    with pytest.raises(CorruptObject, match="zstd frame declares 131072 bytes, the chunk holds 262144"):
        receive(h, crafted(arr, (1 << 16,), h, {"c/0": short}), {"c/0": short})


def test_a_stream_is_admitted_only_slab_by_slab(store: ObjectStore) -> None:
    arr = np.random.default_rng(2).normal(size=(6, 8)).astype(np.float32)
    h, metadata, files = stored(store, arr, (2, 3))  # 3 slabs of 3 chunks
    receiver = ArrayReceiver(h, check_array_metadata(h, metadata))
    for key in ("c/0/1", "c/0/0", "c/1/1"):  # any order within a slab; the next slab may start early
        receiver.admit(key)
    with pytest.raises(CorruptObject, match="arrives twice"):
        receiver.admit("c/0/1")
    with pytest.raises(CorruptObject, match="arrives after slab 1"):
        receiver.admit("c/0/2")  # would keep slab 0 waiting in memory behind slab 1
    with pytest.raises(CorruptObject, match="not a chunk"):
        receiver.admit("c/9/0")
    assert not receiver.complete
    for key in ("c/1/0", "c/1/2", "c/2/0", "c/2/2", "c/2/1"):
        receiver.admit(key)
    assert not receiver.complete  # c/0/2 was refused


def test_receivers_sharing_buffers_reuse_slab_memory_and_still_check_everything(store: ObjectStore) -> None:
    """Receivers of one transfer share :class:`Buffers`: a slab's memory, once hashed, holds the next
    slab (of this array or the next one of that size), decoded zstd chunks likewise; arrays of every
    kind still verify (plain and zstd, edge chunks, a scalar, plain uint8 whose chunk views must
    never be taken as free memory) and a wrong one is still refused after the memory was reused."""
    rng = np.random.default_rng(5)
    arrays = [rng.normal(size=(64, 32, 32)).astype(np.float32), np.ones((64, 32, 32), np.float32),
              rng.normal(size=(50, 30, 20)).astype(np.float32), rng.integers(0, 255, (40, 33), np.uint8),
              np.float64(2.5), rng.normal(size=(64, 32, 32)).astype(np.float32)]
    chunks = [(16, 16, 16), (16, 16, 16), (16, 16, 16), (8, 16), None, (16, 16, 16)]
    buffers = Buffers()
    seen: set[int] = set()
    taken = buffers.take

    def take(shape, dtype):  # noqa: ANN001, ANN202 - records which memory each slab gets
        arr = taken(shape, dtype)
        seen.add(arr.__array_interface__["data"][0])
        return arr

    buffers.take = take  # type: ignore[method-assign]
    n_slabs = 0
    for arr, ch in zip(arrays, chunks):
        h, meta, files = stored(store, arr, ch)
        receiver = ArrayReceiver(h, check_array_metadata(h, meta), buffers)
        for key in receiver.keys():
            receiver.add(key, files[key])
        receiver.finish()
        n_slabs += -(-arr.shape[0] // ch[0]) if arr.ndim else 1
    assert len(seen) < n_slabs / 2  # reused (28 slabs and 64 decoded chunks here in a handful of buffers)
    assert all(b.flags.writeable and b.flags.owndata for free in buffers._free.values() for b in free)

    h, meta, files = stored(store, arrays[0], chunks[0])
    key = sorted(files)[5]
    bad = bytearray(files[key])
    bad[100] ^= 1
    forged = metadata_document(arrays[0], chunks[0], h, {k: chunk_digest(v) for k, v in {**files, key: bytes(bad)}.items()},
                               compressed=False)  # a lying sender: digests of what it sends
    receiver = ArrayReceiver(h, check_array_metadata(h, forged), buffers)
    for k in receiver.keys():
        receiver.add(k, bytes(bad) if k == key else files[k])
    with pytest.raises(CorruptObject, match="does not match its hash"):
        receiver.finish()
