"""Pull requests through the server: open and check by writers, merge (moving protected main) by maintainers."""

from __future__ import annotations

import json

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


def _cli(args: list[str], token: str):  # noqa: ANN202 - click Result
    from typer.testing import CliRunner

    from mrepo.cli import app

    return CliRunner().invoke(app, args, env={"MREPO_TOKEN": token})


def test_cli_pull_requests_go_through_the_server(served: Served, tmp_path) -> None:
    """`mrepo pr open/check/merge/close -R http://…` use the endpoints: the server sets number, author and
    state, and a maintainer's merge moves the protected branch (a local merge would get 403)."""
    local = Repository.init(str(tmp_path / "l"))
    base = local.commit(make_population(local, species=("apo",)), message="base", branch="main", author="t",
                        time="2025-01-01T00:00:00Z")
    local.create_branch("feature", "main")
    head = local.commit(make_population(local, species=("apo", "holo")), message="holo", branch="feature",
                        author="t", time="2025-01-02T00:00:00Z")
    local.create_branch("other", "main")
    push(local, served.url, "main", options=served.opts("maintain"))
    push(local, served.url, "feature", options=served.opts("write"))
    r = _cli(["pr", "open", "--from", "feature", "--into", "main", "-t", "holo", "-R", served.url, "--json"],
             served.tokens["write"])
    assert r.exit_code == 0, r.output
    opened = json.loads(r.stdout)
    assert opened["number"] == 1 and opened["author"] == "writeer" and opened["state"] == "open"
    r = _cli(["pr", "check", "1", "-R", served.url, "--json"], served.tokens["write"])
    assert r.exit_code in (0, 9), r.output
    assert json.loads(r.stdout)["incoming"] == ["holo"]
    r = _cli(["pr", "merge", "1", "--policy", "allow", "-R", served.url], served.tokens["write"])
    assert r.exit_code == 5, r.output  # access denied: merging needs maintain
    assert served.repo().head("main") == base
    r = _cli(["pr", "merge", "1", "--policy", "allow", "-R", served.url, "--json"], served.tokens["maintain"])
    assert r.exit_code == 0, r.output
    merged = json.loads(r.stdout)["commit"]
    server = served.repo()
    assert server.head("main") == merged and server.get_commit("main").parents == (base, head)
    r = _cli(["pr", "open", "--from", "feature", "--into", "main", "-t", "again", "-R", served.url],
             served.tokens["write"])
    assert r.exit_code == 0, r.output
    r = _cli(["pr", "close", "2", "-R", served.url], served.tokens["write"])
    assert r.exit_code == 0, r.output
    states = {p["number"]: (p["state"], p["author"]) for p in
              httpx.get(served.url + "/pulls", headers=served.auth("read")).json()["pulls"]}
    assert states == {1: ("merged", "writeer"), 2: ("closed", "writeer")}


def test_pull_request_refs_change_only_through_the_endpoints(served: Served, tmp_path) -> None:
    local = Repository.init(str(tmp_path / "l"))
    head = local.commit(make_population(local), message="m", branch="dev", author="t", time="2025-01-01T00:00:00Z")
    push(local, served.url, "dev", options=served.opts("write"))
    body = (head + "\n").encode()
    with httpx.Client(base_url=served.base) as c:
        for ref in ("pulls/1", "pulls/7"):
            for role in ("write", "maintain"):
                r = c.put(f"/repo/refs/{ref}", content=body, headers={**served.auth(role), "If-None-Match": "*"})
                assert r.status_code == 403, (ref, role, r.text)
        r = c.put("/repo/refs/pulls/0", content=body, headers={**served.auth("maintain"), "If-None-Match": "*"})
        assert r.status_code == 400
        # Ref namespaces: heads/dev exists, so heads/dev/x clashes (and the other way round): 409, not 500.
        r = c.put("/repo/refs/heads/dev/x", content=body, headers={**served.auth("write"), "If-None-Match": "*"})
        assert r.status_code == 409, r.text
        assert c.put("/repo/refs/heads/a/b", content=body,
                     headers={**served.auth("write"), "If-None-Match": "*"}).status_code == 201
        r = c.put("/repo/refs/heads/a", content=body, headers={**served.auth("write"), "If-None-Match": "*"})
        assert r.status_code == 409, r.text
    assert sorted(k for k, _ in served.repo().refs.list("refs/")) == ["refs/heads/a/b", "refs/heads/dev"]
