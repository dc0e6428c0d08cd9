"""STAR files: validated reading (clear one-line errors) and exact writing.

Reading is one validating pass (faster than ``starfile``, which it replaces for
reading): the file is UTF-8, every loop row has as many values as the loop has
columns (with line numbers), values are typed per column as ``starfile`` does
(all integers -> int64, all numbers -> float64, else str); helpers check required
columns and finite numbers. Errors are :class:`~mrepo.store.InvalidInput`
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

__all__ = ["read_star", "block", "require_columns", "numeric", "positive", "strings", "integers", "write_star",
           "check_path", "value_line", "where", "UNDERFOCUS"]

#: DataFrame.attrs key: (file line of a loop's first row, row count) when its rows are consecutive lines
#: ({label: line} for simple blocks); absent when unknown
LINES = "mrepo.star.lines"
#: ``why`` of :func:`positive` for RELION defocus columns
UNDERFOCUS = " (RELION defocus is positive for underfocus)"


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


def _parse(path: Path) -> dict[str, pd.DataFrame]:
    """Validate and parse in one pass: UTF-8, loop shapes with line numbers (starfile silently mis-parses
    ragged loops), then typed columns (all integers -> int64, else all numbers -> float64, else str)."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InvalidInput(f"{path}: line {line} is not valid UTF-8 (byte {data[exc.start]:#04x})") from None
    blocks: dict[str, pd.DataFrame] = {}
    name: str | None = None
    simple: dict[str, list[str]] = {}
    columns: list[str] | None = None
    rows: list[list[str]] = []
    lines: list[int] = []  # file line of each loop row (simple blocks: of each label)
    in_loop_body = False

    def close() -> None:
        nonlocal columns, rows, simple, lines
        if name is None:
            return
        if columns is not None:
            blocks[name] = _frame(columns, rows, lines)
        elif simple:
            blocks[name] = _frame(list(simple), [[v[0] for v in simple.values()]], [])
            blocks[name].attrs[LINES] = {k: int(v[1]) for k, v in simple.items()}
        elif name not in blocks:
            blocks[name] = pd.DataFrame()
        columns, rows, simple, lines = None, [], {}, []

    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            if not line and in_loop_body:  # a blank line ends the loop's rows
                close()
                in_loop_body = False
            continue
        if line.startswith("data_"):
            close()
            name = line[5:].split()[0] if len(line) > 5 else ""
            in_loop_body = False
        elif line.startswith("loop_"):
            if name is None:
                raise InvalidInput(f"{path}: line {number}: loop_ before any data_ block")
            close()
            columns, rows, in_loop_body = [], [], False
        elif line.startswith("_"):
            if columns is not None and not in_loop_body:
                columns.append(line.split()[0][1:])
            elif name is None:
                raise InvalidInput(f"{path}: line {number}: label {line.split()[0]!r} before any data_ block")
            elif columns is not None and in_loop_body:
                raise InvalidInput(f"{path}: line {number}: label {line.split()[0]!r} inside loop data")
            else:
                values = _split(line, path, number)
                if len(values) != 2:
                    raise InvalidInput(f"{path}: line {number}: expected '_label value', got {line!r}")
                simple[values[0][1:]] = [values[1], str(number)]
        elif columns is not None:
            in_loop_body = True
            values = _split(line, path, number)
            if len(values) != len(columns):
                raise InvalidInput(f"{path}: line {number}: {len(values)} values for {len(columns)} columns "
                                   f"({line[:60]!r})")
            rows.append(values)
            lines.append(number)
        else:
            raise InvalidInput(f"{path}: line {number}: unexpected text {line[:60]!r}")
    if name is None:
        raise InvalidInput(f"{path}: not a STAR file (no data_ block)")
    close()
    return blocks


def _typed(values: list[str]) -> list | np.ndarray:
    """A column as int64 when every value is an integer, float64 when every value is a number, else str."""
    if any("_" in v for v in values):  # Python's int()/float() accept digit separators; STAR does not
        return values
    try:
        return np.array([int(v) for v in values], dtype=np.int64)
    except (ValueError, OverflowError):
        pass
    try:
        return np.array([float(v) for v in values], dtype=np.float64)
    except ValueError:
        return values


def _frame(columns: list[str], rows: list[list[str]], lines: list[int]) -> pd.DataFrame:
    cols = list(zip(*rows)) if rows else [() for _ in columns]
    data = {}
    for c, v in zip(columns, cols):
        typed = _typed(list(v))
        data[c] = typed if isinstance(typed, np.ndarray) else np.array(typed, dtype=object)
    df = pd.DataFrame(data, columns=columns, copy=False)
    if lines and lines[-1] - lines[0] == len(lines) - 1:  # consecutive rows: one number (pandas copies attrs
        df.attrs[LINES] = (lines[0], len(lines))  # on every column access, so they must stay tiny)
    return df


def value_line(df: pd.DataFrame, column: str, row: int) -> int | None:
    """The file line of ``df[column]`` row ``row`` (0-based) as read by :func:`read_star`; None when unknown
    (rows not on consecutive lines, or the frame filtered since)."""
    lines = df.attrs.get(LINES)
    if isinstance(lines, dict):
        return lines.get(column)
    if isinstance(lines, tuple) and lines[1] == len(df) and 0 <= row < len(df) and df.index.equals(
            pd.RangeIndex(len(df))):  # rows as read (a filtered or reordered frame keeps attrs, not its lines)
        return lines[0] + row
    return None


def where(df: pd.DataFrame, column: str, row: int, path: str | Path, block_name: str) -> str:
    """``<file>: line <n>: data_<block> column <c> row <r>`` (the line when known) for one-line errors."""
    line = value_line(df, column, row)
    at = f" line {line}:" if line is not None else ""
    return f"{path}:{at} data_{block_name} column {column} row {row + 1}"


def positive(df: pd.DataFrame, column: str, path: str | Path, block_name: str, *, allow_zero: bool = False,
             unit: str = "", why: str = "") -> np.ndarray:
    """Column as float64 (:func:`numeric`) whose values must be > 0 (>= 0 with ``allow_zero``); the first
    other value is refused in one line naming file, line, block, column, row and value (``unit`` after the
    value, ``why`` after the verdict)."""
    values = numeric(df, column, path, block_name)
    bad = np.nonzero(values < 0 if allow_zero else values <= 0)[0]
    if len(bad):
        i = int(bad[0])
        verdict = "negative" if allow_zero else "not positive"
        raise InvalidInput(f"{where(df, column, i, path, block_name)}: {float(values[i])!r}{unit} is {verdict}{why}")
    return values


def _split(line: str, path: Path, number: int) -> list[str]:
    if "'" not in line and '"' not in line:
        return line.split()
    try:
        return shlex.split(line, posix=True)
    except ValueError:
        raise InvalidInput(f"{path}: line {number}: unbalanced quotes in {line[:60]!r}") from None


def read_star(path: str | Path) -> dict[str, pd.DataFrame]:
    """All blocks of a STAR file by name (``data_`` prefix removed); simple blocks are one-row frames."""
    return _parse(check_path(path, "STAR file"))


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
            found = ", ".join(str(x) for x in list(df.columns)[:10]) or "none"
            more = f" (+{len(df.columns) - 10} more)" if len(df.columns) > 10 else ""
            raise InvalidInput(f"{path}: block data_{block_name} lacks required column {c} (found: {found}{more})")


def numeric(df: pd.DataFrame, column: str, path: str | Path, block_name: str, *, finite: bool = True) -> np.ndarray:
    """Column as float64, naming row and value of the first non-numeric or non-finite entry."""
    require_columns(df, [column], path, block_name)
    series = df[column]
    if series.dtype.kind in "iuf":  # typed by the parser: only finiteness is left to check
        out = series.to_numpy(dtype=np.float64)
        bad = np.nonzero(~np.isfinite(out))[0] if finite else []
        if len(bad):
            raise InvalidInput(f"{path}: data_{block_name} column {column} row {bad[0] + 1}: "
                               f"{series.iloc[bad[0]]!r} is not finite")
        return out
    values = series.tolist()
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
    require_columns(df, [column], path, block_name)
    if df[column].dtype.kind == "i":  # typed int64 by the parser: no round trip through float64
        return df[column].to_numpy(dtype=np.int64, copy=True)
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
