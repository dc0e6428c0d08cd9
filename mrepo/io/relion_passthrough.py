"""Lossless passthrough of RELION columns that mrepo does not model.

Every STAR column an importer does not turn into a model value is kept with the
population and written back on export:

* per particle: ``ParticleTable.extra["relion.<label>"]``: numbers as float64 or int64
  (N,), text as uint8 (N, L), zero-padded UTF-8 (the array store holds numbers only);
* per micrograph / tomogram / optics group / tilt: JSON values in ``Item.metadata`` or
  ``Species.metadata`` (:func:`row_values`, :func:`table_values`).

Values are kept as the STAR file gave them (int, float, str), so a round trip writes
every such column back with its value. No Fourier layout is involved in this module.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd

__all__ = ["PREFIX", "encode_text", "decode_text", "particle_columns", "columns_from_extra", "row_values",
           "table_values", "json_value"]

PREFIX = "relion."


def encode_text(values: list[str]) -> np.ndarray:
    """(N, L) uint8: UTF-8 bytes of each string, zero-padded to the longest (L >= 1)."""
    raw = [str(v).encode("utf-8") for v in values]
    width = max([len(r) for r in raw] + [1])
    out = np.zeros((len(raw), width), dtype=np.uint8)
    for i, r in enumerate(raw):
        out[i, :len(r)] = np.frombuffer(r, dtype=np.uint8)
    return out


def decode_text(array: np.ndarray) -> list[str]:
    """Inverse of :func:`encode_text`."""
    a = np.asarray(array, dtype=np.uint8)
    return [bytes(row).rstrip(b"\0").decode("utf-8") for row in a]


def _is_int_column(series: pd.Series) -> bool:
    return series.dtype.kind in "iu"


def particle_columns(df: pd.DataFrame, modelled: Iterable[str]) -> dict[str, np.ndarray]:
    """``relion.<label>`` arrays for every column of ``df`` not in ``modelled`` (rows in file order)."""
    skip = set(modelled)
    out: dict[str, np.ndarray] = {}
    for c in df.columns:
        if c in skip:
            continue
        s = df[c]
        if _is_int_column(s):
            out[PREFIX + c] = s.to_numpy(dtype=np.int64)
        elif s.dtype.kind == "f" and np.isfinite(s.to_numpy()).all():
            out[PREFIX + c] = s.to_numpy(dtype=np.float64)
        else:
            out[PREFIX + c] = encode_text([str(v) for v in s.tolist()])
    return out


def columns_from_extra(extra: dict[str, np.ndarray], order: np.ndarray) -> dict[str, list | np.ndarray]:
    """STAR columns (label -> values in ``order``) from the ``relion.*`` extra columns of a table."""
    out: dict[str, list | np.ndarray] = {}
    for name in sorted(extra):
        if not name.startswith(PREFIX):
            continue
        col = np.asarray(extra[name])[order]
        out[name[len(PREFIX):]] = decode_text(col) if col.ndim == 2 and col.dtype == np.uint8 else col
    return out


def json_value(v: object) -> object:
    """A STAR cell as a JSON-safe value: int, finite float or str."""
    if isinstance(v, (bool, np.bool_)):
        return int(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return f if math.isfinite(f) else str(v)
    return str(v)


def _json_column(series: pd.Series) -> list:
    if series.dtype.kind in "iu":
        return series.to_numpy(dtype=np.int64).tolist()
    if series.dtype.kind == "f" and np.isfinite(series.to_numpy()).all():
        return series.to_numpy(dtype=np.float64).tolist()
    return [json_value(v) for v in series.tolist()]


def row_values(df: pd.DataFrame, row: int, modelled: Iterable[str]) -> dict[str, object]:
    """Unmodelled columns of one row (label -> value)."""
    skip = set(modelled)
    return {c: json_value(df[c].iloc[row]) for c in df.columns if c not in skip}


def table_values(df: pd.DataFrame, modelled: Iterable[str]) -> dict[str, list]:
    """Unmodelled columns of a whole table (label -> list of values in row order)."""
    skip = set(modelled)
    return {c: _json_column(df[c]) for c in df.columns if c not in skip}
