"""The batch stream ("pack") of the HTTP protocol: many store files in one request or answer.

Layout: the magic ``MRPK1\\n``, then frames, then an end frame::

    frame = key length (u16, big-endian) | key (UTF-8) | data length (u64, big-endian) | data
    end   = key length 0

Keys are store keys: ``objects/ab/<62 hex>`` (a record or blob) and ``arrays/<hash>/zarr.json`` or
``arrays/<hash>/c/i/j…`` (a file of a Zarr v3 array). In a pack an array's ``zarr.json`` comes
first and its chunk files follow, so the receiver knows every chunk's digest before it arrives.
The reader is incremental (:meth:`PackReader.feed`), bounds every frame's size and validates
every key, so a hostile peer can neither make it buffer without limit nor name a path
outside the store.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

import numpy as np

from .errors import InvalidInput
from .names import check_object_key

MAGIC = b"MRPK1\n"
_KEY_LEN = struct.Struct(">H")
_DATA_LEN = struct.Struct(">Q")
def check_pack_key(key: str) -> str:
    """``key`` when it names an object or an array file (:func:`mrepo.store.names.check_object_key`,
    the rules every backend and the server use); InvalidInput otherwise."""
    try:
        return check_object_key(key)
    except InvalidInput:
        raise InvalidInput(f"pack names an invalid key {key[:100]!r}") from None


def frame(key: str, data: bytes) -> bytes:
    """One encoded frame."""
    k = key.encode("utf-8")
    return _KEY_LEN.pack(len(k)) + k + _DATA_LEN.pack(len(data)) + data


def frame_header(key: str, size: int) -> bytes:
    """The bytes before a frame's data (for writers that stream the data separately)."""
    k = key.encode("utf-8")
    return _KEY_LEN.pack(len(k)) + k + _DATA_LEN.pack(size)


END = _KEY_LEN.pack(0)


def encode(frames: Iterable[tuple[str, bytes]]) -> Iterator[bytes]:
    """The pack of ``frames`` as byte pieces (magic, frames, end)."""
    yield MAGIC
    for key, data in frames:
        yield frame_header(key, len(data))
        yield data
    yield END


class FramePieces:
    """The data of a frame as it came off the socket, not joined: read-only views of immutable
    pieces, in order (:class:`PackReader` with ``join_from``). ``bytes()`` joins them; a receiver
    that copies them into memory of its own anyway (:meth:`copy_into`) saves the join."""

    __slots__ = ("parts", "size")

    def __init__(self, parts: list[memoryview | bytes], size: int | None = None):
        self.parts = parts
        self.size = sum(len(p) for p in parts) if size is None else size

    def __len__(self) -> int:
        return self.size

    def __bytes__(self) -> bytes:
        return b"".join(self.parts)

    def copy_into(self, out: np.ndarray) -> None:
        """Copy the data into ``out``, a writable uint8 array of :func:`len` bytes (numpy copies
        without holding the GIL)."""
        pos = 0
        for part in self.parts:
            n = len(part)
            out[pos:pos + n] = np.frombuffer(part, dtype=np.uint8)
            pos += n


