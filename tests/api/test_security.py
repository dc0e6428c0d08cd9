"""Access control, validation and limits: every refusal has the right status and changes nothing."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import httpx
import pytest

from mrepo.graph import Repository, push
from mrepo.store import hash_bytes
from tests.api.conftest import Served
from tests.factories import make_population

H = "ab" * 32


def snapshot(root: Path) -> dict[str, str]:
    """Every file under the repository with the digest of its content."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def populated(served: Served, tmp_path) -> tuple[Served, str]:
    local = Repository.init(str(tmp_path / "l"))
    head = local.commit(make_population(local), message="m", branch="dev", author="t", time="2025-01-01T00:00:00Z")
    push(local, served.url, "dev", options=served.opts("write"))
    return served, head


def endpoints(head: str) -> list[tuple[str, str, str, dict]]:
    """(method, path, least role, request kwargs) covering every operation of the protocol and API."""
    ref = {"content": (head + "\n").encode()}
    return [
        ("GET", "/repo/mrepo.json", "read", {}), ("GET", "/repo/HEAD", "read", {}),
        ("GET", f"/repo/objects/{head}", "read", {}), ("HEAD", f"/repo/objects/{head}", "read", {}),
        ("PUT", f"/repo/objects/{hash_bytes(b'blob' + bytes(1) + b'x')}", "write", {"content": b"blob\0x"}),
        ("GET", f"/repo/arrays/{H}/zarr.json", "read", {}), ("HEAD", f"/repo/arrays/{H}/zarr.json", "read", {}),
        ("PUT", f"/repo/arrays/{H}/c/0", "write", {"content": b"x"}),
        ("GET", "/repo/list?prefix=refs/", "read", {}), ("GET", "/repo/refs", "read", {}),
        ("GET", "/repo/refs/heads/dev", "read", {}), ("HEAD", "/repo/refs/heads/dev", "read", {}),
        ("PUT", "/repo/refs/heads/new", "write", {**ref, "headers": {"If-None-Match": "*"}}),
        ("DELETE", "/repo/refs/heads/dev", "maintain", {"headers": {"If-Match": '"x"'}}),
        ("GET", "/repo/pulls", "read", {}), ("GET", "/repo/pulls/1", "read", {}),
        ("POST", "/repo/pulls", "write", {"json": {"from": "dev", "into": "main", "title": "t"}}),
        ("POST", "/repo/pulls/1/check", "write", {}), ("POST", "/repo/pulls/1/close", "write", {}),
        ("POST", "/repo/pulls/1/merge", "maintain", {}),
        ("GET", "/api/overview", "read", {}), ("GET", "/api/graph", "read", {}),
        ("GET", "/api/population?rev=dev", "read", {}), ("GET", f"/api/species/{H}", "read", {}),
        ("GET", f"/api/sources/{H}", "read", {}), ("GET", f"/api/arrays/{H}/slice.png", "read", {}),
        ("GET", "/api/pulls", "read", {}), ("GET", "/api/pulls/1", "read", {}),
        ("POST", "/repo/batch/have", "write", {"json": {"objects": [head], "arrays": []}}),
        ("POST", "/repo/batch/upload", "write", {"content": b"MRPK1\n\0\0"}),
        ("POST", "/repo/batch/download", "read", {"json": {"objects": [head], "arrays": []}}),
        ("POST", "/repo/batch/sizes", "read", {"json": {"arrays": []}}),
        ("POST", "/repo/batch/closure", "read", {"json": {"objects": [head]}}),
        ("GET", "/repo/logs/refs/heads/dev/=20250101T000000.000000Z-00000000.json", "read", {}),
        ("HEAD", "/repo/logs/refs/heads/dev/=20250101T000000.000000Z-00000000.json", "read", {}),
        ("GET", "/repo/named/dev/species/apo/half1/zarr.json", "read", {}),
        ("GET", f"/api/arrays/{H}/iso.png", "read", {}), ("GET", "/api/commits/dev", "read", {}),
        ("GET", f"/api/items/{H}", "read", {}), ("GET", f"/api/items/{H}/ctf", "read", {}),
        ("GET", f"/api/items/{H}/thumbnail.png", "read", {}), ("GET", "/api/species-history", "read", {}),
    ]


def test_endpoint_list_covers_the_schema(populated) -> None:
    served, head = populated
    assert httpx.get(served.base + "/openapi.json").status_code == 401  # the schema follows the read rule
    assert httpx.get(served.base + "/docs").status_code == 401
    schema = httpx.get(served.base + "/openapi.json", headers=served.auth("read")).json()
    assert "Swagger" in httpx.get(served.base + "/docs", headers=served.auth("read")).text
    documented = {(m.upper(), p) for p, ops in schema["paths"].items() for m in ops if p != "/health"}
    covered = set()
    for method, path, _, _ in endpoints(head):
        for m, p in documented:
            pattern = re.sub(r"\{(name|path)\}", ".+", p)
            pattern = re.sub(r"\{[a-z]+\}", "[^/]+", pattern)
            if m == method and re.fullmatch(pattern, path.split("?")[0]):
                covered.add((m, p))
    assert documented == covered


