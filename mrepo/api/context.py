"""What every route of one server shares: the repository, access policy, staging and limits."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from ..graph import Repository
from .auth import AccessPolicy
from .errors import ApiError
from .staging import ArrayStaging


@dataclass
class ServerContext:
    """State of one running server (one repository)."""

    repo: Repository
    policy: AccessPolicy
    staging: ArrayStaging
    protected: frozenset[str]
    max_body_bytes: int

    @property
    def storage(self):  # noqa: ANN201 - mrepo.store.Storage
        return self.repo.storage


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) more than ``limit`` bytes even without Content-Length."""
    parts: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise ApiError(413, f"request body larger than {limit} bytes", headers={"Connection": "close"})
        parts.append(chunk)
    return b"".join(parts)


async def blocking(fn, *args):  # noqa: ANN001, ANN201 - thin wrapper
    """Run blocking storage work in the thread pool."""
    return await run_in_threadpool(fn, *args)
