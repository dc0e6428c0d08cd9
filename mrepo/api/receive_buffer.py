"""uvicorn's request body without the copies of a large request body.

The server's h11 connections read into :class:`mrepo.store.h11_views.ViewReceiveBuffer`, which hands
body data out as read-only ``memoryview`` slices of the socket's pieces (h11's own buffer copied a
body byte three to four times before uvicorn saw it; for a 100 MB batch upload that was most of the
event loop's time).

uvicorn then appends each piece to a ``bytearray`` (``cycle.body += data``) and hands the app
``bytes(cycle.body)``: two more copies. :class:`BodyPieces` keeps the pieces (the views above)
and joins them once when the app takes them (:func:`install_body_pieces`): one copy of a body
byte in user space between the socket and the app instead of three to four; none for an app that
asks for the pieces themselves (:data:`BODY_VIEWS`: the batch upload, whose pack reader joins each
frame once).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import h11
from uvicorn.protocols.http import h11_impl

from ..store.h11_views import ViewReceiveBuffer, install

__all__ = ["BODY_VIEWS", "ZERO_COPY_SEND", "BodyPieces", "ViewReceiveBuffer", "install", "install_body_pieces"]


#: Scope key an app sets (to True) before it reads a request body whose pieces it takes as read-only
#: ``memoryview``\ s of the socket's immutable pieces (:class:`PiecesCycle`); other requests get ``bytes``.
BODY_VIEWS = "mrepo.body_views"
#: ASGI's zero-copy send extension (asgi.readthedocs.io, "Zero Copy Send"): a message of this type
#: with ``file`` (an open binary file), ``offset``, ``count`` and ``more_body`` sends that part of the
#: file as the next piece of the response body by ``sendfile(2)``. Offered in every HTTP scope of
#: ``mrepo serve`` (``scope["extensions"]``); the batch download sends chunk files with it.
ZERO_COPY_SEND = "http.response.zerocopysend"


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
        self.scope.setdefault("extensions", {})[ZERO_COPY_SEND] = {}  # type: ignore[typeddict-item]
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

    async def send(self, message: Any) -> None:
        """uvicorn's ``send``, except that a large response body goes out in slices of at most
        :data:`SEND_SLICE` bytes, each written beside its chunk framing and waiting for the socket
        between slices (see :data:`SEND_SLICE`), and :data:`ZERO_COPY_SEND` messages are served."""
        if message.get("type") == ZERO_COPY_SEND:
            await self._send_file(message)
            return
        body = message.get("body", b"") if message.get("type") == "http.response.body" else b""
        if (len(body) <= SEND_SLICE or not self.response_started or self.response_complete
                or self.scope["method"] == "HEAD"):
            await super().send(message)
            return
        view = memoryview(body).cast("B")
        for start in range(0, len(view), SEND_SLICE):
            if self.flow.write_paused and not self.disconnected:
                await self.flow.drain()
            if self.disconnected:
                return
            for part in self.conn.send_with_data_passthrough(h11.Data(data=view[start:start + SEND_SLICE])) or ():
                if len(part):
                    self.transport.write(part)
        if not message.get("more_body", False):
            await super().send({**message, "body": b""})  # the end of the message


    async def _send_file(self, message: Any) -> None:
        """A :data:`ZERO_COPY_SEND` message: ``count`` bytes of ``file`` from ``offset`` as the next piece
        of the body, by ``loop.sendfile`` (``sendfile(2)`` on a plain socket; read and written where
        the transport cannot). A file that holds fewer bytes than announced breaks the answer: the
        connection is closed (the client sees a truncated body) and RuntimeError raised."""
        if not self.response_started or self.response_complete:
            raise RuntimeError(f"Unexpected ASGI message '{ZERO_COPY_SEND}' outside a response body")
        file, offset = message["file"], int(message.get("offset") or 0)
        count = message.get("count")
        count = os.fstat(file.fileno()).st_size - offset if count is None else int(count)
        more = bool(message.get("more_body", False))
        if count > 0 and self.scope["method"] != "HEAD" and not self.disconnected:
            if self.flow.write_paused:
                await self.flow.drain()
            for part in self.conn.send_with_data_passthrough(h11.Data(data=_Announced(count))) or ():
                if self.disconnected:
                    return
                if not isinstance(part, _Announced):
                    self.transport.write(part)
                    continue
                try:
                    sent = await asyncio.get_running_loop().sendfile(self.transport, file, offset, count)
                except ConnectionError:  # the peer left: as uvicorn's send after a disconnect, nothing more
                    self.transport.close()
                    return
                except RuntimeError:  # the transport closed under the send
                    if self.disconnected or self.transport.is_closing():
                        return
                    raise
                if sent != count:
                    self.transport.close()
                    raise RuntimeError(f"{getattr(file, 'name', 'a file')}: {sent} bytes sent, {count} announced "
                                       "(the file changed while it was sent); connection closed")
        if not more:
            await super().send({"type": "http.response.body", "body": b"", "more_body": False})


class _Announced:
    """The length of a file piece announced to h11 (its framing), for :meth:`PiecesCycle._send_file`."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size


#: Largest piece of a response body written to the transport at once. uvicorn joined each body piece
#: with its chunk framing (a copy) and wrote it whole; the socket took part of a large write and
#: asyncio (3.11) copied the rest into its buffer, then shifted that buffer after every later send (a
#: copy of what is left each time: tens of copies of each byte of a 4 MiB chunk). A slice this size
#: goes to an idle loopback socket whole, written from the body's own memory.
SEND_SLICE = 256 << 10


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
