"""Pull requests through the server: open and check by writers, merge (moving protected main) by maintainers."""

from __future__ import annotations

import httpx

from mrepo.graph import Repository, push
from tests.api.conftest import Served
from tests.factories import make_population


def test_pull_request_merge_moves_protected_branch(served: Served, tmp_path) -> None:
    local = Repository.init(str(tmp_path / "l"))
    base = local.commit(make_population(local, species=("apo",)), message="base", branch="main", author="t",
                        time="2025-01-01T00:00:00Z")
    local.create_branch("feature", "main")
    grown = make_population(local, species=("apo", "holo"))
    head = local.commit(grown, message="add holo", branch="feature", author="t", time="2025-01-02T00:00:00Z")
    push(local, served.url, "main", options=served.opts("maintain"))  # bootstrap of the protected branch
    push(local, served.url, "feature", options=served.opts("write"))
    with httpx.Client(base_url=served.base) as c:
        r = c.post("/repo/pulls", json={"from": "feature", "into": "main", "title": "holo"},
                   headers=served.auth("write"))
        assert r.status_code == 201, r.text
        number = r.json()["pull"]["number"]
        assert r.json()["pull"]["author"] == "writeer"
        r = c.post(f"/repo/pulls/{number}/check", headers=served.auth("write"))
        assert r.status_code == 200 and r.json()["report"]["incoming"] == ["holo"]
        assert c.post(f"/repo/pulls/{number}/merge", headers=served.auth("write")).status_code == 403
        assert served.repo().head("main") == base
        r = c.post(f"/repo/pulls/{number}/merge", json={"policy": "allow"}, headers=served.auth("maintain"))
        assert r.status_code == 200, r.text
        merged = r.json()["commit"]
        listing = c.get("/api/pulls", headers=served.auth("read")).json()["pulls"]
        assert listing[0]["state"] == "merged" and listing[0]["counts"] is not None
        r = c.post("/repo/pulls", json={"from": "/etc#main", "into": "main", "title": "x"},
                   headers=served.auth("write"))
        assert r.status_code == 400
    server = served.repo()
    assert server.head("main") == merged
    assert server.get_commit("main").parents == (base, head)
