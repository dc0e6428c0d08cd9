"""STAR files: validated reading (clear one-line errors) and exact writing.

Reading checks what ``starfile`` does not: the file is UTF-8, every loop row has
as many values as the loop has columns, required columns exist and numeric
columns hold finite numbers. Errors are :class:`~mrepo.store.InvalidInput`
naming the file, block, line or column and the value.

Writing uses ``starfile`` with floats in Python's shortest round-trip form
(``repr``), so a value written and read back is bit-identical.
No Fourier layout is involved in this module.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import starfile

from ..store import InvalidInput

__all__ = ["read_star", "block", "require_columns", "numeric", "strings", "integers", "write_star", "check_path"]


def check_path(path: str | Path, what: str = "file") -> Path:
    """``path`` as a Path, refusing names that are not valid UTF-8 or files that do not exist."""
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{what} name {text.encode('utf-8', 'surrogateescape')!r} is not valid UTF-8") from None
    p = Path(text)
    if not p.is_file():
        raise InvalidInput(f"{what} {text} does not exist or is not a file")
    return p


def _precheck(path: Path) -> None:
    """UTF-8 and loop-shape checks with line numbers (starfile silently mis-parses ragged loops)."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InvalidInput(f"{path}: line {line} is not valid UTF-8 (byte {data[exc.start]:#04x})") from None
    n_blocks = 0
    columns: list[str] | None = None
    in_loop_body = False
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            if not line and in_loop_body:
                columns, in_loop_body = None, False
            continue
        if line.startswith("data_"):
            n_blocks += 1
            columns, in_loop_body = None, False
        elif line.startswith("loop_"):
            if n_blocks == 0:
                raise InvalidInput(f"{path}: line {number}: loop_ before any data_ block")
            columns, in_loop_body = [], False
        elif line.startswith("_"):
            if columns is not None and not in_loop_body:
                columns.append(line.split()[0][1:])
            elif n_blocks == 0:
                raise InvalidInput(f"{path}: line {number}: label {line.split()[0]!r} before any data_ block")
            elif columns is not None and in_loop_body:
                raise InvalidInput(f"{path}: line {number}: label {line.split()[0]!r} inside loop data")
            elif len(_split(line, path, number)) != 2:
                raise InvalidInput(f"{path}: line {number}: expected '_label value', got {line!r}")
        elif columns is not None:
            in_loop_body = True
            values = _split(line, path, number)
            if len(values) != len(columns):
                raise InvalidInput(f"{path}: line {number}: {len(values)} values for {len(columns)} columns "
                                   f"({line[:60]!r})")
        else:
            raise InvalidInput(f"{path}: line {number}: unexpected text {line[:60]!r}")
    if n_blocks == 0:
        raise InvalidInput(f"{path}: not a STAR file (no data_ block)")


def _split(line: str, path: Path, number: int) -> list[str]:
    try:
        return shlex.split(line, posix=True)
    except ValueError:
        raise InvalidInput(f"{path}: line {number}: unbalanced quotes in {line[:60]!r}") from None


def read_star(path: str | Path) -> dict[str, pd.DataFrame]:
    """All blocks of a STAR file by name (``data_`` prefix removed); simple blocks are one-row frames."""
    p = check_path(path, "STAR file")
    _precheck(p)
    try:
        blocks = starfile.read(p, always_dict=True)
    except Exception as exc:  # noqa: BLE001 - starfile raises many types
        raise InvalidInput(f"{p}: malformed STAR file ({type(exc).__name__}: {exc})") from None
    out: dict[str, pd.DataFrame] = {}
    for name, value in blocks.items():
        if isinstance(value, dict):
            value = pd.DataFrame({k: [v] for k, v in value.items()})
        out[name] = value
    return out


def block(blocks: dict[str, pd.DataFrame], name: str | Iterable[str], path: str | Path) -> pd.DataFrame:
    """The block ``name`` (or the first of several candidate names), else a clear error."""
    names = [name] if isinstance(name, str) else list(name)
    for n in names:
        if n in blocks:
            return blocks[n]
    raise InvalidInput(f"{path}: no data_{names[0]} block (found: {', '.join(blocks) or 'none'})")


def require_columns(df: pd.DataFrame, columns: Iterable[str], path: str | Path, block_name: str) -> None:
    """Raise InvalidInput naming the first missing column."""
    for c in columns:
        if c not in df.columns:
            raise InvalidInput(f"{path}: block data_{block_name} lacks required column {c}")


def numeric(df: pd.DataFrame, column: str, path: str | Path, block_name: str, *, finite: bool = True) -> np.ndarray:
    """Column as float64, naming row and value of the first non-numeric or non-finite entry."""
    require_columns(df, [column], path, block_name)
    values = df[column].tolist()
    out = np.empty(len(values), dtype=np.float64)
    for i, v in enumerate(values):
        try:
            out[i] = float(v)
        except (TypeError, ValueError):
            raise InvalidInput(f"{path}: data_{block_name} column {column} row {i + 1}: {v!r} is not a number") \
                from None
        if finite and not math.isfinite(out[i]):
            raise InvalidInput(f"{path}: data_{block_name} column {column} row {i + 1}: {v!r} is not finite")
    return out


def integers(df: pd.DataFrame, column: str, path: str | Path, block_name: str) -> np.ndarray:
    """Column as int64 (values must be integral)."""
    vals = numeric(df, column, path, block_name)
    bad = np.nonzero(vals != np.round(vals))[0]
    if len(bad):
        raise InvalidInput(f"{path}: data_{block_name} column {column} row {bad[0] + 1}: {vals[bad[0]]!r} "
                           "is not an integer")
    return vals.astype(np.int64)


def strings(df: pd.DataFrame, column: str, path: str | Path, block_name: str) -> list[str]:
    """Column as a list of str."""
    require_columns(df, [column], path, block_name)
    return [str(v) for v in df[column].tolist()]


def _exact(value: object) -> object:
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    return value


def write_star(path: str | Path, blocks: dict[str, pd.DataFrame | dict]) -> Path:
    """Write blocks (DataFrame -> loop, dict -> simple block) with exact float text."""
    out: dict[str, pd.DataFrame | dict] = {}
    for name, value in blocks.items():
        if isinstance(value, dict):
            out[name] = {k: _exact(v) for k, v in value.items()}
        else:
            df = value.copy()
            for c in df.columns:
                if df[c].dtype.kind == "f":
                    df[c] = [repr(float(v)) for v in df[c].tolist()]
            out[name] = df
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    starfile.write(out, p)
    return p
