"""MRC files: validated header and data reading, and writing with voxel size and origin.

Layouts: volumes (z, y, x), image stacks (n, y, x), single images (y, x) —
``mrcfile``'s order. Voxel size in Å; ``origin`` in Å is the header's origin
field (position of voxel 0). No Fourier layout is involved in this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np

from ..store import InvalidInput
from .star import check_path

__all__ = ["MrcInfo", "mrc_info", "read_mrc", "read_map", "write_mrc"]

_MODE_DTYPES = {0: np.int8, 1: np.int16, 2: np.float32, 6: np.uint16, 12: np.float16}


@dataclass(frozen=True)
class MrcInfo:
    """What an MRC header says: shape (nz, ny, nx) as mrcfile orders it, voxel size (Å, x), dtype."""

    path: Path
    nx: int
    ny: int
    nz: int
    voxel_size: float
    dtype: np.dtype

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.nz, self.ny, self.nx)


def mrc_info(path: str | Path) -> MrcInfo:
    """Read and check the header: known mode, positive sizes, file length matching the header."""
    p = check_path(path, "MRC file")
    try:
        with mrcfile.open(p, header_only=True, permissive=True) as m:
            h = m.header
            nx, ny, nz, mode = int(h.nx), int(h.ny), int(h.nz), int(h.mode)
            next_ = int(h.nsymbt)
            voxel = float(m.voxel_size.x)
    except Exception as exc:  # noqa: BLE001 - mrcfile raises several types
        raise InvalidInput(f"{p}: not a readable MRC file ({exc})") from None
    if mode not in _MODE_DTYPES:
        raise InvalidInput(f"{p}: unsupported MRC mode {mode}")
    if min(nx, ny, nz) < 1:
        raise InvalidInput(f"{p}: MRC header has invalid dimensions {nx} x {ny} x {nz}")
    dtype = np.dtype(_MODE_DTYPES[mode])
    expected = 1024 + next_ + nx * ny * nz * dtype.itemsize
    size = p.stat().st_size
    if size != expected:
        raise InvalidInput(f"{p}: file holds {size} bytes but its header ({nx} x {ny} x {nz}, mode {mode}) "
                           f"implies {expected}{' (truncated)' if size < expected else ''}")
    return MrcInfo(p, nx, ny, nz, voxel, dtype)


def read_mrc(path: str | Path, *, finite: bool = True) -> tuple[np.ndarray, MrcInfo]:
    """Data as float32 (nz, ny, nx) and header info; NaN/Inf refused when ``finite``."""
    info = mrc_info(path)
    with mrcfile.open(info.path, permissive=True) as m:
        data = np.asarray(m.data, dtype=np.float32).reshape(info.shape)
    if finite and not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise InvalidInput(f"{info.path}: {bad} voxels are NaN or Inf")
    return data, info


def read_map(path: str | Path, what: str) -> tuple[np.ndarray, float]:
    """A cubic map (box, box, box) float32 and its voxel size (Å); errors name ``what``."""
    data, info = read_mrc(path)
    if not (info.nx == info.ny == info.nz):
        raise InvalidInput(f"{info.path}: {what} must be a cubic volume, got {info.nx} x {info.ny} x {info.nz}")
    if info.voxel_size <= 0:
        raise InvalidInput(f"{info.path}: {what} has no voxel size in its header")
    return data, info.voxel_size


MRC_LABEL = b"written by mrepo".ljust(80)


#: data types an MRC file holds as they are (mode 0, 1, 6, 12, 2)
MRC_DTYPES = (np.int8, np.int16, np.uint16, np.float16, np.float32)


def write_mrc(path: str | Path, data: np.ndarray, voxel_size: float, *, origin: tuple[float, float, float] | None
              = None, volume: bool = True, keep_dtype: bool = False) -> Path:
    """Write data as float32 (``keep_dtype``: in its own type when MRC has it, e.g. int16 stays 2 bytes a
    pixel) with voxel size (Å) and origin (Å); ``volume=False`` marks an image stack.

    The bytes depend only on the arguments: mrcfile's default label carries the creation
    time, which would change the file's BLAKE3 hash (raw data identity) on every run, so
    the single label is replaced by a fixed one.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    dtype = data.dtype if keep_dtype and data.dtype.type in MRC_DTYPES else np.float32
    with mrcfile.new(p, overwrite=True) as m:
        m.header.label[0] = MRC_LABEL
        m.header.nlabl = 1
        m.set_data(np.ascontiguousarray(data, dtype=dtype))
        if data.ndim == 3 and not volume:
            m.set_image_stack()
        m.voxel_size = float(voxel_size)
        if origin is not None:
            m.header.origin = tuple(float(v) for v in origin)
    return p
