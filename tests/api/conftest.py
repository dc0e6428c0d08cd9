"""Fixtures: a local repository served on 127.0.0.1 with one token per role."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import torch

from mrepo.api import add_token, create_app
from mrepo.graph import Repository
from tests.api.server import thread_server

torch.set_num_threads(1)


@dataclass
class Served:
    """A running server: its base URL, the repository behind it and one secret per role."""

    base: str
    path: Path
    tokens: dict[str, str]
    log: io.StringIO

    @property
    def url(self) -> str:
        return self.base + "/repo"

    def opts(self, role: str) -> dict[str, str]:
        return {"token": self.tokens[role], "retries": 2, "backoff": 0.05}

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def repo(self) -> Repository:
        return Repository.open(str(self.path))


def make_tokens(path: Path) -> dict[str, str]:
    return {role: add_token(path, f"{role}er", role) for role in ("read", "write", "maintain")}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    repo_path = tmp_path / "server-repo"
    Repository.init(str(repo_path)).close()
    tokens = make_tokens(tmp_path / "tokens.toml")
    log = io.StringIO()
    app = create_app(str(repo_path), tmp_path / "tokens.toml", anonymous_read=False, protected=("main",),
                     max_body_bytes=1 << 20, access_log=log)
    with thread_server(app) as base:
        yield Served(base, repo_path, tokens, log)


@pytest.fixture
def writer_client(tmp_path: Path) -> Iterator[tuple[httpx.Client, Path]]:
    """A fresh repository served on 127.0.0.1 and an HTTP client holding its write token; (client, repo root)."""
    Repository.init(str(tmp_path / "repo")).close()
    tokens = make_tokens(tmp_path / "tokens.toml")
    app = create_app(str(tmp_path / "repo"), tmp_path / "tokens.toml", access_log=False)
    with (
        thread_server(app) as base,
        httpx.Client(base_url=base, timeout=60, headers={"Authorization": f"Bearer {tokens['write']}"}) as c,
    ):
        yield c, tmp_path / "repo"
