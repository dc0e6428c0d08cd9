"""Hash properties (hypothesis): chunking, compression, memory layout and backend never
change an array's hash; key order never changes a record's hash; floats round-trip."""

from __future__ import annotations

import math
import struct
import uuid

import blake3
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mrepo.store import ObjectStore, canonical_json, hash_array, hash_blob, hash_record, open_backend
from mrepo.store.hashing import ARRAY_TAG, BLOB_TAG, RECORD_TAG

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

DTYPES = st.sampled_from(["<f4", ">f4", "<f8", "<i2", ">i4", "|u1", "<u8", "<c8", "|b1"])


def arrays(max_side: int = 9, max_dims: int = 3):
    return DTYPES.flatmap(lambda dt: hnp.arrays(
        np.dtype(dt), hnp.array_shapes(min_dims=0, max_dims=max_dims, min_side=0, max_side=max_side),
        elements=hnp.from_dtype(np.dtype(dt), allow_nan=False, allow_infinity=False)))


def memory_store() -> ObjectStore:
    return ObjectStore(open_backend(f"memory://props-{uuid.uuid4().hex[:12]}"), max_workers=2)


def reference_hash(arr: np.ndarray) -> str:
    """Independent statement of DESIGN.md's array hash: tag, canonical header, C-order LE bytes."""
    le = arr.astype(arr.dtype.newbyteorder("<")) if arr.dtype.byteorder == ">" else arr
    header = '{"dtype":"%s","shape":[%s]}' % (le.dtype.str, ",".join(str(s) for s in arr.shape))  # noqa: UP031
    return blake3.blake3(ARRAY_TAG + header.encode() + b"\0" + np.ascontiguousarray(le).tobytes()).hexdigest()


@FAST
@given(arr=arrays())
def test_array_hash_matches_the_specification(arr: np.ndarray) -> None:
    assert hash_array(arr) == reference_hash(arr)


@FAST
@given(arr=arrays(), data=st.data())
def test_chunking_never_changes_the_hash(arr: np.ndarray, data: st.DataObject) -> None:
    store = memory_store()
    chunks = tuple(data.draw(st.integers(1, max(1, s) + 2)) for s in arr.shape)
    h = store.put_array(arr, chunks=chunks or None)
    assert h == hash_array(arr)
    back = store.get_array(h, verify=True)
    assert back.shape == arr.shape and back.dtype == arr.dtype.newbyteorder("<")
    np.testing.assert_array_equal(back, arr)
    if arr.ndim:
        assert store.array_meta(h).chunks == chunks


@FAST
@given(arr=arrays(max_dims=2))
def test_layout_and_byte_order_never_change_the_hash(arr: np.ndarray) -> None:
    swapped = arr.astype(arr.dtype.newbyteorder("S"))
    fortran = np.array(arr, order="F")  # (np.asfortranarray would make a 0-d array 1-d)
    padded = np.zeros(arr.shape + (2,), dtype=arr.dtype)
    padded[..., 0] = arr
    strided = padded[..., 0]  # non-contiguous view
    assert hash_array(swapped) == hash_array(fortran) == hash_array(strided) == hash_array(arr)


def test_dtype_and_shape_are_part_of_the_hash() -> None:
    a = np.arange(12, dtype="<i4")
    assert len({hash_array(a), hash_array(a.reshape(3, 4)), hash_array(a.reshape(4, 3)),
                hash_array(a.view("<f4")), hash_array(a.view("<u4"))}) == 5


@pytest.mark.parametrize("level", [None, 1, 9])
@pytest.mark.parametrize("chunks", [(5, 7), (16, 16), (1, 3)])
def test_compression_settings_never_change_the_hash(tmp_path, level: int | None, chunks: tuple[int, int]) -> None:
    """Arrays written by zarr-python with other codecs/levels/chunks under ``arrays/<hash>/`` read
    back through mrepo with the same hash, verified."""
    import zarr
    from zarr.codecs import BytesCodec, ZstdCodec

    arr = np.random.default_rng(3).normal(size=(13, 11)).astype("<f4")
    h = hash_array(arr)
    codecs = [BytesCodec()] + ([] if level is None else [ZstdCodec(level=level)])
    z = zarr.create_array(store=str(tmp_path / "arrays" / h), shape=arr.shape, dtype=arr.dtype, chunks=chunks,
                          serializer=codecs[0], compressors=codecs[1:], fill_value=0.0)
    z[...] = arr
    store = ObjectStore(open_backend(str(tmp_path)), max_workers=2)
    assert store.has_array(h)
    np.testing.assert_array_equal(store.get_array(h, verify=True), arr)