class PackReader:
    """Incremental decoder: :meth:`feed` bytes, get complete ``(key, data)`` frames back.

    Headers and small frames are parsed from one read buffer. The data of a frame that does not
    fit in the piece it starts in is collected as a list of views of the pieces that carry it
    and joined once when complete: one copy per frame, whatever the piece size (appending
    megabytes to a growing buffer would copy them again at every reallocation).

    ``join_from``: frames of at least this many bytes that arrived in immutable pieces are handed
    out as :class:`FramePieces` instead (no copy here: the server's upload, whose array chunks are
    copied into reused memory in its worker threads instead of joined on its event loop).
    """

    def __init__(self, max_frame: int, *, join_from: int | None = None):
        self.max_frame = max_frame
        self.join_from = join_from
        self._buf = bytearray()
        self._magic = False
        self.done = False
        self.received = 0
        #: The frame whose data is being collected: its key, the views so far and the bytes still due.
        self._key = ""
        self._parts: list[memoryview | bytes] = []
        self._due = 0
        self._size = 0

    def feed(self, data: bytes) -> list[tuple[str, bytes]]:
        if self.done:
            if data:
                raise InvalidInput("pack has data after its end frame")
            return []
        self.received += len(data)
        out: list[tuple[str, bytes]] = []
        view = memoryview(data)
        # views of bytes (or of a read-only view of bytes) stay valid: kept instead of copied
        immutable = isinstance(data, bytes) or (
            isinstance(data, memoryview) and data.readonly and isinstance(data.obj, bytes))
        if self._due:
            take = min(self._due, len(view))
            self._parts.append(view[:take] if immutable else bytes(view[:take]))
            self._due -= take
            if self._due:
                return out
            out.append((self._key, FramePieces(self._parts, self._size) if self._keeps(self._size)
                        else b"".join(self._parts)))
            self._parts = []
            view = view[take:]
            if not view:
                return out
        if self._buf or not self._magic or not immutable:
            self._buf += view
            return self._parse(self._buf, out, buffered=True)
        return self._parse(view, out, buffered=False)

    def _parse(self, buf: bytearray | memoryview, out: list[tuple[str, bytes]], *, buffered: bool
               ) -> list[tuple[str, bytes]]:
        """Frames from ``buf``: the read buffer (``buffered``; what is parsed is removed from it) or
        a view of an immutable piece (what is left, part of a frame header, goes to the buffer).
        A frame whose data goes on in later pieces keeps a view of the piece's part (buffered: a
        copy, the buffer changes) and is joined once when complete."""
        pos = 0
        if not self._magic:
            if len(buf) < len(MAGIC):
                return out
            if bytes(buf[:len(MAGIC)]) != MAGIC:
                raise InvalidInput("not an mrepo pack (bad magic)")
            pos, self._magic = len(MAGIC), True
        try:
            while True:
                if len(buf) - pos < 2:
                    return out
                (klen,) = _KEY_LEN.unpack_from(buf, pos)
                if klen == 0:
                    if len(buf) - pos > 2:
                        raise InvalidInput("pack has data after its end frame")
                    pos += 2
                    self.done = True
                    return out
                if klen > 200:
                    raise InvalidInput(f"pack frame key of {klen} bytes is too long")
                if len(buf) - pos < 2 + klen + 8:
                    return out
                try:
                    key = bytes(buf[pos + 2:pos + 2 + klen]).decode("utf-8")
                except UnicodeDecodeError:
                    raise InvalidInput("pack frame key is not UTF-8") from None
                check_pack_key(key)
                (size,) = _DATA_LEN.unpack_from(buf, pos + 2 + klen)
                if size > self.max_frame:
                    raise InvalidInput(f"pack frame {key} of {size} bytes is larger than the limit ({self.max_frame})")
                start = pos + 2 + klen + 8
                with memoryview(buf) as view:
                    if len(buf) >= start + size:
                        out.append((key, FramePieces([buf[start:start + size]], size)
                                    if not buffered and self._keeps(size) else bytes(view[start:start + size])))
                        pos = start + size
                        continue
                    # the frame goes on in later pieces: keep what is here, collect the rest as views
                    self._key, self._due, self._size = key, start + size - len(buf), size
                    self._parts = [bytes(view[start:]) if buffered else buf[start:]]
                pos = len(buf)
                return out
        finally:
            if buffered:
                del buf[:pos]  # type: ignore[union-attr]
            elif pos < len(buf):
                self._buf += buf[pos:]

    def _keeps(self, size: int) -> bool:
        """True when a frame of ``size`` bytes is handed out in its pieces (``join_from``)."""
        return self.join_from is not None and size >= self.join_from

    def finish(self) -> None:
        """Raise InvalidInput when the stream ended before the end frame."""
        if not self.done:
            raise InvalidInput("pack ended early (truncated stream)")


def decode(pieces: Iterable[bytes], max_frame: int) -> Iterator[tuple[str, bytes]]:
    """Frames of a pack delivered as byte pieces (raises InvalidInput on a truncated or bad pack)."""
    reader = PackReader(max_frame)
    for piece in pieces:
        yield from reader.feed(piece)
    reader.finish()
