"""Content hashing: domain-separated BLAKE3 over canonical bytes.

Every hashed byte string starts with a tag so that objects of different kinds
can never collide:

- records: ``b"record\\0" + kind + b"\\0" + canonical_json(body)``
- arrays:  ``b"array\\0" + canonical_json({"dtype": "<f4", "shape": [...]}) + b"\\0"``
  followed by the C-order little-endian bytes of the array
- blobs:   ``b"blob\\0" + bytes`` (raw data is hashed whole this way)

Digests are 32 bytes, written as 64 lowercase hex characters.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import blake3
import numpy as np

from .errors import InvalidInput

HASH_ALGORITHM = "blake3"
HASH_HEX_LENGTH = 64
_HASH_RE = re.compile(r"^[0-9a-f]{64}$")

RECORD_TAG = b"record\0"
ARRAY_TAG = b"array\0"
BLOB_TAG = b"blob\0"

#: dtypes an array may have in the store (little-endian forms).
ALLOWED_DTYPES = frozenset(
    ["|b1", "|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "<f2", "<f4", "<f8", "<c8", "<c16"]
)


def is_hash(value: object) -> bool:
    """True for a 64-character lowercase hex digest."""
    return isinstance(value, str) and _HASH_RE.match(value) is not None


def check_hash(value: object, what: str = "hash") -> str:
    """Return ``value`` if it is a valid digest, else raise InvalidInput."""
    if not is_hash(value):
        raise InvalidInput(f"invalid {what} {value!r}: expected 64 lowercase hex characters")
    return value  # type: ignore[return-value]


def _check_json_value(value: Any, path: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInput(f"record field {path or '<root>'} is {value!r}: NaN and Infinity are not allowed")
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise InvalidInput(f"record field {path}: key {k!r} is not a string")
            _check_json_value(v, f"{path}.{k}" if path else k)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_json_value(v, f"{path}[{i}]")


def canonical_json(body: Any) -> bytes:
    """Canonical JSON: UTF-8, sorted keys, no insignificant white space, no NaN/Infinity.

    Floats are written in Python's shortest round-trip form (``repr``), which is
    what ``json.dumps`` uses. Integral floats stay floats (``1.0``), so a record
    keeps the type it was given.
    """
    _check_json_value(body, "")
    try:
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"record is not canonical JSON: {exc}") from None
    return text.encode("utf-8")


def record_bytes(kind: str, body: Any) -> bytes:
    """The exact bytes a record is hashed and stored as."""
    if not kind or "\0" in kind or not kind.isascii():
        raise InvalidInput(f"invalid record kind {kind!r}")
    return RECORD_TAG + kind.encode("ascii") + b"\0" + canonical_json(body)


def parse_record_bytes(data: bytes) -> tuple[str, Any]:
    """Inverse of :func:`record_bytes`: returns (kind, body)."""
    if not data.startswith(RECORD_TAG):
        raise ValueError("not a record")
    rest = data[len(RECORD_TAG):]
    kind, sep, payload = rest.partition(b"\0")
    if not sep:
        raise ValueError("record has no kind terminator")
    return kind.decode("ascii"), json.loads(payload.decode("utf-8"))


def hash_bytes(data: bytes) -> str:
    """BLAKE3 hex digest of already-tagged bytes."""
    return blake3.blake3(data).hexdigest()


def hash_record(kind: str, body: Any) -> str:
    """Hash of a record of the given kind."""
    return hash_bytes(record_bytes(kind, body))


def hash_blob(data: bytes) -> str:
    """Hash of a blob (raw bytes)."""
    h = blake3.blake3(BLOB_TAG)
    h.update(data)
    return h.hexdigest()


def hash_file(path: str | Path, chunk_size: int = 8 << 20, *, tagged: bool = True) -> str:
    """Blob hash of a whole file, streamed (raw data is hashed whole); ``tagged=False``: the BLAKE3 of
    the file's bytes as they are (a stored blob file, which holds its tag)."""
    h = blake3.blake3(BLOB_TAG if tagged else b"")
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            h.update(chunk)
    return h.hexdigest()


#: (path, tagged) -> (size, mtime_ns, ctime_ns, inode, hash): files already hashed by this process
_FILE_HASHES: dict[tuple[str, bool], tuple[int, int, int, int, str]] = {}
#: a file must be unchanged this long (ns) before its hash is remembered
_SETTLED_NS = 1_000_000_000


def hash_file_cached(path: str | Path, *, tagged: bool = True) -> str:
    """:func:`hash_file` (``tagged``: the blob tag prepended, as raw data is hashed) or, untagged, the
    BLAKE3 of the file's bytes as they are (a stored blob file, which holds its tag), computed once
    per process while the file's size, modification and change times and inode stay the same
    (any write changes the change time), so raw data is not re-hashed every refinement iteration.
    A file changed less than :data:`_SETTLED_NS` before it is hashed is not remembered: a write
    within the file system's time granularity could leave its times unchanged ("racy git")."""
    path = Path(path)
    started = time.time_ns()
    st = path.stat()
    stamp = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    key = (str(path.resolve()), tagged)
    got = _FILE_HASHES.get(key)
    if got is not None and got[:4] == stamp:
        return got[4]
    digest = hash_file(path, tagged=tagged)
    st = path.stat()
    settled = started - max(st.st_mtime_ns, st.st_ctime_ns) > _SETTLED_NS
    if settled and (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino) == stamp:  # unchanged while read
        _FILE_HASHES[key] = (*stamp, digest)
    return digest


def hash_stream(chunks: Iterable[bytes]) -> str:
    """Blob hash of bytes delivered in chunks."""
    h = blake3.blake3(BLOB_TAG)
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()


def canonical_dtype(dtype: np.dtype) -> str:
    """Little-endian dtype string used in array headers (e.g. '<f4', '|u1')."""
    dt = np.dtype(dtype)
    if dt.byteorder == ">" or (dt.byteorder == "=" and not np.little_endian):
        dt = dt.newbyteorder("<")
    s = dt.str
    if s not in ALLOWED_DTYPES:
        raise InvalidInput(f"unsupported array dtype {dtype!s}")
    return s


def array_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """Tagged header that precedes the array bytes in its hash."""
    header = {"dtype": canonical_dtype(dtype), "shape": [int(s) for s in shape]}
    return ARRAY_TAG + canonical_json(header) + b"\0"


def as_canonical_array(array: np.ndarray) -> np.ndarray:
    """C-contiguous little-endian copy (or view) of ``array``."""
    arr = np.asarray(array)
    dt = np.dtype(canonical_dtype(arr.dtype))
    return np.asarray(arr, dtype=dt, order="C")


def hash_array(array: np.ndarray) -> str:
    """Hash of an array's dtype, shape and C-order little-endian bytes.

    Independent of chunking, compression and storage backend by construction.
    """
    arr = as_canonical_array(array)
    h = blake3.blake3(array_header(arr.dtype, arr.shape))
    h.update(memoryview(arr).cast("B") if arr.size else b"")
    return h.hexdigest()
