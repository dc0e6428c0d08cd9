"""Running the server: uvicorn with a deadline for request headers (slowloris) and idle keep-alive.

uvicorn's ``timeout_keep_alive`` closes idle connections between requests, but a client that
sends its request headers one byte at a time keeps a connection (and a slot) forever.
:class:`GuardedH11Protocol` gives every request ``header_timeout`` seconds from the connection
(or the end of the previous answer) until its headers are complete, then closes the
connection. Slow bodies are cut by the ASGI middleware (:mod:`mrepo.api.middleware`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..store.heap import keep_freed_memory
from .receive_buffer import install as install_view_buffer
from .receive_buffer import install_body_pieces

#: Seconds a client has to send a request's headers.
HEADER_TIMEOUT = 10.0
#: Seconds an idle keep-alive connection stays open.
KEEP_ALIVE = 5
#: Most bytes one socket read takes (asyncio's default is 256 KiB): a large upload passes through
#: h11, uvicorn and the app in a quarter of the pieces, each with its own per-piece overhead.
READ_BYTES = 1 << 20


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for request headers."""

    header_timeout: float = HEADER_TIMEOUT

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        install_view_buffer(self.conn)  # request bodies reach uvicorn as views of the socket's pieces
        if isinstance(getattr(transport, "max_size", None), int):  # asyncio's selector transport
            transport.max_size = max(transport.max_size, READ_BYTES)  # type: ignore[attr-defined]
        self._header_timer: asyncio.TimerHandle | None = None
        self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _cancel_header_timer(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        waiting = self.conn.their_state is h11.IDLE and (self.cycle is None or self.cycle.response_complete)
        if waiting and not self.transport.is_closing():
            self.logger.info("closing a connection whose request headers did not arrive within %.0f s",
                             self.header_timeout)
            self.transport.close()

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:  # headers complete: the request is being handled
            self._cancel_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_header_timer()  # the next request's headers get the same deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)


def server_config(app: Any, host: str, port: int, *, header_timeout: float = HEADER_TIMEOUT,
                  keep_alive: int = KEEP_ALIVE, limit_concurrency: int | None = 1000, **kw: Any) -> uvicorn.Config:
    """uvicorn configuration of ``mrepo serve`` (access log off: the app writes its own)."""
    install_body_pieces(READ_BYTES)  # request bodies reach the app joined once, not appended and copied
    protocol = type("GuardedH11", (GuardedH11Protocol,), {"header_timeout": header_timeout})
    return uvicorn.Config(app, host=host, port=port, http=protocol, timeout_keep_alive=keep_alive,
                          limit_concurrency=limit_concurrency, log_level=kw.pop("log_level", "warning"),
                          access_log=False, **kw)


def run(app: Any, host: str, port: int, **kw: Any) -> None:
    """Serve ``app`` until interrupted. The process keeps freed heap memory for reuse
    (:func:`mrepo.store.heap.keep_freed_memory`): blocks up to 64 MiB come from the heap and up to
    256 MiB of free memory at its top stays mapped, so the frames and slabs of one upload reuse the
    pages of the last instead of faulting in fresh ones (measured on a push of three 32 MiB maps: the
    server's page faults 14,700 -> 8,200)."""
    keep_freed_memory()
    uvicorn.Server(server_config(app, host, port, **kw)).run()
