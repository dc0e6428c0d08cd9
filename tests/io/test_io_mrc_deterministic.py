"""MRC files written by mrepo are byte-identical whenever they are written (raw data identity)."""

from __future__ import annotations

import time

import mrcfile
import numpy as np

from mrepo.io.mrc import write_mrc


def test_same_data_same_bytes_at_different_times(tmp_path) -> None:
    data = np.random.default_rng(0).normal(size=(3, 8, 8)).astype(np.float32)
    a = write_mrc(tmp_path / "a.mrc", data, 1.5)
    time.sleep(1.1)  # mrcfile's default label would carry a new time stamp
    b = write_mrc(tmp_path / "b.mrc", data, 1.5)
    assert a.read_bytes() == b.read_bytes()
    assert mrcfile.validate(str(a))
    with mrcfile.open(a) as m:
        np.testing.assert_array_equal(m.data, data)
        assert np.isclose(float(m.voxel_size.x), 1.5)


def test_keep_dtype_writes_int16_as_mode_1_and_other_types_as_float32(tmp_path) -> None:
    """M export writes stack sections in the stack's own type (int16 tilts stay 2 bytes a pixel)."""
    counts = np.random.default_rng(1).integers(-5, 40, size=(1, 8, 8)).astype(np.int16)
    a = write_mrc(tmp_path / "a.mrc", counts, 2.0, volume=False, keep_dtype=True)
    with mrcfile.open(a) as m:
        assert int(m.header.mode) == 1 and m.data.dtype == np.int16 and int(m.header.ispg) == 0  # stack
        np.testing.assert_array_equal(m.data.reshape(counts.shape), counts)
    b = write_mrc(tmp_path / "b.mrc", counts.astype(np.float64), 2.0, volume=False, keep_dtype=True)
    with mrcfile.open(b) as m:
        assert int(m.header.mode) == 2 and m.data.dtype == np.float32
