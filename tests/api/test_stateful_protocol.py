"""Stateful test of the HTTP protocol against a real server on 127.0.0.1.

Hypothesis drives arbitrary sequences of pushes, raw ref updates, hostile uploads and pull-request
operations (open, check, merge, close) from tokens of the three roles (read, write, maintain).
After every step: no answer is a server error, the protected ``main`` moved only by a maintainer's
pull-request merge, every branch and tag names a commit and every ``refs/pulls/<n>`` a pull request.
At the end: ``verify`` passes and every reader command (branches, log, population, pull requests,
the web view's JSON) succeeds with a read token.

``MREPO_STATEFUL_EXAMPLES`` / ``MREPO_STATEFUL_STEPS`` scale the run (defaults keep it short).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import httpx
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from mrepo.api import create_app
from mrepo.graph import Commit, Repository, list_pulls, push, verify
from mrepo.graph.pulls import list_pulls as list_pulls_graph
from mrepo.store import MrepoError, RefConflict, hash_bytes
from mrepo.store.hashing import record_bytes
from mrepo.store.http_backend import AccessDenied
from tests.api.conftest import make_tokens
from tests.api.server import thread_server
from tests.factories import make_population

ROLES = ("read", "write", "maintain")
BRANCHES = ("main", "dev", "feat", "feat/a")
RAW_REFS = ("heads/main", "heads/dev", "heads/feat", "heads/feat/a", "tags/v1", "pulls/1", "pulls/0",
            "remotes/x/main")
EXAMPLES = int(os.environ.get("MREPO_STATEFUL_EXAMPLES", "4"))
STEPS = int(os.environ.get("MREPO_STATEFUL_STEPS", "10"))


class ServerProtocol(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="mrepo-stateful-"))
        self.root = self.tmp / "srv"
        Repository.init(str(self.root)).close()
        self.tokens = make_tokens(self.tmp / "tokens.toml")
        app = create_app(str(self.root), self.tmp / "tokens.toml", protected=("main",), access_log=False)
        self._server = thread_server(app)
        self.base = self._server.__enter__()
        self.url = self.base + "/repo"
        self.local = Repository.init(str(self.tmp / "local"))
        pop = make_population(self.local, n_items=1)
        self.pop = pop
        self.root_commit = self.local.commit(pop, message="root", branch="main", author="t",
                                             time="2025-01-01T00:00:00Z")
        push(self.local, self.url, "main", options=self.opts("maintain"))  # bootstrap of the protected branch
        self.main = self.root_commit
        self.n = 0
        self.client = httpx.Client(base_url=self.base, timeout=60)

    def opts(self, role: str) -> dict:
        return {"token": self.tokens[role], "retries": 1}

    def auth(self, role: str) -> dict:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def server(self) -> Repository:
        return Repository.open(str(self.root))

    def teardown(self) -> None:
        try:
            self._final_checks()
        finally:
            self.client.close()
            self._server.__exit__(None, None, None)
            shutil.rmtree(self.tmp, ignore_errors=True)

    # ------------------------------------------------------------------ helpers
    def _new_commit(self, parent: str) -> str:
        self.n += 1
        p = replace(self.pop, metadata={"step": self.n})
        return Commit((parent,), p.save(self.local.objects), "t", "2025-01-02T00:00:00Z", f"c{self.n}",
                      {"name": "commit"}, "test").save(self.local.objects)

    def _ok(self, r: httpx.Response, allowed: set[int]) -> None:
        assert r.status_code < 500, (r.request.method, r.request.url.path, r.status_code, r.text)
        assert r.status_code in allowed, (r.request.method, r.request.url.path, r.status_code, r.text)
        if r.status_code >= 400 and r.request.method != "HEAD":
            assert set(r.json()) == {"error", "detail"}

    # ------------------------------------------------------------------ rules
    @rule(role=st.sampled_from(ROLES), branch=st.sampled_from(BRANCHES), from_root=st.booleans())
    def push_branch(self, role: str, branch: str, from_root: bool) -> None:
        current = self.server().head(branch)
        parent = current if current and not from_root and self.local.objects.has_object(current) \
            else self.root_commit
        head = self._new_commit(parent)
        mine = "local-" + branch.replace("/", "-")  # local names that never clash with each other
        self.local.refs.update(f"refs/heads/{mine}", head, self.local.refs.get(f"refs/heads/{mine}"))
        try:
            push(self.local, self.url, mine, remote_branch=branch, options=self.opts(role))
        except AccessDenied:
            assert role == "read" or branch == "main"
            return
        except RefConflict:
            return  # non-fast-forward, a namespace clash (feat vs feat/a) or a lost race: refused cleanly
        assert role != "read" and branch != "main"
        assert self.server().head(branch) == head

    @rule(role=st.sampled_from(ROLES), ref=st.sampled_from(RAW_REFS),
          points_at=st.sampled_from(("main-commit", "population", "absent")), create=st.booleans())
    def raw_ref_update(self, role: str, ref: str, points_at: str, create: bool) -> None:
        server = self.server()
        main = server.head("main")
        value = {"main-commit": main, "population": server.get_commit("main").population,
                 "absent": "ab" * 32}[points_at]
        current = self.client.get(f"/repo/refs/{ref}", headers=self.auth("read"))
        headers = {**self.auth(role)}
        if create or current.status_code != 200:
            headers["If-None-Match"] = "*"
        else:
            headers["If-Match"] = current.headers["etag"]
        r = self.client.put(f"/repo/refs/{ref}", content=(value + "\n").encode(), headers=headers)
        self._ok(r, {200, 201, 400, 403, 404, 409})
        if r.status_code in (200, 201):
            assert role != "read" and ref.split("/")[0] in ("heads", "tags") and ref != "heads/main"
            assert points_at == "main-commit"

    @rule(role=st.sampled_from(ROLES), variant=st.sampled_from(("spaces", "nan", "duplicate", "kind", "orphan",
                                                                "parentless-ref")))
    def hostile_upload(self, role: str, variant: str) -> None:
        pop = self.server().get_commit("main").population
        bodies = {
            "spaces": b'record\0population\0{"name": "p", "sources": {}, "species": {}}',
            "nan": b'record\0population\0{"metadata":{"x":NaN},"name":"p","sources":{},"species":{}}',
            "duplicate": b'record\0population\0{"name":"p","name":"q","sources":{},"species":{}}',
            "kind": b'record\0gadget\0{"x":1}',
            "orphan": record_bytes("commit", {"parents": [{"@record": "cd" * 32}], "population": {"@record": pop},
                                              "author": "x", "time": "2025-01-01T00:00:00Z", "message": "m",
                                              "operation": {"name": "commit"}, "mrepo_version": "0"}),
        }
        if variant == "parentless-ref":  # a commit without a valid parent list, then a branch on it
            data = b'record\0commit\0{"population":{"@record":"' + pop.encode() + b'"}}'
        else:
            data = bodies[variant]
        h = hash_bytes(data)
        r = self.client.put(f"/repo/objects/{h}", content=data, headers=self.auth(role))
        self._ok(r, {400, 403})
        assert self.client.head(f"/repo/objects/{h}", headers=self.auth("read")).status_code == 404

    @rule(role=st.sampled_from(ROLES), source=st.sampled_from(("dev", "feat", "feat/a", "main")))
    def pr_open(self, role: str, source: str) -> None:
        r = self.client.post("/repo/pulls", json={"from": source, "into": "main", "title": f"t{self.n}"},
                             headers=self.auth(role))
        self._ok(r, {201, 400, 403, 404})
        if r.status_code == 201:
            pr = r.json()["pull"]
            assert role != "read" and pr["author"] == f"{role}er" and pr["state"] == "open"

    @precondition(lambda self: self.server().refs.get("refs/pulls/1") is not None)
    @rule(role=st.sampled_from(ROLES), number=st.integers(1, 4),
          action=st.sampled_from(("check", "close", "merge-fail", "merge-allow")))
    def pr_act(self, role: str, number: int, action: str) -> None:
        path = f"/repo/pulls/{number}/{action.split('-')[0]}"
        body = {"policy": action.split("-")[1]} if action.startswith("merge") else None
        r = self.client.post(path, json=body, headers=self.auth(role))
        self._ok(r, {200, 400, 403, 404, 409})
        if r.status_code == 200 and action.startswith("merge"):
            assert role == "maintain"
            doc = r.json()
            if doc["pull"]["into"] == "main":
                self.main = doc["commit"]  # the only way main moves
        if r.status_code == 200:
            assert role != "read"

    # ------------------------------------------------------------------ invariants
    @invariant()
    def protected_main_moves_only_by_maintainer_merges(self) -> None:
        assert self.server().head("main") == self.main

    @invariant()
    def refs_point_at_records_of_their_kind(self) -> None:
        server = self.server()
        for key, h in server.refs.list("refs/"):
            kind, _ = server.objects.get_record_with_kind(h)
            assert kind == ("pull-request" if key.startswith("refs/pulls/") else "commit"), (key, kind)
        for pr in list_pulls_graph(server):
            assert pr.number >= 1 and pr.author in {"writeer", "maintainer"}

    def _final_checks(self) -> None:
        report = verify(self.server().storage)
        assert report.ok, report.problems
        reader = Repository.open(self.url, self.opts("read"))
        for branch in reader.branches():
            reader.log(branch)
            reader.population(branch)
        list_pulls(reader)
        for path in ("/api/overview", "/api/graph", "/api/pulls", "/repo/pulls", "/api/population?rev=main"):
            r = self.client.get(path, headers=self.auth("read"))
            assert r.status_code == 200, (path, r.text)
            json.loads(r.text)
        try:
            reader.close()
        except MrepoError:
            pass


ServerProtocol.TestCase.settings = settings(max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None,
                                            suppress_health_check=list(HealthCheck),
                                            phases=[Phase.explicit, Phase.reuse, Phase.generate])
TestServerProtocol = ServerProtocol.TestCase
