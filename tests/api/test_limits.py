"""Resource limits of a real server on 127.0.0.1: slow headers and bodies, disconnects, decompression
bombs, memory while verifying a large array, abandoned uploads swept while running, security headers."""

from __future__ import annotations

import io
import json
import logging
import socket
import threading
import time
import tracemalloc
from pathlib import Path

import httpx
import numpy as np
import pytest
from numcodecs import Zstd

from mrepo.api import create_app
from mrepo.graph import Repository, push
from mrepo.store import hash_bytes, pack, zarr_codec
from mrepo.store.hashing import hash_array
from tests.api.conftest import make_tokens
from tests.api.server import thread_server
from tests.factories import make_population


def _app(tmp_path: Path, **kw):  # noqa: ANN003, ANN202
    Repository.init(str(tmp_path / "repo")).close()
    tokens = make_tokens(tmp_path / "tokens.toml")
    log = io.StringIO()
    app = create_app(str(tmp_path / "repo"), tmp_path / "tokens.toml", access_log=log, **kw)
    return app, tokens, log


def _open(base: str) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=30)
    return s


def _closed_within(s: socket.socket, seconds: float, drip: bytes = b"") -> tuple[bool, bytes]:
    """Send ``drip`` one byte every 0.2 s until the server closes the connection (True) or time is up."""
    got = b""
    deadline = time.monotonic() + seconds
    s.settimeout(0.2)
    i = 0
    while time.monotonic() < deadline:
        try:
            data = s.recv(65536)
            if not data:
                return True, got
            got += data
        except TimeoutError:
            pass
        except (ConnectionResetError, BrokenPipeError):
            return True, got
        if drip:
            try:
                s.send(drip[i % len(drip):i % len(drip) + 1])
            except (BrokenPipeError, ConnectionResetError):
                return True, got
            i += 1
    return False, got


