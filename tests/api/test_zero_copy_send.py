"""ASGI's zero-copy send extension as ``mrepo serve`` offers it (mrepo.api.receive_buffer.PiecesCycle):
file pieces sent by sendfile(2) beside ordinary body pieces, in chunked and Content-Length answers,
read back with a stock h11 client on a raw socket (no httpx, no mrepo code on the reading side); the
batch download of a real server sends its chunk files this way and a clone is intact."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import h11
import numpy as np
import pytest

from mrepo.api import create_app
from mrepo.api.receive_buffer import ZERO_COPY_SEND
from mrepo.graph import Repository
from mrepo.store.batch_client import BatchClient
from mrepo.store.http_backend import HttpBackend
from tests.api.server import answered_health, thread_server


def _get(base: str, path: str, method: str = "GET", *, slow: bool = False) -> tuple[int, dict, bytes, str | None]:
    """(status, headers, body, error) of one request, parsed by a stock h11 client; ``error`` names
    how a broken answer ended (None when complete)."""
    host, port = base.removeprefix("http://").split(":")
    conn = h11.Connection(h11.CLIENT)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(conn.send(h11.Request(method=method, target=path, headers=[("Host", host)]))
                     + conn.send(h11.EndOfMessage()))
        status, headers, body = 0, {}, bytearray()
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                return status, headers, bytes(body), f"protocol: {exc}"
            if event is h11.NEED_DATA:
                if slow:
                    time.sleep(0.001)
                conn.receive_data(sock.recv(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
                headers = {k.decode(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return status, headers, bytes(body), None
            elif isinstance(event, h11.ConnectionClosed):
                return status, headers, bytes(body), "closed"


def _files(tmp_path: Path) -> dict[str, bytes]:
    rng = np.random.default_rng(7)
    out = {}
    for name, n in (("a", 3_000_001), ("b", 1), ("c", 300_000)):
        out[name] = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        (tmp_path / name).write_bytes(out[name])
    return out


def _app(tmp_path: Path, seen: list):  # noqa: ANN202
    async def app(scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http":
            return
        seen.append(dict(scope.get("extensions") or {}))
        if await answered_health(scope, send):
            return
        a, c = tmp_path / "a", tmp_path / "c"
        if scope["path"] == "/length":  # one file with a declared length, from an offset
            n = os.path.getsize(a) - 10
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(n).encode())]})
            with open(a, "rb") as f:
                await send({"type": ZERO_COPY_SEND, "file": f, "offset": 10, "count": n})
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})  # chunked
        await send({"type": "http.response.body", "body": b"head", "more_body": True})
        for name, count in (("a", None), ("b", 1), ("c", 300_000), ("a", 5)):
            with open(tmp_path / name, "rb") as f:
                if scope["path"] == "/short" and name == "c":
                    os.truncate(c, 1000)  # the file shrank after its size was taken
                await send({"type": ZERO_COPY_SEND, "file": f, "count": count, "more_body": True})
        await send({"type": "http.response.body", "body": b"tail", "more_body": False})

    return app


@pytest.mark.parametrize("slow", [False, True])
def test_file_pieces_go_out_whole_and_in_order(tmp_path: Path, slow: bool) -> None:
    files = _files(tmp_path)
    seen: list = []
    with thread_server(_app(tmp_path, seen)) as base:
        status, headers, body, error = _get(base, "/chunked", slow=slow)
        assert error is None and status == 200 and headers.get("transfer-encoding") == "chunked"
        assert body == b"head" + files["a"] + files["b"] + files["c"] + files["a"][:5] + b"tail"
        status, headers, body, error = _get(base, "/length", slow=slow)
        assert error is None and body == files["a"][10:] and headers["content-length"] == str(len(files["a"]) - 10)
        status, headers, body, error = _get(base, "/chunked", "HEAD")
        assert error is None and status == 200 and body == b""
    assert seen and all(ZERO_COPY_SEND in ext for ext in seen)  # offered in every HTTP scope


def test_a_file_shorter_than_announced_breaks_the_answer_not_the_server(tmp_path: Path) -> None:
    """A file that holds fewer bytes than the count sent: the connection is closed mid-body (the reader
    sees a truncated answer, never a complete one with wrong bytes) and the server goes on serving."""
    _files(tmp_path)
    with thread_server(_app(tmp_path, [])) as base:
        status, _, body, error = _get(base, "/short")
        assert status == 200 and error is not None
        status, _, body, error = _get(base, "/health")
        assert (status, body, error) == (200, b"ok", None)


def test_the_batch_download_of_a_real_server_sends_chunk_files_intact(tmp_path: Path) -> None:
    """mrepo's batch download sends chunk files of 64 KiB and more by zero-copy send: the frames that
    arrive are the stored files, byte for byte, zarr.json first."""
    src = Repository.init(str(tmp_path / "src"))
    rng = np.random.default_rng(3)
    hashes = [src.objects.put_array(rng.normal(size=(64, 64, 64)).astype(np.float32), chunks=(16, 64, 64))
              for _ in range(2)]  # chunks of 256 KiB
    backend = src.storage.backend
    src.close()
    with thread_server(create_app(str(tmp_path / "src"), None, anonymous_read=True, access_log=False)) as base:
        http = HttpBackend(base + "/repo")
        try:
            frames = [(k, bytes(v)) for k, v in BatchClient(http).download([], hashes)]
        finally:
            http.close()
    for h in hashes:
        mine = [(k, v) for k, v in frames if k.startswith(f"arrays/{h}/")]
        assert [k for k, _ in mine][0] == f"arrays/{h}/zarr.json" and len(mine) == 5
        assert all(v == backend.get(k) for k, v in mine)


def test_a_reader_that_leaves_mid_file_is_not_an_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A client that closes its connection while a large file is being sent: no exception is logged and
    the server goes on serving."""
    big = np.random.default_rng(9).integers(0, 256, 64 << 20, dtype=np.uint8).tobytes()
    (tmp_path / "big").write_bytes(big)

    async def app(scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http":
            return
        if await answered_health(scope, send):
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(4):
            with open(tmp_path / "big", "rb") as f:
                await send({"type": ZERO_COPY_SEND, "file": f, "count": len(big), "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    with thread_server(app) as base:
        for _ in range(3):
            host, port = base.removeprefix("http://").split(":")
            with socket.create_connection((host, int(port)), timeout=30) as sock:
                sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
                sock.recv(1 << 20)  # a first piece, then away
        time.sleep(0.5)
        status, _, body, error = _get(base, "/health")
        assert (status, body, error) == (200, b"ok", None)
    assert not [r for r in caplog.records if r.exc_info or r.levelname == "ERROR"], caplog.text


def test_the_batch_pools_start_every_thread_at_once_and_reopen_after_an_end() -> None:
    """mrepo serve starts the batch protocol's threads at start-up (not one per task during the first
    large transfer); an app served again after its end gets fresh pools."""
    from mrepo.api.batch import BatchPools

    pools = BatchPools()
    pools.start()
    try:
        assert len(pools.work._threads) == BatchPools.WORKERS  # noqa: SLF001 - CPython's record of started threads
        assert len(pools.publish._threads) == BatchPools.PUBLISHERS  # noqa: SLF001
        pools.close()
        with pytest.raises(RuntimeError):
            pools.work.submit(print)
        pools.start()
        assert pools.work.submit(lambda: 7).result() == 7 and len(pools.work._threads) == BatchPools.WORKERS  # noqa: SLF001
    finally:
        pools.close()
