"""Large uploads through a real server on 127.0.0.1, as the socket cuts them: a pack body that
arrives in many small pieces (the server's pack reader takes the socket's pieces as read-only
views, chunk checks start on the event loop) still stores exactly the array sent; a byte changed
anywhere in a chunk is refused and leaves nothing visible; and the client's body pieces, written
to the socket without h11's copy, arrive intact at a server that reads slowly (partial sends)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import blake3
import httpcore
import httpx
import numpy as np
import pytest

import mrepo.store.http_backend  # noqa: F401  (installs mrepo.store.http_wire)
from mrepo.api import batch
from mrepo.graph import Repository
from mrepo.store import http_wire, pack, zarr_codec
from mrepo.store.hashing import hash_array
from mrepo.store.integrity import chunk_keys
from tests.api.server import thread_server

CHUNKS = (8, 48, 48)


def _array(seed: int = 0) -> tuple[np.ndarray, str, bytes, list[tuple[str, bytes]]]:
    """A 48^3 float32 map (432 KiB) in 6 slabs of one chunk each; its hash, zarr.json and chunk files in grid order."""
    arr = np.random.default_rng(seed).normal(size=(48, 48, 48)).astype(np.float32)
    h = hash_array(arr)
    files = dict(zarr_codec.encode_chunks(arr, CHUNKS))
    meta = zarr_codec.metadata_document(arr, CHUNKS, h, {k: zarr_codec.chunk_digest(v) for k, v in files.items()})
    keys = chunk_keys(zarr_codec.parse_metadata(meta, h))
    return arr, h, meta, [(k, files[k]) for k in keys]


def _body(h: str, meta: bytes, chunks: list[tuple[str, bytes]]) -> bytes:
    return b"".join(pack.encode([(f"arrays/{h}/zarr.json", meta)] + [(f"arrays/{h}/{k}", d) for k, d in chunks]))


def _pieces(body: bytes, size: int) -> Iterator[bytes]:
    """``body`` in pieces of ``size`` bytes, with a few 1-byte pieces (frame headers cut apart)."""
    yield body[:1]
    yield body[1:5]
    for i in range(5, len(body), size):
        yield body[i:i + size]


def _files(root: Path, h: str) -> list[Path]:
    return [p for top in (root / "arrays" / h, root / "staging" / h) if top.exists()
            for p in top.rglob("*") if p.is_file()]


@pytest.mark.parametrize("piece", [997, 65_536, 1 << 20])
def test_an_array_sent_in_many_pieces_is_stored_exactly(writer_client, monkeypatch: pytest.MonkeyPatch, piece: int) -> None:
    c, root = writer_client
    monkeypatch.setattr(batch, "CHECK_BYTES", 100_000)  # the event loop waits for checks in flight
    arr, h, meta, chunks = _array()
    body = _body(h, meta, chunks)
    r = c.post("/repo/batch/upload", content=_pieces(body, piece))
    assert r.status_code == 200, r.text
    assert r.json()["stored"] == 1 and r.json()["bytes"] == len(body)
    np.testing.assert_array_equal(Repository.open(str(root)).objects.get_array(h), arr)
    assert not [p for p in _files(root, h) if "staging" in p.parts]  # written once, under the final names


@pytest.mark.parametrize("where", [0, 2, 5])  # the first chunk, one in the middle, the last (closes the array)
def test_a_changed_byte_in_any_chunk_is_refused_and_nothing_is_visible(writer_client, monkeypatch: pytest.MonkeyPatch,
                                                                       where: int) -> None:
    c, root = writer_client
    monkeypatch.setattr(batch, "CHECK_BYTES", 100_000)
    arr, h, meta, chunks = _array()
    key, data = chunks[where]
    bad = bytearray(data)
    bad[len(bad) // 2] ^= 0x01
    tampered = chunks[:where] + [(key, bytes(bad))] + chunks[where + 1:]
    r = c.post("/repo/batch/upload", content=_pieces(_body(h, meta, tampered), 7_001))
    assert r.status_code == 400 and r.json()["error"] == "hash-mismatch", r.text
    assert key in r.json()["detail"]
    assert not Repository.open(str(root)).objects.has_array(h)
    assert _files(root, h) == []  # no chunk file left, under the final name or in staging
    r = c.post("/repo/batch/upload", content=_pieces(_body(h, meta, chunks), 7_001))  # the lock was released
    assert r.status_code == 200 and r.json()["stored"] == 1, r.text
    np.testing.assert_array_equal(Repository.open(str(root)).objects.get_array(h), arr)


def test_client_body_pieces_cross_intact_to_a_slow_reader() -> None:
    """Pieces of 3 MB are written by ``sendmsg`` beside their chunk framing (no copy); a server that
    reads slowly makes the sends partial, and every byte still arrives once, in order."""
    assert httpcore._sync.http11.HTTP11Connection._send_event is http_wire._send_body_piece

    async def app(scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http":
            return
        digest, size = blake3.blake3(), 0
        while True:
            message = await receive()
            digest.update(message.get("body", b""))
            size += len(message.get("body", b""))
            if scope["path"] == "/slow":
                await asyncio.sleep(0.002)
            if not message.get("more_body"):
                break
        answer = f"{size} {digest.hexdigest()}".encode() if scope["path"] != "/health" else b"ok"
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(answer)).encode())]})
        await send({"type": "http.response.body", "body": answer})

    rng = np.random.default_rng(3)
    pieces = [rng.integers(0, 255, n, dtype=np.uint8).tobytes() for n in (3_000_000, 10, 70_000, 3_000_001, 65_535)]
    whole = b"".join(pieces)
    expected = f"{len(whole)} {blake3.blake3(whole).hexdigest()}"
    with thread_server(app) as base, httpx.Client(timeout=60) as client:
        for path in ("/slow", "/fast"):
            r = client.post(f"{base}{path}", content=iter(pieces))  # chunked: one h11 Data per piece
            assert r.status_code == 200 and r.text == expected


def test_a_body_in_views_mode_arrives_whole_one_piece_per_message() -> None:
    """An app that sets BODY_VIEWS gets read-only views of the socket's pieces (or h11's copy, where it
    parsed from its own buffer), one per message,
    ``more_body`` false only on the last: together exactly the body sent, however it was cut."""
    from mrepo.api.receive_buffer import BODY_VIEWS

    kinds: list[tuple[str, bool]] = []

    async def app(scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http":
            return
        scope[BODY_VIEWS] = scope["path"] == "/views"
        body, last = bytearray(), []
        while True:
            message = await receive()
            piece = message.get("body", b"")
            kinds.append((type(piece).__name__, isinstance(piece, memoryview) and piece.readonly))
            body += piece
            last.append(message.get("more_body", False))
            if not message.get("more_body"):
                break
        assert last[-1] is False and all(last[:-1])
        answer = blake3.blake3(body).hexdigest().encode() if scope["path"] != "/health" else b"ok"
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(answer)).encode())]})
        await send({"type": "http.response.body", "body": answer})

    payload = np.random.default_rng(4).integers(0, 255, 5_000_000, dtype=np.uint8).tobytes()
    with thread_server(app) as base, httpx.Client(timeout=60) as client:
        for cut in (1 << 20, 4_099, 3_000_000):
            kinds.clear()
            r = client.post(f"{base}/views", content=_pieces(payload, cut))
            assert r.status_code == 200 and r.text == blake3.blake3(payload).hexdigest()
            # views of the socket's pieces; a piece h11 parsed from its own buffer (a line cut apart) is its copy
            assert ("memoryview", True) in kinds and all(k in ("bytes", "bytearray") or ro for k, ro in kinds)
        kinds.clear()
        assert client.post(f"{base}/plain", content=_pieces(payload, 65_536)).text == blake3.blake3(payload).hexdigest()
        assert {k for k, _ in kinds} == {"bytes"}  # without the flag: bytes, as ASGI says
