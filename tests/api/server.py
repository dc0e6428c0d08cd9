"""Run a server for a test: uvicorn in a background thread, or ``mrepo serve`` in a subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn

from mrepo.api.serving import server_config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(base: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"server at {base} did not start within {timeout} s")


async def answered_health(scope, send) -> bool:  # noqa: ANN001
    """Answer ``GET /health`` (what :func:`wait_up` asks) for a bare ASGI test app; True when it did."""
    if scope["path"] != "/health":
        return False
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})
    return True


@contextmanager
def thread_server(app, **kw) -> Iterator[str]:  # noqa: ANN001, ANN003
    """Serve ``app`` on a free port in a thread, configured as ``mrepo serve`` does (header deadline,
    keep-alive); yields ``http://127.0.0.1:PORT``."""
    port = free_port()
    config = server_config(app, "127.0.0.1", port, limit_concurrency=kw.pop("limit_concurrency", 200), **kw)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_up(base)
        yield base
    finally:
        server.should_exit = True
        thread.join(10)


LAUNCH = ("import sys; from mrepo.api import create_app; from mrepo.api.serving import run; "
          "run(create_app(sys.argv[1], sys.argv[2] or None), '127.0.0.1', int(sys.argv[3]))")


def start_subprocess(repo: str | Path, port: int, tokens: Path | None, *, cli: bool = False,
                     log: Path | None = None, timeout: float = 90.0) -> subprocess.Popen:
    """A server as a child process (waits until it answers): ``mrepo serve`` when ``cli``, else a lighter
    launcher of the same app (the CLI also imports the simulator and torch, slow on a loaded machine)."""
    if cli:
        cmd = [sys.executable, "-c", "from mrepo.cli import main; main()", "serve", "--repo", str(repo),
               "--port", str(port)] + (["--tokens", str(tokens)] if tokens else [])
    else:
        cmd = [sys.executable, "-c", LAUNCH, str(repo), str(tokens or ""), str(port)]
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        wait_up(f"http://127.0.0.1:{port}", timeout)
    except TimeoutError:
        proc.kill()
        raise
    return proc