def test_slow_headers_and_slow_bodies_are_cut(tmp_path) -> None:
    app, tokens, log = _app(tmp_path, body_grace=1.0, body_min_rate=1000.0)
    h = "ab" * 32
    with thread_server(app, header_timeout=1.5) as base:
        slowloris = [_open(base) for _ in range(10)]
        for s in slowloris:
            s.send(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        slow_bodies = [_open(base) for _ in range(10)]
        for s in slow_bodies:
            s.send((f"PUT /repo/objects/{h} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tokens['write']}\r\n"
                    "Content-Length: 100000\r\nContent-Type: application/octet-stream\r\n\r\nb").encode())
        start = time.monotonic()
        results: dict[str, list] = {"headers": [], "bodies": []}

        def watch(kind: str, s: socket.socket, drip: bytes) -> None:
            results[kind].append(_closed_within(s, 15.0, drip))

        threads = [threading.Thread(target=watch, args=("headers", s, b"X-a: b\r\n")) for s in slowloris]
        threads += [threading.Thread(target=watch, args=("bodies", s, b"x")) for s in slow_bodies]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - start
        assert all(closed for closed, _ in results["headers"]), "a slow-header connection stayed open"
        assert all(closed for closed, _ in results["bodies"]), "a slow-body connection stayed open"
        assert elapsed < 12
        assert all(b" 408 " in got.split(b"\r\n")[0] for _, got in results["bodies"])
        assert httpx.get(base + "/health", timeout=5).status_code == 200  # still serving
    lines = [json.loads(x) for x in log.getvalue().splitlines()]
    assert sum(1 for x in lines if x.get("timeout") == "body" and x["status"] == 408) == 10
    assert not (tmp_path / "repo" / "objects").exists()


def test_client_disconnect_is_one_log_line(tmp_path, caplog) -> None:
    app, tokens, log = _app(tmp_path)
    h = "cd" * 32
    caplog.set_level(logging.INFO)
    with thread_server(app) as base:
        s = _open(base)
        s.send((f"PUT /repo/objects/{h} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tokens['write']}\r\n"
                "Content-Length: 100000\r\n\r\n").encode() + b"blob\0" + bytes(1000))
        time.sleep(0.3)
        s.close()
        deadline = time.monotonic() + 10
        while '"status":499' not in log.getvalue():
            assert time.monotonic() < deadline, log.getvalue()
            time.sleep(0.05)
    line = next(json.loads(x) for x in log.getvalue().splitlines() if '"status":499' in x)
    assert line["disconnected"] is True and line["path"] == f"/repo/objects/{h}"
    assert not [r for r in caplog.records if r.exc_info], "a disconnect must not log a traceback"
    assert any("client disconnected" in r.getMessage() for r in caplog.records)


def _array_files(arr: np.ndarray, chunks: tuple[int, ...]) -> tuple[str, bytes, dict[str, bytes]]:
    h = hash_array(arr)
    files = dict(zarr_codec.encode_chunks(arr, chunks))
    meta = zarr_codec.metadata_document(arr, chunks, h, {k: zarr_codec.chunk_digest(v) for k, v in files.items()})
    return h, meta, files


def test_decompression_bombs_and_oversized_declarations_are_refused(tmp_path) -> None:
    app, tokens, _ = _app(tmp_path, max_array_bytes=64 << 20)
    auth = {"Authorization": f"Bearer {tokens['write']}"}
    with thread_server(app) as base, httpx.Client(base_url=base, headers=auth, timeout=60) as c:
        # 1. A zarr.json declaring 4 GiB (a few hundred bytes of upload) is refused by its declared size.
        big = np.broadcast_to(np.zeros((), np.float32), (1024, 1024, 1024))
        h, meta, _ = _array_files(np.zeros((2, 2), np.float32), (2, 2))
        fake = zarr_codec.metadata_document(big, (64, 64, 64), h, {})
        r = c.post("/repo/batch/upload", content=b"".join(pack.encode([(f"arrays/{h}/zarr.json", fake)])))
        assert r.status_code == 400 and "declares" in r.json()["detail"], r.text
        # 2. A chunk whose zstd frame declares more than the chunk's size (30 KB -> 1 GiB) is refused unread.
        arr = np.arange(16, dtype=np.float32).reshape(4, 4)
        h, meta, files = _array_files(arr, (4, 4))
        bomb = Zstd(level=19).encode(bytes(1 << 30))
        assert len(bomb) < 64 << 10
        meta_bomb = zarr_codec.metadata_document(arr, (4, 4), h, {"c/0/0": zarr_codec.chunk_digest(bomb)})
        frames = [(f"arrays/{h}/zarr.json", meta_bomb), (f"arrays/{h}/c/0/0", bomb)]
        tracemalloc.start()
        r = c.post("/repo/batch/upload", content=b"".join(pack.encode(frames)))
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert r.status_code == 400 and "zstd frame declares" in r.json()["detail"], r.text
        assert peak < 32 << 20, peak
        # The same through the per-file protocol (staged chunk, then zarr.json).
        c.put(f"/repo/arrays/{h}/c/0/0", content=bomb, headers={"X-Mrepo-Upload": "u1"})
        r = c.put(f"/repo/arrays/{h}/zarr.json", content=meta_bomb, headers={"X-Mrepo-Upload": "u1"})
        assert r.status_code == 400, r.text
        # 3. A well-formed upload of the same array is accepted.
        frames = [(f"arrays/{h}/zarr.json", meta), (f"arrays/{h}/c/0/0", files["c/0/0"])]
        r = c.post("/repo/batch/upload", content=b"".join(pack.encode(frames)))
        assert r.status_code == 200 and r.json()["stored"] == 1, r.text
    repo = Repository.open(str(tmp_path / "repo"))
    np.testing.assert_array_equal(repo.objects.get_array(h), arr)


@pytest.mark.parametrize("mib", [96])
def test_verifying_a_large_array_holds_one_slab_not_the_array(tmp_path, mib: int) -> None:
    """A highly compressible 96 MiB array (a few KB on the wire) is verified slab by slab."""
    app, tokens, _ = _app(tmp_path)
    local = Repository.init(str(tmp_path / "local"))
    zeros = np.zeros((mib * 4, 128, 128), np.float32)  # 64 KiB per row of axis 0
    zeros[-1, -1, -1] = 1.0
    h = local.objects.put_array(zeros, chunks=(16, 128, 128))
    del zeros
    pop = make_population(local, n_items=1)
    from dataclasses import replace

    pop = replace(pop, metadata={"volume": {"@array": h}})
    local.commit(pop, message="m", branch="dev", author="t", time="2025-01-01T00:00:00Z")
    with thread_server(app) as base:
        tracemalloc.start()
        push(local, base + "/repo", "dev", options={"token": tokens["write"]})
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 24 << 20, f"{peak / 2**20:.0f} MiB traced while receiving a {mib} MiB array"
    assert Repository.open(str(tmp_path / "repo")).objects.get_array(h)[-1, -1, -1] == 1.0


def test_abandoned_staged_uploads_are_swept_while_running(tmp_path) -> None:
    app, tokens, _ = _app(tmp_path, staging_max_age=0.5, staging_sweep_every=0.3)
    with thread_server(app) as base:
        r = httpx.put(f"{base}/repo/arrays/{'ef' * 32}/c/0", content=b"x" * 100,
                      headers={"Authorization": f"Bearer {tokens['write']}", "X-Mrepo-Upload": "gone"})
        assert r.status_code == 202
        staging = tmp_path / "repo" / "staging"
        assert any(p.is_file() for p in staging.rglob("*"))
        deadline = time.monotonic() + 10
        while any(p.is_file() for p in staging.rglob("*")):
            assert time.monotonic() < deadline, "staged upload not swept"
            time.sleep(0.1)


def test_security_headers(tmp_path) -> None:
    app, tokens, _ = _app(tmp_path)
    with thread_server(app) as base:
        for path, auth in (("/", {}), ("/static/app.js", {}), ("/api/overview", {"Authorization":
                                                                                 f"Bearer {tokens['read']}"})):
            r = httpx.get(base + path, headers=auth)
            assert r.status_code == 200, path
            csp = r.headers["content-security-policy"]
            assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
            assert r.headers["x-content-type-options"] == "nosniff"
            assert r.headers["x-frame-options"] == "DENY"


def test_large_fsc_arrays_are_not_sent_as_json(tmp_path) -> None:
    app, tokens, _ = _app(tmp_path)
    repo = Repository.open(str(tmp_path / "repo"))
    pop = make_population(repo, n_items=1, species=("apo",))
    from dataclasses import replace

    from mrepo.graph import Species

    sp = Species.load(repo.objects, pop.species["apo"])
    fsc = repo.objects.put_array(np.linspace(1, 0, 1_000_000, dtype=np.float32))
    pop = replace(pop, species={"apo": replace(sp, fsc=fsc).save(repo.objects)})
    repo.commit(pop, message="m", branch="main", author="t", time="2025-01-01T00:00:00Z")
    with thread_server(app) as base:
        r = httpx.get(f"{base}/api/species/{pop.species['apo']}", headers={"Authorization":
                                                                            f"Bearer {tokens['read']}"})
        assert r.status_code == 200
        assert len(r.content) < 200_000 and "at most" in r.json()["fsc"]["error"]


def test_uploaded_blob_hash_checked(tmp_path) -> None:
    app, tokens, _ = _app(tmp_path)
    data = b"blob\0" + b"y" * 10
    with thread_server(app) as base:
        r = httpx.post(base + "/repo/batch/upload", headers={"Authorization": f"Bearer {tokens['write']}"},
                       content=b"".join(pack.encode([(f"objects/{'00' * 1}/{'1' * 62}", data)])))
        assert r.status_code == 400 and r.json()["error"] == "hash-mismatch"
        h = hash_bytes(data)
        r = httpx.post(base + "/repo/batch/upload", headers={"Authorization": f"Bearer {tokens['write']}"},
                       content=b"".join(pack.encode([(f"objects/{h[:2]}/{h[2:]}", data)])))
        assert r.status_code == 200 and r.json()["stored"] == 1