def test_tokens_and_roles_are_enforced(populated) -> None:
    served, head = populated
    before = snapshot(served.path)
    levels = ["read", "write", "maintain"]
    with httpx.Client(base_url=served.base) as c:
        for method, path, need, kw in endpoints(head):
            kw = dict(kw)
            extra = kw.pop("headers", {})
            r = c.request(method, path, headers=extra, **kw)
            assert r.status_code == 401, (method, path, "no token", r.status_code)
            r = c.request(method, path, headers={**extra, "Authorization": "Bearer mrepo_forged" + "x" * 30}, **kw)
            assert r.status_code == 401, (method, path, "forged", r.status_code)
            r = c.request(method, path, headers={**extra, "Authorization": "Basic dXNlcjpwdw=="}, **kw)
            assert r.status_code == 401, (method, path, "basic", r.status_code)
            for role in levels[:levels.index(need)]:
                r = c.request(method, path, headers={**extra, **served.auth(role)}, **kw)
                assert r.status_code == 403, (method, path, role, r.status_code)
                assert r.json()["error"] == "forbidden"
    assert snapshot(served.path) == before
    lines = [json.loads(line) for line in served.log.getvalue().splitlines()]
    assert {"time", "method", "path", "status", "duration_ms", "token"} <= set(lines[-1])
    assert any(line["status"] == 403 and line["token"] == "reader" for line in lines)


def test_traversal_bad_names_and_unbounded_listings_are_refused(populated) -> None:
    served, head = populated
    before = snapshot(served.path)
    w = served.auth("maintain")
    body = (head + "\n").encode()
    cases = [
        ("GET", "/repo/objects/..%2F..%2Fmrepo.json", {}, (400, 404)),
        ("GET", "/repo/objects/" + "AB" * 32, {}, (400,)),
        ("GET", f"/repo/arrays/{H}/..%2F..%2Fmrepo.json", {}, (404,)),
        ("GET", f"/repo/arrays/{head}/%2E%2E/%2E%2E/config.json", {}, (404,)),
        ("PUT", f"/repo/arrays/{H}/..%2F..%2Frefs%2Fheads%2Fx", {"content": b"x"}, (400,)),
        ("GET", "/repo/refs/heads/..%2F..%2Fmrepo.json", {}, (400,)),
        ("PUT", "/repo/refs/heads/..%2F..%2Fconfig.json", {"content": body, "headers": {"If-None-Match": "*"}},
         (400,)),
        ("PUT", "/repo/refs/heads/.hidden", {"content": body, "headers": {"If-None-Match": "*"}}, (400,)),
        ("PUT", "/repo/refs/remotes/origin/x", {"content": body, "headers": {"If-None-Match": "*"}}, (403,)),
        ("PUT", "/repo/refs/heads/x", {"content": b"not a hash\n", "headers": {"If-None-Match": "*"}}, (400,)),
        ("PUT", "/repo/refs/heads/x", {"content": ("cd" * 32 + "\n").encode(), "headers": {"If-None-Match": "*"}},
         (400,)),
        ("PUT", "/repo/refs/heads/x", {"content": body}, (428,)),
        ("PUT", "/repo/refs/heads/dev", {"content": body, "headers": {"If-Match": '"stale"'}}, (409,)),
        ("GET", "/repo/list?prefix=objects/", {}, (400,)),
        ("GET", "/repo/list?prefix=staging/", {}, (400,)),
        ("GET", "/repo/list?prefix=../", {}, (400,)),
        ("GET", "/repo/list?prefix=refs/&limit=100000", {}, (400,)),
        ("GET", "/repo/config.json", {}, (404,)),
        ("PUT", "/repo/mrepo.json", {"content": b"{}"}, (405,)),
    ]
    with httpx.Client(base_url=served.base, headers=w) as c:
        for method, path, kw, expected in cases:
            r = c.request(method, path, **kw)
            assert r.status_code in expected, (method, path, r.status_code, r.text)
            assert set(r.json()) == {"error", "detail"}
    assert snapshot(served.path) == before


def test_protected_branch_moves_only_by_pull_request_merge(populated) -> None:
    served, head = populated
    body = (head + "\n").encode()
    with httpx.Client(base_url=served.base) as c:
        # Bootstrap: a maintainer may create the protected branch once.
        r = c.put("/repo/refs/heads/main", content=body, headers={**served.auth("write"), "If-None-Match": "*"})
        assert r.status_code == 403
        r = c.put("/repo/refs/heads/main", content=body, headers={**served.auth("maintain"), "If-None-Match": "*"})
        assert r.status_code == 201
        tag = r.headers["etag"]
        for role in ("write", "maintain"):
            r = c.put("/repo/refs/heads/main", content=body, headers={**served.auth(role), "If-Match": tag})
            assert r.status_code == 403
        r = c.delete("/repo/refs/heads/main", headers={**served.auth("maintain"), "If-Match": tag})
        assert r.status_code == 403
    assert served.repo().head("main") == head


def test_oversized_and_mismatched_bodies_are_refused(populated) -> None:
    served, _ = populated
    before = snapshot(served.path)
    big = b"blob\0" + bytes(2 << 20)  # the fixture's limit is 1 MiB
    with httpx.Client(base_url=served.base, headers=served.auth("write")) as c:
        r = c.put(f"/repo/objects/{hash_bytes(big)}", content=big)
        assert r.status_code == 413 and r.json()["error"] == "too-large"

        def stream():  # no Content-Length: the limit applies while reading
            for _ in range(4):
                yield bytes(512 << 10)

        r = c.put(f"/repo/objects/{H}", content=stream())
        assert r.status_code == 413
        r = c.put(f"/repo/objects/{H}", content=b"blob\0other")
        assert r.status_code == 400 and r.json()["error"] == "hash-mismatch"
        r = c.put(f"/repo/arrays/{H}/zarr.json", content=b"{}")
        assert r.status_code == 400
    assert snapshot(served.path) == before
