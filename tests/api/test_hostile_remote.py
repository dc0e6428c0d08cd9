"""A hostile remote: a proxy on 127.0.0.1 in front of a real ``mrepo serve`` that renames
keys and refs (``arrays/<h>/../../../X``, ``refs/heads/../../../../X``, ``refs/heads/HEAD``, ``refs/pulls/0``) and
flips bits in records, blobs, chunks and ``zarr.json``, in per-object answers and in batch
streams. Against ``mrepo clone``, ``fetch`` and ``pull``: nothing is written outside the
destination, every tampered object is refused (never visible), no ref moves, and the command
exits non-zero with a one-line error.

The proxy edits the server's answers as the documented formats define them (the listing and
ref JSON of :mod:`mrepo.api.protocol`; the pack stream of :mod:`mrepo.store.pack`: magic
``MRPK1\\n``, frames ``u16 key length | key | u64 data length | data``, end ``u16 0``).
"""

from __future__ import annotations

import json
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from typer.testing import CliRunner

from mrepo.api import add_token
from mrepo.cli import app
from mrepo.graph import Population, Repository
from tests.api.server import free_port, start_subprocess, thread_server
from tests.factories import make_population

MAGIC = b"MRPK1\n"
MODES = ["rename-ref", "rename-head", "rename-pull", "rename-array", "flip-record", "flip-blob", "flip-chunk", "flip-zarr"]


def parse_pack(data: bytes) -> list[tuple[str, bytes]] | None:
    if not data.startswith(MAGIC):
        return None
    frames, pos = [], len(MAGIC)
    while True:
        (n,) = struct.unpack_from(">H", data, pos)
        pos += 2
        if n == 0:
            return frames
        key = data[pos:pos + n].decode()
        pos += n
        (size,) = struct.unpack_from(">Q", data, pos)
        pos += 8
        frames.append((key, data[pos:pos + size]))
        pos += size


def encode_pack(frames: list[tuple[str, bytes]]) -> bytes:
    out = [MAGIC]
    for key, data in frames:
        k = key.encode()
        out += [struct.pack(">H", len(k)), k, struct.pack(">Q", len(data)), data]
    return b"".join(out + [struct.pack(">H", 0)])


def flipped(data: bytes) -> bytes:
    b = bytearray(data)
    b[len(b) // 2] ^= 0x04
    return bytes(b)


@dataclass
class Hostile:
    """What the proxy does to the next answers, and what it tampered with."""

    upstream: str
    mode: str = "honest"
    tampered: list[str] = field(default_factory=list)  # object keys whose bytes or names were changed
    renames: dict[str, str] = field(default_factory=dict)  # fake key -> real key

    def _kind(self, key: str, data: bytes) -> str:
        if key.startswith("objects/"):
            return "record" if data.startswith(b"record\0") else "blob"
        return "zarr" if key.endswith("zarr.json") else "chunk"

    def _edit_frame(self, key: str, data: bytes) -> tuple[str, bytes]:
        kind = self._kind(key, data)
        if self.mode == f"flip-{kind}" or (self.mode == "flip-zarr" and kind == "zarr"):
            self.tampered.append(key)
            return key, flipped(data)
        if self.mode == "rename-array" and kind == "chunk" and not self.tampered:
            fake = "/".join(key.split("/")[:2]) + "/../../../X"
            self.tampered.append(key)
            self.renames[fake] = key
            return fake, data
        return key, data

    def edit(self, path: str, query: dict, content: bytes) -> bytes:
        if self.mode == "honest":
            return content
        frames = parse_pack(content)
        if frames is not None:
            return encode_pack([self._edit_frame(k, d) for k, d in frames])
        rest = path.removeprefix("/repo/")
        if rest.startswith(("objects/", "arrays/")) and content:
            key = rest if rest.startswith("arrays/") else f"objects/{rest[8:10]}/{rest[10:]}"
            return self._edit_frame(key, content)[1]
        if rest in ("list", "refs") and query.get("prefix", "").startswith("refs/"):
            doc = json.loads(content)
            entries = doc.get("entries", doc.get("refs", []))
            field_name = "key" if "entries" in doc else "name"
            for e in entries:
                name = e[field_name]
                if self.mode == "rename-ref" and name.startswith("refs/heads/"):
                    fake = "refs/heads/../../../../X"
                elif self.mode == "rename-head" and name.startswith("refs/heads/"):
                    fake = "refs/heads/HEAD"
                elif self.mode == "rename-pull" and name.startswith("refs/heads/"):
                    fake = "refs/pulls/0"
                else:
                    continue
                self.renames[fake] = name
                e[field_name] = fake
                break
            return json.dumps(doc).encode()
        if rest in ("list",) and query.get("prefix", "").startswith("arrays/") and self.mode == "rename-array":
            doc = json.loads(content)
            for e in doc["entries"]:
                if not e["key"].endswith("zarr.json"):
                    fake = "/".join(e["key"].split("/")[:2]) + "/../../../X"
                    self.renames[fake] = e["key"]
                    self.tampered.append(e["key"])
                    e["key"] = fake
                    break
            return json.dumps(doc).encode()
        return content

    def route(self, path: str) -> str:
        """A request for a renamed key goes to the real one (so an unchecked client would succeed)."""
        for fake, real in self.renames.items():
            if path.endswith(fake) or path.endswith(fake.rsplit("../", 1)[-1]):
                return "/repo/" + real
        return path


def proxy_app(hostile: Hostile) -> Starlette:
    async def handle(request: Request) -> Response:
        body = await request.body()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        path = hostile.route(request.url.path)
        url = hostile.upstream + path + (f"?{request.url.query}" if request.url.query else "")
        async with httpx.AsyncClient(timeout=60) as client:
            answer = await client.request(request.method, url, content=body, headers=headers)
        content = hostile.edit(request.url.path, dict(request.query_params), answer.content)
        drop = ("content-length", "content-encoding", "transfer-encoding", "connection")
        return Response(content, status_code=answer.status_code,
                        headers={k: v for k, v in answer.headers.items() if k.lower() not in drop})

    methods = ["GET", "HEAD", "PUT", "POST", "DELETE"]
    return Starlette(routes=[Route("/{path:path}", handle, methods=methods)])


@dataclass
class Remote:
    url: str
    repo_path: Path
    hostile: Hostile
    token: str


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Remote]:
    base = tmp_path_factory.mktemp("hostile")
    repo_path = base / "served"
    repo = Repository.init(str(repo_path))
    repo.commit(make_population(repo, n_items=2), message="first", time="2024-06-01T00:00:01Z")
    repo.close()
    token = add_token(base / "tokens.toml", "reader", "read")
    port = free_port()
    server = start_subprocess(repo_path, port, base / "tokens.toml", cli=True, log=base / "serve.log")
    hostile = Hostile(f"http://127.0.0.1:{port}")
    try:
        with thread_server(proxy_app(hostile)) as proxy:
            yield Remote(proxy + "/repo", repo_path, hostile, token)
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


