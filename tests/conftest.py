"""Shared fixtures: a moto S3 server (real S3 protocol over HTTP on 127.0.0.1) and fresh
repository URLs on every backend (local folder, ``memory://``, ``s3://`` on moto).

The S3 server is started once per session; each test gets its own key prefix in one
bucket, so tests never see each other's objects. The endpoint and dummy credentials
are exported in ``os.environ`` (``MREPO_S3_ENDPOINT``, ``AWS_*``), so subprocesses
started by a test reach the same server.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

S3_BUCKET = "mrepo-tests"
BACKEND_KINDS = ("local", "memory", "s3")

_S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """URL of a moto S3 server in server mode on 127.0.0.1 (free port), with bucket ``mrepo-tests``."""
    moto_server = pytest.importorskip("moto.server")
    import boto3

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = {k: os.environ.get(k) for k in [*_S3_ENV, "MREPO_S3_ENDPOINT"]}
    os.environ.update(_S3_ENV)
    os.environ["MREPO_S3_ENDPOINT"] = endpoint
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=S3_BUCKET)
    try:
        yield endpoint
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


@pytest.fixture
def s3_client(moto_endpoint: str):
    """A boto3 client on the moto server (for checks independent of mrepo's s3fs code)."""
    import boto3

    return boto3.client("s3", endpoint_url=moto_endpoint)


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def make_url(tmp_path: Path, request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Factory: ``make_url(kind)`` returns a fresh, empty repository URL of that backend kind
    (``local``, ``memory`` or ``s3``). Memory repositories are removed after the test."""
    memory_roots: list[str] = []

    def make(kind: str) -> str:
        if kind == "local":
            return str(tmp_path / _unique("repo"))
        if kind == "memory":
            name = _unique("repo")
            memory_roots.append("/" + name)
            return f"memory://{name}"
        if kind == "s3":
            request.getfixturevalue("moto_endpoint")
            return f"s3://{S3_BUCKET}/{_unique('repo')}"
        raise ValueError(f"unknown backend kind {kind!r}")

    yield make  # type: ignore[misc]
    if memory_roots:
        import fsspec

        fs = fsspec.filesystem("memory")
        for root in memory_roots:
            if fs.exists(root):
                fs.rm(root, recursive=True)


@pytest.fixture(params=BACKEND_KINDS)
def backend_kind(request: pytest.FixtureRequest) -> str:
    """Each backend kind in turn (S3 runs on the session's moto server)."""
    if request.param == "s3":
        request.applymarker(pytest.mark.s3)
    return request.param


@pytest.fixture
def repo(make_url: Callable[[str], str]):
    """An empty repository in a temporary local folder."""
    from mrepo.graph import Repository

    r = Repository.init(make_url("local"))
    yield r
    r.close()


def _listing(url: str) -> dict[str, int]:
    """Every stored key of a repository with its size, hidden temporary and lock files
    included for local folders (for "nothing was written" checks)."""
    if "://" not in url:
        root = Path(url)
        if not root.exists():
            return {}
        return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}
    from mrepo.store import open_backend

    backend = open_backend(url)
    try:
        return {e.key: e.size for e in backend.list("")}
    finally:
        backend.close()


@pytest.fixture
def listing() -> Callable[[str], dict[str, int]]:
    """``listing(url)``: {key: size} of everything stored under a repository URL."""
    return _listing
