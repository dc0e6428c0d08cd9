"""h11's receive buffer without copies of large bodies, for both ends of an HTTP/1.1 connection.

h11 appends every piece read from the socket to one ``bytearray`` and hands body data out as
slices of it: a body byte is copied three to four times (append, two slices, the shift of what
follows) before the application sees it; for a 100 MB batch upload or download that was most of a
receiving thread's time. :class:`ViewReceiveBuffer` keeps the newest piece as it came off the socket
and hands body data out as read-only ``memoryview`` slices of it (h11's ``Data.data`` is any
bytes-like object). Header and chunk-size lines are parsed as before: the piece is folded into the
``bytearray`` only when a line is incomplete.

Used by the server (:mod:`mrepo.api.serving`, request bodies) and by the HTTP client
(:mod:`mrepo.store.http_wire`, response bodies).
"""

from __future__ import annotations

from h11._receivebuffer import ReceiveBuffer

__all__ = ["ViewReceiveBuffer", "install"]


class ViewReceiveBuffer(ReceiveBuffer):
    """A :class:`h11._receivebuffer.ReceiveBuffer` whose unparsed bytes are ``_data`` (a bytearray,
    parsed by h11's own code) followed by ``_tail`` (a view of the last piece received, used only
    while ``_data`` is empty)."""

    def __init__(self) -> None:
        super().__init__()
        self._tail: memoryview | None = None

    def _fold(self) -> None:
        """Move the tail into ``_data`` (h11's line parsing works on ``_data`` alone)."""
        if self._tail is not None:
            self._data += self._tail
            self._tail = None

    def __iadd__(self, byteslike: bytes | bytearray) -> ViewReceiveBuffer:  # type: ignore[override]
        if not self._data and self._tail is None and isinstance(byteslike, bytes):
            self._tail = memoryview(byteslike)  # bytes are immutable: a view stays valid
        else:
            self._fold()
            self._data += byteslike
        return self

    def __len__(self) -> int:
        return len(self._data) + (len(self._tail) if self._tail is not None else 0)

    def __bytes__(self) -> bytes:
        return bytes(self._data) + (bytes(self._tail) if self._tail is not None else b"")

    def _take_tail(self, count: int) -> memoryview:
        tail = self._tail
        assert tail is not None
        out, rest = tail[:count], tail[count:]
        self._tail = rest if len(rest) else None
        self._next_line_search = 0
        self._multiple_lines_search = 0
        return out

    def maybe_extract_at_most(self, count: int) -> memoryview | bytearray | None:  # type: ignore[override]
        if not self._data and self._tail is not None:
            return self._take_tail(count) if count > 0 else None
        return super().maybe_extract_at_most(count)

    def maybe_extract_next_line(self) -> bytearray | None:
        if not self._data and self._tail is not None:
            # a chunk-size line inside the piece: taken without folding the rest of the piece
            idx = self._tail.obj.find(b"\r\n", self._offset_of_tail(), self._offset_of_tail() + len(self._tail))
            if idx != -1:
                return bytearray(self._take_tail(idx - self._offset_of_tail() + 2))
        self._fold()
        return super().maybe_extract_next_line()

    def _offset_of_tail(self) -> int:
        """Where the tail starts in the piece it views."""
        tail = self._tail
        assert tail is not None
        return len(tail.obj) - len(tail)

    def maybe_extract_lines(self) -> list[bytearray] | None:
        self._fold()
        return super().maybe_extract_lines()

    def is_next_line_obviously_invalid_request_line(self) -> bool:
        self._fold()
        return super().is_next_line_obviously_invalid_request_line()


def install(conn: object) -> bool:
    """Give an h11 connection (either role) a :class:`ViewReceiveBuffer` before it received
    anything; False when this h11 keeps its buffer elsewhere (it then works as it came)."""
    buf = getattr(conn, "_receive_buffer", None)
    if type(buf) is not ReceiveBuffer or len(buf):
        return False
    conn._receive_buffer = ViewReceiveBuffer()  # type: ignore[attr-defined]
    return True
