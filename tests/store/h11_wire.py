"""Pieces shared by the differential tests of the h11 view buffer in both roles (server: request
bodies, tests/api/test_receive_buffer.py; client: response bodies, tests/store/test_http_wire.py)."""

from __future__ import annotations

from collections.abc import Iterator

import h11
from hypothesis import strategies as st

from mrepo.store.h11_views import ViewReceiveBuffer, install


def chunked(body: bytes, size: int, trailer: bool) -> bytes:
    """``body`` in chunks of ``size`` bytes (every other chunk-size line with an extension), the last
    chunk and, with ``trailer``, a trailer field: what follows a ``Transfer-Encoding: chunked`` head."""
    chunks = [body[i:i + size] for i in range(0, len(body), size)]
    wire = b"".join(f"{len(c):x}{';ext=1' if i % 2 else ''}\r\n".encode() + c + b"\r\n" for i, c in enumerate(chunks))
    return wire + b"0\r\n" + (b"X-Trailer: t\r\n" if trailer else b"") + b"\r\n"


def connection(role: type[h11.CLIENT] | type[h11.SERVER], view: bool) -> h11.Connection:
    """An h11 connection in ``role``, with the view receive buffer when ``view``."""
    conn = h11.Connection(role)
    if view:
        assert install(conn)
        assert isinstance(conn._receive_buffer, ViewReceiveBuffer)
    return conn


def fed_events(conn: h11.Connection, wire: bytes, cuts: list[int]) -> Iterator[object]:
    """The events ``conn`` parses from ``wire`` fed in pieces cut at ``cuts`` (lazily: the caller may
    send between events), until it needs more data after the last piece."""
    cut = [0, *sorted(set(c for c in cuts if 0 < c < len(wire))), len(wire)]
    for a, b in zip(cut, cut[1:]):
        conn.receive_data(wire[a:b])
        while (event := conn.next_event()) is not h11.NEED_DATA and event is not h11.PAUSED:
            yield event


#: Where to cut a wire stream (hypothesis strategy for :func:`bounds`).
CUTS = st.lists(st.integers(0, 2000), max_size=40)


def messages(kinds: list[str]) -> st.SearchStrategy[list[tuple[str, bytes]]]:
    """One to four messages, each a kind of framing from ``kinds`` and a body."""
    return st.lists(st.tuples(st.sampled_from(kinds), st.binary(max_size=200)), min_size=1, max_size=4)
