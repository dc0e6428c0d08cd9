"""A tiny PNG encoder (8-bit grayscale, filter type 0, zlib) and slice rendering for the web view."""

from __future__ import annotations

import struct
import zlib

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a (height, width) uint8 grayscale image (row 0 at the top)."""
    img = np.asarray(image)
    if img.ndim != 2 or img.dtype != np.uint8 or 0 in img.shape:
        raise ValueError(f"encode_png needs a non-empty 2-D uint8 image, got {img.dtype} {img.shape}")
    h, w = img.shape
    rows = np.concatenate([np.zeros((h, 1), np.uint8), np.ascontiguousarray(img)], axis=1)  # filter byte 0
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)  # 8-bit, grayscale, deflate, filter 0, no interlace
    return PNG_SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)) + \
        _chunk(b"IEND", b"")


def to_uint8(values: np.ndarray, low_pct: float = 0.5, high_pct: float = 99.5) -> np.ndarray:
    """Linear grey levels: the ``low_pct``..``high_pct`` percentile range mapped onto 0..255."""
    v = np.asarray(values, dtype=np.float64)
    finite = v[np.isfinite(v)]
    if finite.size == 0:
        return np.zeros(v.shape, np.uint8)
    lo, hi = np.percentile(finite, [low_pct, high_pct])
    if hi <= lo:
        return np.full(v.shape, 128 if finite.size else 0, np.uint8)
    scaled = (np.nan_to_num(v, nan=lo) - lo) / (hi - lo)
    return np.clip(np.rint(scaled * 255.0), 0, 255).astype(np.uint8)


def central_slice(volume: np.ndarray, axis: int = 0) -> np.ndarray:
    """The central section of a (z, y, x) volume perpendicular to ``axis`` (index N // 2).

    axis 0 gives the (y, x) plane, 1 the (z, x) plane, 2 the (z, y) plane.
    """
    vol = np.asarray(volume)
    if vol.ndim != 3:
        raise ValueError(f"central_slice needs a 3-D (z, y, x) volume, got shape {vol.shape}")
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
    return np.take(vol, vol.shape[axis] // 2, axis=axis)
