"""A moto S3 server for the benchmarks, in its own process on 127.0.0.1.

A separate process keeps the server's Python work off the benchmark's GIL, so the
client under test (mrepo, raw s3fs, icechunk) is measured, not the contention
between client threads and an in-process server.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request


class MotoProcess:
    """``moto_server`` running as a child process; ``stop()`` ends it."""

    def __init__(self, port: int):
        self.port = port
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto(bucket: str) -> tuple[MotoProcess, str]:
    """Start moto in server mode on 127.0.0.1 (free port, own process), export dummy
    credentials and ``MREPO_S3_ENDPOINT``, create ``bucket``; returns (server, endpoint URL)."""
    import boto3

    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    server = MotoProcess(_free_port())
    endpoint = f"http://127.0.0.1:{server.port}"
    os.environ["MREPO_S3_ENDPOINT"] = endpoint
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    return server, endpoint
