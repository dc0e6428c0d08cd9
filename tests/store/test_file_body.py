"""Request body pieces that are local files (mrepo.store.file_body), sent by sendfile(2) through the
HTTP client's wire adjustments (mrepo.store.http_wire).

The receiving side is a hand-written raw-socket server that parses the request with h11 in the server
role (not uvicorn, not mrepo's receive buffer), reading slowly so the kernel's sends are partial.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import blake3
import h11
import httpx
import numpy as np
import pytest

import mrepo.store.http_backend  # noqa: F401  (applies mrepo.store.http_wire)
from mrepo.store import InvalidInput, ObjectNotFound
from mrepo.store.backends import LocalBackend, MemoryBackend
from mrepo.store.file_body import FILE_BODY_BYTES, FileBody, stored_body
from tests.store.socket_server import socket_server


@contextmanager
def h11_server(delay: float = 0.0) -> Iterator[tuple[str, list[dict]]]:
    """An HTTP/1.1 server on a raw socket: each request's body is parsed by h11 and answered with its
    length and BLAKE3; ``delay`` seconds of sleep between 64 KiB reads (a slow reader). Yields the
    base URL and a list of what each connection saw (``{"bodies": [...], "error": ...}``)."""
    seen: list[dict] = []

    def serve(conn: socket.socket, stop: threading.Event) -> None:
        record: dict = {"bodies": [], "error": None}
        seen.append(record)
        h = h11.Connection(h11.SERVER)
        digest, size = blake3.blake3(), 0
        try:
            while not stop.is_set():
                event = h.next_event()
                if event is h11.NEED_DATA:
                    data = conn.recv(65536)
                    if delay:
                        time.sleep(delay)
                    h.receive_data(data)
                    if not data and h.their_state not in (h11.IDLE, h11.DONE):
                        record["error"] = "closed mid-request"
                        return
                elif isinstance(event, h11.Data):
                    digest.update(event.data)
                    size += len(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    answer = f"{size} {digest.hexdigest()}".encode()
                    record["bodies"].append((size, digest.hexdigest()))
                    conn.sendall(h.send(h11.Response(status_code=200, headers=[("Content-Length", str(len(answer)))]))
                                 + h.send(h11.Data(data=answer)) + h.send(h11.EndOfMessage()))
                    h.start_next_cycle()
                    digest, size = blake3.blake3(), 0
                elif isinstance(event, h11.ConnectionClosed):
                    return
        except (h11.RemoteProtocolError, OSError) as exc:
            record["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            conn.close()

    with socket_server(serve) as base:
        yield base, seen


def _file(tmp_path: Path, name: str, n: int, seed: int) -> tuple[Path, bytes]:
    data = np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()
    path = tmp_path / name
    path.write_bytes(data)
    return path, data


@pytest.mark.parametrize("delay", [0.0, 0.002])
def test_file_pieces_arrive_intact_beside_bytes_pieces(tmp_path: Path, delay: float) -> None:
    """Chunked bodies mixing files (large, small, empty) and bytes; one plain Content-Length body made
    of one file. Every byte arrives once, in order, at an h11 server, also when it reads slowly."""
    big, big_data = _file(tmp_path, "big", 3_000_001, 1)
    mid, mid_data = _file(tmp_path, "mid", FILE_BODY_BYTES, 2)
    small, small_data = _file(tmp_path, "small", 1000, 3)  # below the passthrough size: read, then sent
    empty, _ = _file(tmp_path, "empty", 0, 4)
    pieces = [b"head", FileBody.of(big), b"x" * 70_000, FileBody.of(small), FileBody.of(mid), FileBody.of(empty),
              FileBody.of(big), b"tail"]
    whole = b"head" + big_data + b"x" * 70_000 + small_data + mid_data + big_data + b"tail"
    with h11_server(delay) as (base, seen), httpx.Client(timeout=60) as client:
        for _ in range(2):  # the connection is reused after a body sent by sendfile
            r = client.post(base + "/up", content=iter(pieces))
            assert r.status_code == 200 and r.text == f"{len(whole)} {blake3.blake3(whole).hexdigest()}"
        r = client.post(base + "/up", content=iter([FileBody.of(big)]),
                        headers={"Content-Length": str(len(big_data))})
        assert r.text == f"{len(big_data)} {blake3.blake3(big_data).hexdigest()}"
    assert len(seen) == 1 and len(seen[0]["bodies"]) == 3 and seen[0]["error"] is None


def test_a_file_that_shrank_fails_the_request_and_drops_the_connection(tmp_path: Path) -> None:
    """A file listed at one size and cut shorter before it is sent: InvalidInput naming the file, and the
    server never receives a complete request (no chunk shorter than its framing is left behind)."""
    path, data = _file(tmp_path, "chunk", 1_000_000, 5)
    body = FileBody.of(path)
    path.write_bytes(data[:600_000])
    with h11_server() as (base, seen), httpx.Client(timeout=30) as client:
        with pytest.raises(InvalidInput, match=r"chunk: 600000 bytes, 1000000 expected"):
            client.post(base + "/up", content=iter([b"start", body, b"end"]))
        deadline = time.monotonic() + 10
        while not (seen and seen[0]["error"]) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert seen[0]["bodies"] == [] and seen[0]["error"]
        r = client.post(base + "/up", content=b"after")  # a fresh connection works
        assert r.status_code == 200 and r.text.startswith("5 ")


def test_read_and_send_check_the_size(tmp_path: Path) -> None:
    path, data = _file(tmp_path, "f", 200_000, 6)
    body = FileBody.of(path)
    assert len(body) == 200_000 and body.read() == data
    a, b = socket.socketpair()
    with a, b:
        got = bytearray()
        reader = threading.Thread(target=lambda: [got.extend(x) for x in iter(lambda: b.recv(65536), b"")])
        reader.start()
        body.send(a)
        a.shutdown(socket.SHUT_WR)
        reader.join(10)
    assert bytes(got) == data
    path.write_bytes(data + b"more")  # grew: the announced size is what is sent and read
    with pytest.raises(InvalidInput, match="more than 200000 bytes"):
        body.read()
    os.truncate(path, 10)
    with pytest.raises(InvalidInput, match="10 bytes, 200000 expected"):
        body.read()


def test_stored_body_is_a_file_only_for_large_local_files(tmp_path: Path) -> None:
    local = LocalBackend(tmp_path / "store")
    key_big, key_small = f"arrays/{'e' * 64}/c/0/0", f"arrays/{'e' * 64}/c/0/1"
    local.put(key_big, b"b" * FILE_BODY_BYTES)
    local.put(key_small, b"s" * (FILE_BODY_BYTES - 1))
    big = stored_body(local, key_big)
    assert isinstance(big, FileBody) and big.path == local.local_file(key_big) and len(big) == FILE_BODY_BYTES
    assert stored_body(local, key_small) == b"s" * (FILE_BODY_BYTES - 1)
    with pytest.raises(ObjectNotFound):
        stored_body(local, f"arrays/{'e' * 64}/c/9/9")
    memory = MemoryBackend("memory://file-body-test")
    memory.put(key_big, b"b" * FILE_BODY_BYTES)
    assert stored_body(memory, key_big) == b"b" * FILE_BODY_BYTES  # no local file: bytes