def run(*args: str):
    return CliRunner().invoke(app, [*args, "--json"])


def object_files(dest: Path) -> dict[str, bytes]:
    """Store key -> bytes of every object and array file under ``dest``."""
    return {str(p.relative_to(dest)): p.read_bytes() for top in ("objects", "arrays") if (dest / top).exists()
            for p in (dest / top).rglob("*") if p.is_file()}


def assert_refused(result, hostile: Hostile, mode: str, dest: Path, area: Path,
                   before: dict[str, bytes] | None = None) -> None:
    """The command failed with one line, wrote nothing outside ``dest``, and no tampered object it did
    not hold ``before`` became visible; what it held is unchanged (a server may send, among what
    was asked, records the client holds already: a pull's closure answer)."""
    before = before or {}
    assert result.exit_code not in (0, 1), (result.exit_code, result.output, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert not list(area.rglob("X")), "a file was written outside the destination"
    if mode.startswith(("flip", "rename-array")):
        assert hostile.tampered, "the proxy tampered with nothing: the test did not attack"
    if mode.startswith("rename"):
        assert hostile.renames, "the proxy renamed nothing: the test did not attack"
    for key in hostile.tampered:
        if key.startswith("objects/"):
            assert key in before or not (dest / key).exists(), f"tampered {key} became visible"
        else:
            zarr = "/".join(key.split("/")[:2]) + "/zarr.json"
            assert zarr in before or not (dest / zarr).exists(), f"tampered {key} visible"
    for key, data in before.items():
        assert (dest / key).read_bytes() == data, f"{key}, held before, was changed"


def new_commit(remote: Remote, seed: int) -> str:
    repo = Repository.open(str(remote.repo_path))
    pop = make_population(repo, n_items=1, species=("extra",), seed=seed)
    old = repo.population()
    h = repo.commit(Population(old.name, {**old.sources, "grid2": pop.sources["grid1"]},
                               {**old.species, **pop.species}), message=f"more {seed}")
    repo.close()
    return h


@pytest.mark.parametrize("mode", MODES)
def test_clone_from_a_hostile_remote(remote: Remote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     mode: str) -> None:
    monkeypatch.setenv("MREPO_TOKEN", remote.token)
    dest = tmp_path / "work" / "dest"
    dest.parent.mkdir()
    remote.hostile.mode, remote.hostile.tampered, remote.hostile.renames = mode, [], {}
    try:
        result = run("clone", remote.url, str(dest))
    finally:
        remote.hostile.mode = "honest"
    assert_refused(result, remote.hostile, mode, dest, tmp_path)
    if dest.exists():
        assert not list((dest / "refs").rglob("*")) if (dest / "refs").exists() else True


@pytest.mark.parametrize("command,mode", [("fetch", m) for m in MODES] + [
    ("pull", m) if m in ("rename-ref", "flip-chunk") else pytest.param("pull", m, marks=pytest.mark.slow)
    for m in MODES])
def test_fetch_and_pull_from_a_hostile_remote(remote: Remote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              command: str, mode: str) -> None:
    monkeypatch.setenv("MREPO_TOKEN", remote.token)
    dest = tmp_path / "work" / "dest"
    dest.parent.mkdir()
    remote.hostile.mode = "honest"
    honest = run("clone", remote.url, str(dest))
    assert honest.exit_code == 0, honest.output
    before = {k: v for k, v in Repository.open(str(dest)).refs.list("refs/")}
    held = object_files(dest)
    new_commit(remote, seed=100 + MODES.index(mode) * 2 + (command == "pull"))
    remote.hostile.mode, remote.hostile.tampered, remote.hostile.renames = mode, [], {}
    try:
        result = run(command, "origin", "--repo", str(dest))
    finally:
        remote.hostile.mode = "honest"
    assert_refused(result, remote.hostile, mode, dest, tmp_path, held)
    assert {k: v for k, v in Repository.open(str(dest)).refs.list("refs/")} == before
