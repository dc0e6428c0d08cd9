"""Interoperability with zarr-python 3.1: mrepo arrays open with ``zarr.open_array``;
arrays written by zarr-python with bytes(+zstd) codecs read back through mrepo."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from zarr.codecs import BytesCodec, ZstdCodec

from mrepo.store import CorruptObject, InvalidInput, ObjectStore, hash_array, open_backend


@pytest.fixture
def store(tmp_path) -> ObjectStore:
    s = ObjectStore(open_backend(str(tmp_path)), max_workers=2)
    yield s
    s.close()


@pytest.mark.parametrize("arr", [
    np.random.default_rng(0).normal(size=(17, 9, 5)).astype(np.float32),
    np.arange(100, dtype=">i4").reshape(10, 10),
    np.array(3.25),
    np.zeros((0, 4), np.float64),
    (np.arange(6) % 2).astype(bool),
    (np.arange(8) + 1j * np.arange(8)).astype(np.complex64),
], ids=["f4-3d", "big-endian-i4", "0d", "empty", "bool", "c8"])
def test_mrepo_arrays_open_with_zarr_python(store: ObjectStore, tmp_path, arr: np.ndarray) -> None:
    h = store.put_array(arr, chunks=tuple(max(1, (s + 2) // 3) for s in arr.shape) or None)
    z = zarr.open_array(str(tmp_path / "arrays" / h), mode="r")
    assert z.shape == arr.shape
    assert z.dtype == arr.dtype.newbyteorder("<")
    np.testing.assert_array_equal(z[...], arr)
    assert z.attrs["mrepo"]["hash"] == h


@pytest.mark.parametrize("compressors", [[ZstdCodec(level=3)], []], ids=["bytes+zstd", "bytes"])
def test_zarr_python_arrays_read_back(store: ObjectStore, tmp_path, compressors) -> None:
    arr = np.random.default_rng(1).integers(-1000, 1000, size=(30, 7)).astype(np.int16)
    h = hash_array(arr)
    z = zarr.create_array(store=str(tmp_path / "arrays" / h), shape=arr.shape, dtype=arr.dtype, chunks=(8, 4),
                          serializer=BytesCodec(), compressors=compressors, fill_value=0)
    z[...] = arr
    assert store.has_array(h)
    np.testing.assert_array_equal(store.get_array(h, verify=True), arr)
    # A zarr-python array put under the wrong hash is caught by verification.
    other = hash_array(arr + 1)
    z2 = zarr.create_array(store=str(tmp_path / "arrays" / other), shape=arr.shape, dtype=arr.dtype,
                           chunks=(8, 4), serializer=BytesCodec(), compressors=compressors, fill_value=0)
    z2[...] = arr
    with pytest.raises(CorruptObject, match="does not match its hash"):
        store.get_array(other, verify=True)


def test_zarr_python_array_with_missing_chunks_reads_fill_value(store: ObjectStore, tmp_path) -> None:
    arr = np.zeros((16, 16), np.float32)
    arr[:8, :8] = 2.5  # zarr-python writes only the non-empty chunk
    h = hash_array(arr)
    z = zarr.create_array(store=str(tmp_path / "arrays" / h), shape=arr.shape, dtype=arr.dtype, chunks=(8, 8),
                          compressors=[ZstdCodec(level=1)], fill_value=0.0)
    z[...] = arr
    np.testing.assert_array_equal(store.get_array(h), arr)


def test_unsupported_codec_is_a_clear_error(store: ObjectStore, tmp_path) -> None:
    from zarr.codecs import GzipCodec

    arr = np.ones((4, 4), np.float32)
    h = hash_array(arr)
    zarr.create_array(store=str(tmp_path / "arrays" / h), shape=arr.shape, dtype=arr.dtype, chunks=(4, 4),
                      compressors=[GzipCodec()], fill_value=0.0)[...] = arr
    with pytest.raises(CorruptObject, match="unsupported codecs"):
        store.get_array(h)


def test_nan_refused_unless_allowed(store: ObjectStore, tmp_path) -> None:
    bad = np.array([1.0, np.nan, np.inf], np.float32)
    with pytest.raises(InvalidInput, match="2 NaN or Inf"):
        store.put_array(bad)
    assert not (tmp_path / "arrays").exists()
    h = store.put_array(bad, allow_nonfinite=True)
    np.testing.assert_array_equal(store.get_array(h), bad)
