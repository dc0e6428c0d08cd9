"""Pull requests on an ``mrepo serve`` remote, through its pull-request endpoints (``/repo/pulls``).

On a server, pull requests belong to the server: it numbers them, sets their author (the token's
name) and state, and only its merge endpoint moves a protected branch. ``mrepo pr open/check/
merge/close -R http://…`` therefore call these endpoints instead of changing refs themselves.
"""

from __future__ import annotations

from typing import Any

from ..graph.collisions import CollisionReport
from ..graph.pulls import PullCheck, PullMerge, PullRequest
from ..store import protocol_names as names
from ..store.http_backend import HttpBackend


def is_remote(url: str) -> bool:
    return url.startswith(("http://", "https://"))


class RemotePulls:
    """Pull-request endpoints of one server (token from ``$MREPO_TOKEN`` like every HTTP remote)."""

    def __init__(self, url: str, options: dict[str, Any] | None = None):
        self.http = HttpBackend(url, options)

    def close_client(self) -> None:
        self.http.close()

    def _post(self, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        resp = self.http._request("POST", f"{names.PULLS_PATH}{path}", idempotent=False, json=body or {})
        self.http._raise(resp, names.PULLS_PATH)
        return resp.json()

    def open(self, source: str, into: str, title: str, description: str = "") -> PullRequest:
        doc = self._post("", {"from": source, "into": into, "title": title, "description": description})
        return PullRequest(**doc[names.F_PULL])

    def check(self, number: int, **opts: Any) -> PullCheck:
        doc = self._post(f"/{int(number)}/check", {k: v for k, v in opts.items() if v is not None})
        return PullCheck(PullRequest(**doc[names.F_PULL]), CollisionReport.from_json(doc["report"]),
                         doc["report_hash"], doc["target"], doc["head"], doc.get("base"))

    def merge(self, number: int, *, policy: str = "fail", message: str | None = None, **opts: Any) -> PullMerge:
        body = {"policy": policy, "message": message, **{k: v for k, v in opts.items() if v is not None}}
        doc = self._post(f"/{int(number)}/merge", body)
        return PullMerge(PullRequest(**doc[names.F_PULL]), doc["commit"], doc["kind"], doc.get("report_hash"),
                         doc.get("dropped"))

    def close(self, number: int) -> PullRequest:
        return PullRequest(**self._post(f"/{int(number)}/close", None)[names.F_PULL])
