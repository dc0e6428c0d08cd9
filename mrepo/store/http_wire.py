"""httpx's HTTP/1.1 connections (httpcore over h11) adjusted for bodies of many MiB.

Applied once, process-wide, when :mod:`mrepo.store.http_backend` is imported (:func:`install`);
each adjustment keeps httpcore's behaviour where its internals differ from what is expected here:

- socket reads of :data:`SOCKET_READ_BYTES` (httpcore's default is 64 KiB): transfers move arrays of
  many MiB in one answer, and reading 1 MiB at a time halves the per-byte cost of a download;
- request body pieces of :data:`PASSTHROUGH_BYTES` or more go to a plain (non-TLS) socket as they
  are, with their chunk framing beside them in one ``sendmsg``: h11 joined framing and piece into a
  new buffer (a copy of every byte uploaded) and httpcore re-sliced what a partial send left;
- a request body piece that is a :class:`~mrepo.store.file_body.FileBody` (a chunk file of a local
  store) goes to a plain socket by ``sendfile(2)``, from the page cache (read into memory otherwise);
- every connection parses responses from a :class:`mrepo.store.h11_views.ViewReceiveBuffer`: body
  data comes out as views of the socket's pieces instead of slices of h11's growing buffer (two to
  three copies of every byte downloaded);
- a request sent with the extension :data:`BODY_VIEWS` set gets its response body as those read-only
  ``memoryview`` s (of immutable ``bytes``), not copied into new ``bytes`` first: the batch download,
  whose pack reader keeps views and joins each frame once (:class:`mrepo.store.pack.PackReader`).
  Other requests get ``bytes``, as from httpx itself.

Measured on bench_server's pull of three 32 MiB maps (2 cores, client CPU of the pull): 1.10 s
with h11's buffer and ``bytes`` pieces, 0.71 s with both views, against 0.76 s for the same clone
from a local folder.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from typing import Any

import h11
import httpcore

from .file_body import FileBody
from .h11_views import install as install_view_buffer

__all__ = ["BODY_VIEWS", "PASSTHROUGH_BYTES", "SOCKET_READ_BYTES", "install"]

#: Bytes per socket read of an HTTP/1.1 connection.
SOCKET_READ_BYTES = 1 << 20
#: Request body pieces from this size on are sent without being copied (plain sockets).
PASSTHROUGH_BYTES = 64 << 10
#: Request extension (``extensions={BODY_VIEWS: True}``): the response body as read-only memoryviews.
BODY_VIEWS = "mrepo.body_views"

_original: dict[str, Any] = {}


def _send_body_piece(conn: Any, event: Any, timeout: float | None = None) -> None:
    """``HTTP11Connection._send_event`` that writes a large ``h11.Data`` without copying it, and a
    :class:`~mrepo.store.file_body.FileBody` by ``sendfile(2)`` (read into memory where the socket is
    not a plain one)."""
    sock = None
    if type(event) is h11.Data and len(event.data) >= PASSTHROUGH_BYTES:
        sock = conn._network_stream.get_extra_info("socket")
    if not isinstance(sock, socket.socket) or isinstance(sock, ssl.SSLSocket) or not hasattr(sock, "sendmsg"):
        if type(event) is h11.Data and isinstance(event.data, FileBody):
            event = h11.Data(data=event.data.read())
        _original["_send_event"](conn, event, timeout)
        return
    parts: list[memoryview] = []
    try:
        sock.settimeout(timeout)
        for part in conn._h11_state.send_with_data_passthrough(event) or ():
            if isinstance(part, FileBody):
                _send_all(sock, parts, socket.MSG_MORE)  # the framing goes out with the file's first bytes
                parts = []
                part.send(sock)
            elif len(part):
                parts.append(memoryview(part).cast("B"))
        # after a file, its framing's end waits for what follows (MSG_MORE); the end of the body,
        # which httpcore sends next, pushes it out
        _send_all(sock, parts, socket.MSG_MORE if isinstance(event.data, FileBody) else 0)
    except TimeoutError as exc:
        raise httpcore.WriteTimeout(exc) from exc
    except OSError as exc:
        raise httpcore.WriteError(exc) from exc


def _send_all(sock: socket.socket, parts: list[memoryview], flags: int) -> None:
    """Write every part with ``sendmsg`` (partial sends resumed)."""
    while parts:
        sent = sock.sendmsg(parts, [], flags)
        while parts and sent >= len(parts[0]):
            sent -= len(parts.pop(0))
        if sent:
            parts[0] = parts[0][sent:]


def _init_with_view_buffer(conn: Any, *args: Any, **kwargs: Any) -> None:
    """``HTTP11Connection.__init__``, then the view receive buffer on its h11 connection."""
    _original["__init__"](conn, *args, **kwargs)
    install_view_buffer(getattr(conn, "_h11_state", None))


def _receive_response_body(conn: Any, request: Any) -> Iterator[Any]:
    """``HTTP11Connection._receive_response_body``: body pieces as h11 hands them out, as ``bytes``
    unless the request asked for :data:`BODY_VIEWS` (then read-only views of immutable pieces as they
    are; a piece h11 parsed from its own buffer, which it reuses, is copied)."""
    timeout = request.extensions.get("timeout", {}).get("read", None)
    views = bool(request.extensions.get(BODY_VIEWS))
    while True:
        event = conn._receive_event(timeout=timeout)
        if isinstance(event, h11.Data):
            data = event.data
            if views and type(data) is memoryview and data.readonly and type(data.obj) is bytes:
                yield data
            else:
                yield bytes(data)
        elif isinstance(event, (h11.EndOfMessage, h11.PAUSED)):
            break


def install() -> bool:
    """Apply the adjustments above to httpcore's sync HTTP/1.1 connection once; False (nothing
    changed) where httpcore lacks the internals they replace."""
    try:
        cls = httpcore._sync.http11.HTTP11Connection
        needed = (cls.__init__, cls._send_event, cls._receive_response_body, cls._receive_event, cls.READ_NUM_BYTES)
    except AttributeError:
        return False
    if _original:
        return True
    _original.update(__init__=needed[0], _send_event=needed[1], _receive_response_body=needed[2])
    cls.READ_NUM_BYTES = max(cls.READ_NUM_BYTES, SOCKET_READ_BYTES)
    cls.__init__ = _init_with_view_buffer
    cls._send_event = _send_body_piece
    cls._receive_response_body = _receive_response_body
    return True
