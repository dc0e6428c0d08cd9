"""The HTTP client's wire adjustments (mrepo.store.http_wire): responses parse exactly as h11's own
buffer parses them, and httpx reads real responses from a socket intact, as views where asked.

The responses are written by hand onto a raw socket (no mrepo, no uvicorn on the sending side), cut
at odd points with pauses between the pieces, so h11 meets chunk-size lines, CRLFs and bodies split
anywhere, and the client buffer's ``bytearray`` fallback and its view path both run.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import h11
import httpcore
import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

import mrepo.store.http_backend  # noqa: F401  (applies mrepo.store.http_wire)
from mrepo.store import http_wire
from mrepo.store.h11_views import ViewReceiveBuffer
from tests.store.h11_wire import CUTS, chunked, connection, fed_events, messages
from tests.store.socket_server import socket_server


def _response(kind: str, body: bytes, n: int) -> bytes:
    if kind == "length":
        return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    if kind == "no-content":
        return b"HTTP/1.1 204 No Content\r\n\r\n"
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    if kind == "bad-chunk":
        return head + b"zz\r\n" + body + b"\r\n0\r\n\r\n"
    return head + chunked(body, 5 + n, kind == "chunked-trailer")


def _client_events(responses: list[bytes], cuts: list[int], view: bool, close_delimited: bytes | None) -> list[object]:
    """Normalised events of a client connection that sends a GET per response and reads the wire of
    all responses (then, optionally, one read-until-close body) fed in pieces cut at ``cuts``."""
    conn = connection(h11.CLIENT, view)
    wire = b"".join(responses)
    if close_delimited is not None:
        wire += b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + close_delimited
    out: list[object] = []
    body = bytearray()
    total = len(responses) + (close_delimited is not None)
    sent = 0

    def request() -> None:
        nonlocal sent
        conn.send(h11.Request(method="GET", target=f"/r{sent}", headers=[("Host", "x")]))
        conn.send(h11.EndOfMessage())
        sent += 1

    request()
    try:
        for event in fed_events(conn, wire, cuts):
            if isinstance(event, h11.Response):
                out.append(("response", event.status_code, list(event.headers)))
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                out.append(("body", bytes(body), list(event.headers)))
                body.clear()
                if conn.our_state is h11.DONE and conn.their_state is h11.DONE and sent < total:
                    conn.start_next_cycle()
                    request()
        conn.receive_data(b"")
        while (event := conn.next_event()) not in (h11.NEED_DATA, h11.PAUSED):
            out.append(("event", type(event).__name__, bytes(body)))
            if isinstance(event, h11.ConnectionClosed):
                break
            if isinstance(event, h11.EndOfMessage):
                out.append(("body", bytes(body), []))
                body.clear()
    except h11.ProtocolError as exc:
        out.append(("error", type(exc).__name__, bytes(body)))
    return out


@settings(max_examples=300, deadline=None)
@given(responses=messages(["chunked", "chunked-trailer", "length", "no-content", "bad-chunk"]),
       last=st.none() | st.binary(max_size=100), cuts=CUTS)
def test_responses_parse_as_h11(responses: list[tuple[str, bytes]], last: bytes | None, cuts: list[int]) -> None:
    wires = [_response(kind, body, n) for n, (kind, body) in enumerate(responses)]
    assert _client_events(wires, cuts, True, last) == _client_events(wires, cuts, False, last)


def test_every_piece_size_parses_as_h11() -> None:
    wires = [_response(kind, bytes(range(n * 37 % 256)) * 2, n) for n, kind in
             enumerate(["chunked", "length", "chunked-trailer", "no-content", "length", "chunked"])]
    for size in range(1, 65):
        cuts = list(range(size, sum(map(len, wires)) + 40, size))
        assert _client_events(wires, cuts, True, b"tail") == _client_events(wires, cuts, False, b"tail"), size


@contextmanager
def raw_server(answers: dict[str, list[bytes]], pause: float = 0.002) -> Iterator[str]:
    """A hand-written HTTP/1.1 server on 127.0.0.1: for each request (keep-alive, one at a time) it
    writes the pieces listed for its path, pausing between them, so the client reads them apart."""

    def serve(conn: socket.socket, stop: threading.Event) -> None:
        with conn:
            buf = b""
            while not stop.is_set():
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                path = head.split(b" ")[1].decode()
                for piece in answers[path]:
                    conn.sendall(piece)
                    time.sleep(pause)

    with socket_server(serve) as base:
        yield base


def _cut(wire: bytes, sizes: list[int]) -> list[bytes]:
    out, pos, i = [], 0, 0
    while pos < len(wire):
        out.append(wire[pos:pos + sizes[i % len(sizes)]])
        pos += sizes[i % len(sizes)]
        i += 1
    return out


def test_httpx_reads_real_responses_intact_and_as_views_where_asked() -> None:
    body = bytes(range(256)) * 12_000  # 3 MB
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"".join(
        f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in (body[i:i + 700_001] for i in range(0, len(body), 700_001))
    ) + b"0\r\n\r\n"
    length = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    answers = {"/chunked": _cut(chunked, [1, 3, 250_000, 2, 9_999]), "/length": _cut(length, [5, 1_000_003])}
    with raw_server(answers) as base, httpx.Client(timeout=30) as client:
        for _ in range(2):  # the second round reuses the keep-alive connection and its buffer
            for path in ("/chunked", "/length"):
                with client.stream("GET", base + path, extensions={http_wire.BODY_VIEWS: True}) as resp:
                    pieces = list(resp.iter_bytes())
                assert b"".join(pieces) == body
                assert all(type(p) is bytes or (type(p) is memoryview and p.readonly and type(p.obj) is bytes)
                           for p in pieces)
                assert any(type(p) is memoryview for p in pieces)  # not copied where it need not be
                with client.stream("GET", base + path) as resp:
                    plain = list(resp.iter_bytes())
                assert all(type(p) is bytes for p in plain) and b"".join(plain) == body
                assert client.get(base + path).content == body


def test_install_is_applied_once_and_every_connection_reads_into_views() -> None:
    cls = httpcore._sync.http11.HTTP11Connection
    assert http_wire.install() and http_wire.install()  # idempotent
    assert cls._send_event is http_wire._send_body_piece
    assert cls.READ_NUM_BYTES >= http_wire.SOCKET_READ_BYTES
    conn = cls(origin=httpcore.Origin(b"http", b"127.0.0.1", 80), stream=object())
    assert isinstance(conn._h11_state._receive_buffer, ViewReceiveBuffer)
