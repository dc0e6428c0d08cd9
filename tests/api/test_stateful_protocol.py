"""Stateful test of the HTTP protocol against a real server on 127.0.0.1.

Hypothesis drives arbitrary sequences of pushes, raw ref updates and deletions, hostile uploads and
pull-request operations (open, check, merge, close) from tokens of the three roles (read, write,
maintain). Every answer is compared with a model of what the server must do: a role below the one a
request needs gets exactly 403, a forbidden ref (protected ``main``, pull requests, remote-tracking
refs, a tag that exists, for a writer) 403, a ref on anything but a commit 400, a stale or clashing
compare-and-swap 409, and everything else succeeds. After every step: the server's branches and tags
are exactly the model's (so the protected ``main`` moved only by a maintainer's pull-request merge),
its pull requests are exactly those opened through the endpoint, in the states the endpoints gave
them, and every ref names a record of its kind. At the end: ``verify`` passes and every reader
command (branches, log, population, pull requests, the web view's JSON) succeeds with a read token.

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
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from mrepo.api import create_app
from mrepo.graph import Commit, Repository, is_ancestor, list_pulls, push, verify
from mrepo.graph.pulls import list_pulls as list_pulls_graph
from mrepo.store import MrepoError, RefConflict, hash_bytes
from mrepo.store.hashing import record_bytes
from mrepo.store.http_backend import AccessDenied
from tests.api.conftest import make_tokens
from tests.api.server import thread_server
from tests.factories import make_population

ROLES = ("read", "write", "maintain")
BRANCHES = ("main", "dev", "feat", "feat/a")
#: Refs written directly (PUT/DELETE /repo/refs/...), in three groups drawn equally often, so that
#: tags and the namespaces no token may write come up as often as branches.
BRANCH_REFS = ("heads/main", "heads/dev", "heads/feat", "heads/feat/a", "heads/main/x")
TAG_REFS = ("tags/v1", "tags/v2")
OTHER_REFS = ("pulls/1", "pulls/0", "remotes/x/main")
REFS = st.sampled_from(BRANCH_REFS) | st.sampled_from(TAG_REFS) | st.sampled_from(OTHER_REFS)
TARGETS = ("main-commit", "root-commit", "population", "absent")
STALE = '"' + "0" * 64 + '"'  # an ETag no ref has
EXAMPLES = int(os.environ.get("MREPO_STATEFUL_EXAMPLES", "6"))
STEPS = int(os.environ.get("MREPO_STATEFUL_STEPS", "40"))


def forbidden(role: str, ref: str, exists: bool) -> bool:
    """A write of ``ref`` (``heads/...``, ``tags/...``) that ``role`` may never make: 403 whatever else."""
    namespace = ref.split("/")[0]
    return (
        role == "read"
        or namespace in ("remotes", "pulls")
        or ref == "heads/main"
        or (ref.startswith("heads/main/") and role != "maintain")
        or (namespace == "tags" and exists and role != "maintain")
    )


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
        self.client = httpx.Client(base_url=self.base, timeout=60)
        self.local = Repository.init(str(self.tmp / "local"))
        pop = make_population(self.local, n_items=1)
        self.pop = pop
        self.root_commit = self.local.commit(
            pop, message="root", branch="main", author="t", time="2025-01-01T00:00:00Z"
        )
        push(self.local, self.url, "main", options=self.opts("maintain"))  # bootstrap of the protected branch
        r = self.client.put(
            "/repo/refs/tags/v1",
            content=(self.root_commit + "\n").encode(),
            headers={**self.auth("maintain"), "If-None-Match": "*"},
        )
        assert r.status_code == 201, r.text  # a tag to move (or not) from the first step on
        #: The model: every branch and tag (``heads/x``, ``tags/y``) and every pull request's state.
        self.refs: dict[str, str] = {"heads/main": self.root_commit, "tags/v1": self.root_commit}
        self.pulls: dict[int, str] = {}
        self.n = 0

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
        return Commit(
            (parent,), p.save(self.local.objects), "t", "2025-01-02T00:00:00Z", f"c{self.n}", {"name": "commit"}, "test"
        ).save(self.local.objects)

    def _clashes(self, ref: str) -> bool:
        """Creating ``ref`` would clash with a ref of the model (``heads/feat`` vs ``heads/feat/a``)."""
        return any(k.startswith(ref + "/") or ref.startswith(k + "/") for k in self.refs)

    def _check(self, r: httpx.Response, expected: set[int]) -> None:
        """The answer is one the model allows; an error is the JSON ``{error, detail}``."""
        assert r.status_code < 500, (r.request.method, r.request.url.path, r.status_code, r.text)
        assert r.status_code in expected, (r.request.method, r.request.url.path, r.status_code, expected, r.text)
        if r.status_code >= 400 and r.request.method != "HEAD":
            assert set(r.json()) == {"error", "detail"}

    def _ref_state(self, ref: str) -> httpx.Response:
        return self.client.get(f"/repo/refs/{ref}", headers=self.auth("read"))

    # ------------------------------------------------------------------ rules
    @rule(role=st.sampled_from(ROLES), branch=st.sampled_from(BRANCHES), from_root=st.booleans())
    def push_branch(self, role: str, branch: str, from_root: bool) -> None:
        current = self.refs.get(f"heads/{branch}")
        known = current is not None and self.local.objects.has_object(current)
        parent = current if known and not from_root else self.root_commit
        head = self._new_commit(parent)
        if current is not None and not (known and is_ancestor(self.local.objects, current, head)):
            outcome = "conflict"  # not a fast-forward: the client refuses before sending anything
        elif role == "read" or branch == "main":
            outcome = "denied"
        else:
            outcome = "conflict" if current is None and self._clashes(f"heads/{branch}") else "ok"
        mine = "local-" + branch.replace("/", "-")  # local names that never clash with each other
        self.local.refs.update(f"refs/heads/{mine}", head, self.local.refs.get(f"refs/heads/{mine}"))
        try:
            push(self.local, self.url, mine, remote_branch=branch, options=self.opts(role))
            got = "ok"
        except AccessDenied:
            got = "denied"
        except RefConflict:
            got = "conflict"
        assert got == outcome, (role, branch, current, got, outcome)
        if got == "ok":
            self.refs[f"heads/{branch}"] = head
            assert self.server().head(branch) == head

    @rule(
        role=st.sampled_from(ROLES),
        ref=REFS,
        points_at=st.sampled_from(TARGETS),
        cas=st.sampled_from(("current", "create", "stale")),
    )
    def raw_ref_update(self, role: str, ref: str, points_at: str, cas: str) -> None:
        server = self.server()
        value = {
            "main-commit": self.refs["heads/main"],
            "root-commit": self.root_commit,
            "population": server.get_commit("main").population,
            "absent": "ab" * 32,
        }[points_at]
        current = self._ref_state(ref)
        exists = current.status_code == 200
        headers = self.auth(role)
        if cas == "create" or (cas == "current" and not exists):
            headers["If-None-Match"] = "*"
        else:
            headers["If-Match"] = current.headers["etag"] if cas == "current" else STALE
        if role == "read":
            expected = {403}
        elif ref == "pulls/0":
            expected = {400}  # not a pull-request number
        elif forbidden(role, ref, exists):
            expected = {403}
        else:
            expected = set()
            if points_at in ("population", "absent"):
                expected.add(400)  # branches and tags name commits the server has
            if cas == "stale" or (cas == "create" and exists) or (not exists and self._clashes(ref)):
                expected.add(409)
            expected = expected or {200 if exists else 201}
        r = self.client.put(f"/repo/refs/{ref}", content=(value + "\n").encode(), headers=headers)
        self._check(r, expected)
        if r.status_code in (200, 201):
            self.refs[ref] = value

    @rule(role=st.sampled_from(ROLES), ref=REFS, stale=st.booleans())
    def delete_ref(self, role: str, ref: str, stale: bool) -> None:
        current = self._ref_state(ref)
        exists = current.status_code == 200
        etag = current.headers["etag"] if exists and not stale else STALE
        if role != "maintain":
            expected = {403}
        elif ref == "pulls/0":
            expected = {400}
        elif forbidden(role, ref, exists):
            expected = {403}
        else:
            expected = {204} if exists and not stale else {409}
        r = self.client.delete(f"/repo/refs/{ref}", headers={**self.auth(role), "If-Match": etag})
        self._check(r, expected)
        if r.status_code == 204:
            del self.refs[ref]

    @rule(
        role=st.sampled_from(ROLES),
        variant=st.sampled_from(("spaces", "nan", "duplicate", "kind", "orphan", "parentless-ref")),
    )
    def hostile_upload(self, role: str, variant: str) -> None:
        pop = self.server().get_commit("main").population
        bodies = {
            "spaces": b'record\0population\0{"name": "p", "sources": {}, "species": {}}',
            "nan": b'record\0population\0{"metadata":{"x":NaN},"name":"p","sources":{},"species":{}}',
            "duplicate": b'record\0population\0{"name":"p","name":"q","sources":{},"species":{}}',
            "kind": b'record\0gadget\0{"x":1}',
            "orphan": record_bytes(
                "commit",
                {
                    "parents": [{"@record": "cd" * 32}],
                    "population": {"@record": pop},
                    "author": "x",
                    "time": "2025-01-01T00:00:00Z",
                    "message": "m",
                    "operation": {"name": "commit"},
                    "mrepo_version": "0",
                },
            ),
        }
        if variant == "parentless-ref":  # a commit without a valid parent list, then a branch on it
            data = b'record\0commit\0{"population":{"@record":"' + pop.encode() + b'"}}'
        else:
            data = bodies[variant]
        h = hash_bytes(data)
        r = self.client.put(f"/repo/objects/{h}", content=data, headers=self.auth(role))
        self._check(r, {403} if role == "read" else {400})
        assert self.client.head(f"/repo/objects/{h}", headers=self.auth("read")).status_code == 404

    @rule(role=st.sampled_from(ROLES), source=st.sampled_from(("dev", "feat", "feat/a", "main")))
    def pr_open(self, role: str, source: str) -> None:
        if role == "read":
            expected = {403}
        elif source == "main":
            expected = {400}  # a branch proposed for itself
        elif f"heads/{source}" not in self.refs:
            expected = {400, 404}
        else:
            expected = {201}
        r = self.client.post(
            "/repo/pulls", json={"from": source, "into": "main", "title": f"t{self.n}"}, headers=self.auth(role)
        )
        self._check(r, expected)
        if r.status_code == 201:
            pr = r.json()["pull"]
            assert pr["author"] == f"{role}er" and pr["state"] == "open"
            assert pr["number"] == max(self.pulls, default=0) + 1  # numbers are the server's, in order
            self.pulls[pr["number"]] = "open"

    @rule(
        role=st.sampled_from(ROLES),
        number=st.integers(1, 4),
        action=st.sampled_from(("check", "close", "merge-fail", "merge-allow")),
    )
    def pr_act(self, role: str, number: int, action: str) -> None:
        path = f"/repo/pulls/{number}/{action.split('-')[0]}"
        body = {"policy": action.split("-")[1]} if action.startswith("merge") else None
        if role == "read" or (action.startswith("merge") and role != "maintain"):
            expected = {403}
        elif number not in self.pulls:
            expected = {404}
        else:
            expected = {200, 400, 404, 409}  # e.g. a deleted source branch, a conflict, a closed pull request
        r = self.client.post(path, json=body, headers=self.auth(role))
        self._check(r, expected)
        if r.status_code != 200:
            return
        doc = r.json()
        state = doc["pull"]["state"]
        before = self.pulls[number]
        assert before != "merged" or state == "merged", (number, before, state)
        assert state == {"check": before, "close": "closed"}.get(action, "merged"), (number, action, state)
        self.pulls[number] = state
        if action.startswith("merge"):
            assert doc["pull"]["into"] == "main"
            self.refs["heads/main"] = doc["commit"]  # the only way main moves

    # ------------------------------------------------------------------ invariants
    @invariant()
    def protected_main_moves_only_by_maintainer_merges(self) -> None:
        assert self.server().head("main") == self.refs["heads/main"]

    @invariant()
    def branches_and_tags_are_the_model(self) -> None:
        server = {
            k.removeprefix("refs/"): h
            for k, h in self.server().refs.list("refs/")
            if k.startswith(("refs/heads/", "refs/tags/"))
        }
        assert server == self.refs

    @invariant()
    def pull_requests_are_the_model(self) -> None:
        pulls = list_pulls_graph(self.server())
        assert {pr.number: pr.state for pr in pulls} == self.pulls
        assert all(pr.author in {"writeer", "maintainer"} for pr in pulls)

    @invariant()
    def refs_point_at_records_of_their_kind(self) -> None:
        server = self.server()
        for key, h in server.refs.list("refs/"):
            kind, _ = server.objects.get_record_with_kind(h)
            assert kind == ("pull-request" if key.startswith("refs/pulls/") else "commit"), (key, kind)

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


ServerProtocol.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
TestServerProtocol = ServerProtocol.TestCase
