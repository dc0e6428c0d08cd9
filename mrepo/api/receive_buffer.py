"""h11's receive buffer and uvicorn's request body without the copies of a large request body.

h11 appends every piece read from the socket to one ``bytearray`` and hands body data out as
slices of it: a body byte is copied three to four times (append, two slices, the shift of what
follows) before uvicorn sees it; for a 100 MB batch upload that was most of the event loop's
time. :class:`ViewReceiveBuffer` keeps the newest piece as it came off the socket and hands body
data out as read-only ``memoryview`` slices of it (h11's ``Data.data`` is any bytes-like
object; uvicorn copies it into the request body at once). Header and chunk-size lines are
parsed as before: the piece is folded into the ``bytearray`` only when a line is incomplete.

uvicorn then appends each piece to a ``bytearray`` (``cycle.body += data``) and hands the app
``bytes(cycle.body)``: two more copies. :class:`BodyPieces` keeps the pieces (the views above)
and joins them once when the app takes them (:func:`install_body_pieces`): one copy of a body
byte in user space between the socket and the app instead of three to four; none for an app that
asks for the pieces themselves (:data:`BODY_VIEWS`: the batch upload, whose pack reader joins each
frame once).
"""

from __future__ import annotations

from typing import Any

from h11._receivebuffer import ReceiveBuffer
from uvicorn.protocols.http import h11_impl

__all__ = ["BODY_VIEWS", "BodyPieces", "ViewReceiveBuffer", "install", "install_body_pieces"]


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
    """Give an h11 connection a :class:`ViewReceiveBuffer` (before it received anything); False
    when this h11 keeps its buffer elsewhere (it then works as it came)."""
    buf = getattr(conn, "_receive_buffer", None)
    if type(buf) is not ReceiveBuffer or len(buf):
        return False
    conn._receive_buffer = ViewReceiveBuffer()  # type: ignore[attr-defined]
    return True


#: Scope key an app sets (to True) before it reads a request body whose pieces it takes as read-only
#: ``memoryview``\ s of the socket's immutable pieces (:class:`PiecesCycle`); other requests get ``bytes``.
BODY_VIEWS = "mrepo.body_views"


class BodyPieces:
    """A request body being received, as the pieces h11 handed out (bytes-like, read-only views
    of the socket's pieces); ``bytes()`` joins them once (a single ``bytes`` piece: no copy), or,
    with ``keep`` set, leaves them to the caller (returns ``b""``)."""

    __slots__ = ("keep", "pieces", "size")

    def __init__(self) -> None:
        self.pieces: list[Any] = []
        self.size = 0
        self.keep = False

    def __iadd__(self, data: Any) -> BodyPieces:
        if len(data):
            self.pieces.append(data)
            self.size += len(data)
        return self

    def __len__(self) -> int:
        return self.size

    def __bytes__(self) -> bytes:
        return b"" if self.keep else b"".join(self.pieces)


class PiecesCycle(h11_impl.RequestResponseCycle):
    """uvicorn's request/response cycle with its body kept as :class:`BodyPieces`.

    A request whose scope has :data:`BODY_VIEWS` set gets each piece as h11 handed it out, one
    per message: a read-only ``memoryview`` of an immutable socket piece (a ``bytearray``, h11's own
    copy, where it parsed the piece from its buffer after a line cut apart), so a large upload's
    bytes are not copied once more on the event loop before the app parses them
    (:class:`mrepo.store.pack.PackReader` keeps such views and joins a frame once).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.body = BodyPieces()  # type: ignore[assignment]
        #: Pieces taken from uvicorn and not yet handed out (views mode), and its more_body after them.
        self._waiting: list[Any] = []
        self._more = False

    async def receive(self) -> Any:
        if self._waiting:  # views mode: one piece per message, the rest of uvicorn's last message first
            piece = self._waiting.pop(0)
            return {"type": "http.request", "body": piece, "more_body": bool(self._waiting) or self._more}
        body = self.body  # h11 appends to this object until uvicorn takes it (``+=`` returns it)
        body.keep = bool(self.scope.get(BODY_VIEWS))  # type: ignore[union-attr]
        message = await super().receive()  # takes bytes(self.body), then sets a bytearray
        self.body = BodyPieces()  # type: ignore[assignment]  # no await in between: no piece is lost
        if body.keep and message.get("type") == "http.request" and body.pieces:  # type: ignore[union-attr]
            pieces = body.pieces  # type: ignore[union-attr]
            self._waiting, self._more = pieces[1:], bool(message.get("more_body"))
            message["body"], message["more_body"] = pieces[0], bool(self._waiting) or self._more
        return message


def install_body_pieces(high_water: int | None = None) -> None:
    """Make uvicorn's h11 protocol build :class:`PiecesCycle` cycles (process-wide: the same
    messages, fewer copies). ``high_water``: body bytes a connection may hold for the app before
    uvicorn stops reading its socket (uvicorn's 64 KiB is below one socket read of ``mrepo serve``,
    so it stopped and restarted reading, two ``epoll_ctl`` calls and their Python around them, for
    every piece of a large upload; at one read's size it stops only when the app falls behind by
    more than a read, so a connection still holds at most two reads)."""
    h11_impl.RequestResponseCycle = PiecesCycle  # type: ignore[misc]
    if high_water is not None:
        h11_impl.HIGH_WATER_LIMIT = max(high_water, 1 << 16)  # type: ignore[attr-defined]