@pytest.mark.s3
def test_backend_never_changes_the_hash(make_url) -> None:
    arr = np.random.default_rng(0).normal(size=(20, 9, 7)).astype(np.float32)
    results = []
    for kind in ("local", "memory", "s3"):
        store = ObjectStore(open_backend(make_url(kind)), max_workers=4)
        h = store.put_array(arr, chunks=(8, 4, 7))
        results.append((h, store.get_array(h, verify=True)))
        store.close()
    assert {h for h, _ in results} == {hash_array(arr)}
    for _, back in results:
        np.testing.assert_array_equal(back, arr)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=5),
    max_leaves=10,
)


def reorder(value, rng):
    """The same JSON value with every dict's keys inserted in a shuffled order."""
    if isinstance(value, dict):
        keys = list(value)
        rng.shuffle(keys)
        return {k: reorder(value[k], rng) for k in keys}
    if isinstance(value, list):
        return [reorder(v, rng) for v in value]
    return value


@settings(max_examples=15, deadline=None)
@given(body=st.dictionaries(st.text(max_size=6), JSON, max_size=6), seed=st.integers(0, 2**32 - 1))
def test_key_order_never_changes_a_record_hash(body: dict, seed: int) -> None:
    import random

    shuffled = reorder(body, random.Random(seed))
    assert canonical_json(shuffled) == canonical_json(body)
    assert hash_record("thing", shuffled) == hash_record("thing", body)
    assert hash_record("thing", body) != hash_record("other", body)


def same_bits(a: float, b: float) -> bool:
    return struct.pack("<d", a) == struct.pack("<d", b)


@FAST
@given(values=st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=20))
def test_floats_round_trip_through_records(values: list[float]) -> None:
    store = memory_store()
    h = store.put_record("floats", {"v": values, "first": values[0]})
    fresh = ObjectStore(store.backend)  # no cache: parse the stored bytes
    body = fresh.get_record(h, "floats")
    assert all(same_bits(a, b) for a, b in zip(body["v"], values))
    assert same_bits(body["first"], values[0])
    assert hash_record("floats", body) == h


@FAST
@given(arr=hnp.arrays(np.float64, hnp.array_shapes(max_dims=2, max_side=6),
                      elements=st.floats(allow_nan=False, allow_infinity=False, width=64)))
def test_floats_round_trip_through_arrays(arr: np.ndarray) -> None:
    store = memory_store()
    back = ObjectStore(store.backend).get_array(store.put_array(arr))
    assert back.tobytes() == arr.tobytes()  # bit-exact, -0.0 and subnormals included


def test_integral_floats_stay_floats_and_negative_zero_survives() -> None:
    assert canonical_json({"a": 1.0, "b": 1, "c": -0.0}) == b'{"a":1.0,"b":1,"c":-0.0}'
    store = memory_store()
    body = ObjectStore(store.backend).get_record(store.put_record("z", {"z": -0.0, "one": 1.0}))
    assert math.copysign(1.0, body["z"]) == -1.0 and isinstance(body["one"], float)


def test_domain_separation() -> None:
    """A blob, a record and an array with the same payload bytes never share a hash."""
    payload = canonical_json({})
    assert hash_blob(payload) == blake3.blake3(BLOB_TAG + payload).hexdigest()
    assert hash_record("x", {}) == blake3.blake3(RECORD_TAG + b"x\0" + payload).hexdigest()
    assert len({hash_blob(payload), hash_record("x", {}), hash_array(np.frombuffer(payload, np.uint8))}) == 3
