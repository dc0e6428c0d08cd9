"""Pull requests through the server (``/repo/pulls``), over :mod:`mrepo.graph.pulls`.

Opening, checking and closing need role ``write``; merging needs ``maintain`` and is
the only way a protected branch moves. Sources are branches of the served
repository only (a ``URL#branch`` source would make the server fetch arbitrary
URLs, so it is refused). The acting token's name is the author.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field

from ..store import InvalidInput
from ..store import protocol_names as names
from .auth import require
from .context import ServerContext, blocking

Number = Annotated[int, Path(ge=1, le=10 ** 9)]


class OpenPull(BaseModel):
    source: str = Field(alias="from", min_length=1, max_length=200, description="branch of the served repository")
    into: str = Field(min_length=1, max_length=200)
    title: str = Field(min_length=1, max_length=500)
    description: str = Field("", max_length=20000)

    model_config = {"populate_by_name": True}


class CheckPull(BaseModel):
    overlap_factor: float | None = Field(None, gt=0, le=10)
    reclass_tolerance: float | None = Field(None, ge=0, le=1e5)
    duplicate_tolerance: float | None = Field(None, ge=0, le=1e5)


class MergePull(CheckPull):
    policy: Literal["fail", "drop-incoming", "drop-existing", "allow"] = "fail"
    message: str | None = Field(None, max_length=5000)


def _opts(body: CheckPull) -> dict[str, Any]:
    return {k: v for k, v in body.model_dump().items() if v is not None and k not in ("policy", "message")}


def build_router(ctx: ServerContext) -> APIRouter:
    from ..graph import pulls  # imported here: the module is optional at import time of mrepo.api

    router = APIRouter(prefix=f"{names.MOUNT}/{names.PULLS_PATH}", tags=["pull requests"])
    repo = ctx.repo
    reader = require(ctx.policy, "read")
    writer = require(ctx.policy, "write")
    maintainer = require(ctx.policy, "maintain")

    @router.get("", dependencies=[Depends(reader)], summary="Pull requests by number")
    def list_all(state: Annotated[Literal["open", "merged", "closed"] | None, Query()] = None) -> dict:
        return {"pulls": [p.to_json() for p in pulls.list_pulls(repo, state)]}

    @router.get("/{number}", dependencies=[Depends(reader)], summary="One pull request and its latest report")
    def get_one(number: Number) -> dict:
        h, pr = pulls.get_pull(repo, number)
        report = repo.objects.get_record(pr.check) if pr.check else None
        return {"hash": h, "pull": pr.to_json(), "report": report}

    @router.post("", status_code=201, summary="Open a pull request from a branch of this repository")
    async def open_one(body: OpenPull, who=Depends(writer)) -> dict:
        if "#" in body.source:
            raise InvalidInput("the server opens pull requests from its own branches only; push the branch first")
        pr = await blocking(lambda: pulls.open_pull(repo, body.source, body.into, body.title,
                                                    description=body.description, author=who.name))
        return {"pull": pr.to_json()}

    @router.post("/{number}/check", summary="Run the checks (conflicts, collisions) and store the report")
    async def check_one(number: Number, body: CheckPull | None = None, _=Depends(writer)) -> dict:
        opts = _opts(body or CheckPull())
        result = await blocking(lambda: pulls.check_pull(repo, number, **opts))
        return {"pull": result.pull.to_json(), "report_hash": result.report_hash, "report": result.report.to_json(),
                "target": result.target, "head": result.head, "base": result.base}

    @router.post("/{number}/close", summary="Close an open pull request")
    async def close_one(number: Number, _=Depends(writer)) -> dict:
        pr = await blocking(lambda: pulls.close_pull(repo, number))
        return {"pull": pr.to_json()}

    @router.post("/{number}/merge", summary="Merge a pull request (maintainers; moves protected branches)")
    async def merge_one(number: Number, body: MergePull | None = None, who=Depends(maintainer)) -> dict:
        body = body or MergePull()
        opts = _opts(body)
        result = await blocking(lambda: pulls.merge_pull(repo, number, policy=body.policy, message=body.message,
                                                         author=who.name, **opts))
        return {"pull": result.pull.to_json(), "commit": result.commit, "kind": result.kind,
                "report_hash": result.report_hash, "dropped": result.dropped}

    return router
