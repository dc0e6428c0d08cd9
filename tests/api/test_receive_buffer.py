"""The server's h11 receive buffer (views of the socket's pieces) parses exactly as h11's own one.

Wire streams of pipelined requests (chunked bodies with extensions and trailers, Content-Length
bodies, bodies without one, malformed chunk sizes) are cut into pieces at arbitrary points and
fed to two h11 connections, one with each buffer; the events (bodies joined per request) and the
errors must be the same.
"""

from __future__ import annotations

import h11
from hypothesis import given, settings

from mrepo.api.receive_buffer import install
from tests.store.h11_wire import CUTS, chunked, connection, fed_events, messages


def _request(kind: str, body: bytes, n: int) -> bytes:
    head = f"POST /r{n} HTTP/1.1\r\nHost: x\r\n".encode()
    if kind == "length":
        return head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
    if kind == "empty":
        return f"GET /g{n} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    if kind == "bad-chunk":
        return head + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n" + body + b"\r\n0\r\n\r\n"
    return head + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(body, 7 + n, kind == "chunked-trailer")


def _events(wire: bytes, cuts: list[int], view: bool) -> list[object]:
    """Normalised events of ``wire`` fed in pieces cut at ``cuts``; the error last, if any."""
    conn = connection(h11.SERVER, view)
    out: list[object] = []
    body = bytearray()
    try:
        for event in fed_events(conn, wire, cuts):
            if isinstance(event, h11.Request):
                out.append(("request", event.method, event.target, list(event.headers)))
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                out.append(("body", bytes(body), list(event.headers)))
                body.clear()
                conn.send(h11.Response(status_code=200, headers=[("Content-Length", "0")]))
                conn.send(h11.EndOfMessage())
                conn.start_next_cycle()
        conn.receive_data(b"")
        out.append(("end", conn.next_event().__class__.__name__, bytes(body)))
    except h11.ProtocolError as exc:
        out.append(("error", type(exc).__name__, bytes(body)))
    return out


@settings(max_examples=300, deadline=None)
@given(requests=messages(["chunked", "chunked-trailer", "length", "empty", "bad-chunk"]), cuts=CUTS)
def test_views_parse_as_h11(requests: list[tuple[str, bytes]], cuts: list[int]) -> None:
    wire = b"".join(_request(kind, body, n) for n, (kind, body) in enumerate(requests))
    assert _events(wire, cuts, view=True) == _events(wire, cuts, view=False)


def test_every_piece_size_parses_as_h11() -> None:
    """Pieces of every size from 1 to 64 bytes: every alignment of piece ends with lines and bodies."""
    wire = b"".join(_request(kind, bytes(range(n * 37 % 256)) * 2, n) for n, kind in
                    enumerate(["chunked", "length", "chunked-trailer", "empty", "length", "chunked", "bad-chunk"]))
    for size in range(1, 65):
        cuts = list(range(size, len(wire), size))
        assert _events(wire, cuts, view=True) == _events(wire, cuts, view=False), size


def test_body_pieces_are_views_not_copies() -> None:
    conn = h11.Connection(h11.SERVER)
    install(conn)
    body = bytes(range(256)) * 4096
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body))
    assert isinstance(conn.next_event(), h11.Request)
    piece = body[:300_000]
    conn.receive_data(piece)
    data = conn.next_event()
    assert isinstance(data, h11.Data) and isinstance(data.data, memoryview) and data.data.obj is piece
    assert bytes(data.data) == piece


def test_install_leaves_a_used_or_foreign_buffer_alone() -> None:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"GET / HT")
    assert not install(conn)  # bytes already buffered: h11's own buffer stays
    assert not install(object())


def test_the_app_receives_each_body_exactly_as_bytes() -> None:
    """Through ``mrepo serve``'s set-up (:class:`PiecesCycle`: uvicorn keeps the pieces and joins
    them once per message): chunked bodies sent in many pieces and Content-Length bodies reach the
    app byte for byte, every message's body ``bytes`` as ASGI says."""
    import httpx
    from uvicorn.protocols.http import h11_impl

    from mrepo.api.receive_buffer import PiecesCycle
    from tests.api.server import thread_server

    seen: list[type] = []

    async def app(scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http":
            return
        body = bytearray()
        while True:
            message = await receive()
            seen.append(type(message.get("body", b"")))
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        answer = body if scope["path"] != "/health" else b"ok"
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(answer)).encode())]})
        await send({"type": "http.response.body", "body": bytes(answer)})

    payload = bytes(range(256)) * 20_000  # 5 MB
    with thread_server(app) as base, httpx.Client(timeout=30) as client:
        assert h11_impl.RequestResponseCycle is PiecesCycle
        for pieces in ([payload], [payload[i:i + 100_003] for i in range(0, len(payload), 100_003)],
                       [payload[:1], b"", payload[1:7], payload[7:]]):
            streamed = client.post(f"{base}/echo", content=iter(pieces))  # chunked
            assert streamed.status_code == 200 and streamed.content == payload
        assert client.post(f"{base}/echo", content=payload).content == payload  # Content-Length
        assert client.post(f"{base}/echo", content=b"").content == b""
    assert seen and all(t is bytes for t in seen)


def test_large_response_pieces_go_out_in_slices_intact() -> None:
    """``PiecesCycle.send`` writes a body piece larger than SEND_SLICE slice by slice: chunked and
    Content-Length answers, one piece or several, to a client that reads slowly (the socket's buffer
    fills, the writer waits between slices), arrive byte for byte; HEAD answers carry no body."""
    import time

    import httpx

    from mrepo.api.receive_buffer import SEND_SLICE
    from tests.api.server import answered_health, thread_server

    payload = bytes(range(256)) * 40_000  # 10 MB: 40 slices
    assert len(payload) > 4 * SEND_SLICE

    async def app(scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http":
            return
        if await answered_health(scope, send):
            return
        headers = [(b"content-length", str(len(payload)).encode())] if scope["path"] == "/length" else []
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if scope["path"] == "/pieces":
            cut = [0, 1, SEND_SLICE + 7, 3 * SEND_SLICE, len(payload)]
            for a, b in zip(cut, cut[1:]):
                await send({"type": "http.response.body", "body": payload[a:b], "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        else:
            await send({"type": "http.response.body", "body": payload})

    with thread_server(app) as base, httpx.Client(timeout=60) as client:
        for path in ("/whole", "/length", "/pieces"):
            with client.stream("GET", base + path) as resp:
                got = bytearray()
                for piece in resp.iter_bytes():
                    got += piece
                    time.sleep(0.001)  # a slow reader
            assert bytes(got) == payload, path
            assert client.get(base + path).content == payload
        head = client.head(base + "/length")
        assert head.status_code == 200 and head.content == b""
