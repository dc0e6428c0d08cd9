"""JSON and PNG endpoints under ``/api`` that the web view (``static/``) draws from.

- ``/api/overview``: default branch, branches, tags, protected branches
- ``/api/graph``: commits reachable from every branch and tag, newest first, with parents
- ``/api/population``: sources and species at a revision
- ``/api/species/{hash}``: a species and its FSC curve (1-D ``fsc`` array: shell i at
  frequency i / (box · pixel size) 1/Å, as in ``mrepo.kernels.fsc``; a (2, n) array
  is read as frequency and FSC rows)
- ``/api/sources/{hash}``: a data source's items, paginated
- ``/api/arrays/{hash}/slice.png``: the central section of a 3-D (z, y, x) array as 8-bit
  grayscale PNG (row 0 at the top)
- ``/api/pulls`` and ``/api/pulls/{n}``: pull requests with their collision reports
"""

from __future__ import annotations

import heapq
import threading
from collections import OrderedDict
from datetime import datetime
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Path, Query, Response

from ..graph import Commit, DataSource, Item, Population, Species
from ..store import InvalidInput, MrepoError, ObjectNotFound, deref
from .auth import require
from .context import ServerContext
from .errors import ApiError
from .png import central_slice, encode_png, to_uint8
from .protocol import HASH_PATTERN

MAX_SLICE_ELEMENTS = 512 ** 3
HashParam = Annotated[str, Path(pattern=HASH_PATTERN, description="BLAKE3 hex digest")]


class PngCache:
    """Rendered slices by (array hash, axis): content-addressed, so never stale."""

    def __init__(self, size: int = 256):
        self._data: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: tuple[str, int]) -> bytes | None:
        with self._lock:
            return self._data.get(key)

    def put(self, key: tuple[str, int], value: bytes) -> None:
        with self._lock:
            self._data[key] = value
            while len(self._data) > self._size:
                self._data.popitem(last=False)


def commit_graph(ctx: ServerContext, limit: int) -> dict[str, Any]:
    """Up to ``limit`` commits reachable from branches and tags, newest first (by time, then hash)."""
    repo = ctx.repo
    labels: dict[str, list[str]] = {}
    heads: list[str] = []
    for key, h in repo.refs.list("refs/"):
        if key.startswith(("refs/heads/", "refs/tags/")):
            labels.setdefault(h, []).append(key.removeprefix("refs/heads/").replace("refs/tags/", "tag: "))
            heads.append(h)
    heap: list[tuple[float, str, Commit]] = []
    seen: set[str] = set()

    def push(h: str) -> None:
        if h in seen:
            return
        seen.add(h)
        try:
            c = Commit.load(repo.objects, h)
        except (MrepoError, KeyError):
            return
        heapq.heappush(heap, (_neg(c.time), h, c))

    for h in heads:
        push(h)
    out = []
    while heap and len(out) < limit:
        _, h, c = heapq.heappop(heap)
        out.append({"hash": h, "parents": list(c.parents), "message": c.message, "author": c.author,
                    "time": c.time, "operation": (c.operation or {}).get("name"), "refs": labels.get(h, [])})
        for p in c.parents:
            push(p)
    return {"commits": out, "truncated": bool(heap)}


def _neg(time: str) -> float:
    """Sort key putting later ISO 8601 UTC times first in a min-heap (unparsable times last)."""
    try:
        return -datetime.fromisoformat(time.replace("Z", "+00:00")).timestamp()
    except (ValueError, AttributeError):
        return 0.0


def fsc_curve(ctx: ServerContext, sp: Species) -> dict[str, Any] | None:
    """{"frequency": 1/Å, "fsc": values} of a species' ``fsc`` array, or None."""
    if sp.fsc is None:
        return None
    arr = np.asarray(ctx.repo.objects.get_array(sp.fsc), dtype=np.float64)
    if arr.ndim == 1:
        freq = np.arange(arr.size) / (sp.box * sp.pixel_size)
        values = arr
    elif arr.ndim == 2 and arr.shape[0] == 2:
        freq, values = arr[0], arr[1]
    elif arr.ndim == 2 and arr.shape[1] == 2:
        freq, values = arr[:, 0], arr[:, 1]
    else:
        return {"error": f"unexpected FSC array shape {list(arr.shape)}"}
    return {"frequency": [round(float(f), 6) for f in freq], "fsc": [round(float(v), 6) for v in values]}


def build_router(ctx: ServerContext) -> APIRouter:
    router = APIRouter(prefix="/api", tags=["web view"], dependencies=[Depends(require(ctx.policy, "read"))])
    repo = ctx.repo
    cache = PngCache()

    @router.get("/overview", summary="Branches, tags and protections")
    def overview() -> dict:
        return {"url": "/repo", "default_branch": repo.default_branch, "branches": repo.branches(),
                "tags": repo.tags(), "protected": sorted(ctx.protected)}

    @router.get("/graph", summary="Commit graph of all branches and tags, newest first")
    def graph(limit: Annotated[int, Query(ge=1, le=2000)] = 300) -> dict:
        return commit_graph(ctx, limit)

    @router.get("/population", summary="Sources and species at a revision")
    def population(rev: Annotated[str | None, Query(max_length=300)] = None) -> dict:
        commit = repo.resolve(rev or repo.default_branch)
        pop = Population.load(repo.objects, Commit.load(repo.objects, commit).population)
        sources = []
        for name, h in sorted(pop.sources.items()):
            src = DataSource.load(repo.objects, h)
            sources.append({"name": name, "hash": h, "items": len(src.items)})
        species = []
        for name, h in sorted(pop.species.items()):
            sp = Species.load(repo.objects, h)
            count = repo.objects.get_record(sp.particles).get("count")
            species.append({"name": name, "hash": h, "resolution": sp.resolution, "box": sp.box,
                            "pixel_size": sp.pixel_size, "symmetry": sp.symmetry, "diameter": sp.diameter,
                            "particles": count, "half1": sp.half1, "half2": sp.half2, "has_fsc": sp.fsc is not None})
        return {"commit": commit, "name": pop.name, "sources": sources, "species": species}

    @router.get("/species/{h}", summary="A species with its FSC curve")
    def species(h: HashParam) -> dict:
        sp = Species.load(repo.objects, h)
        body = repo.objects.get_record(h, "species")
        return {"hash": h, "record": body, "fsc": fsc_curve(ctx, sp)}

    @router.get("/sources/{h}", summary="A data source's items")
    def source(h: HashParam, offset: Annotated[int, Query(ge=0)] = 0,
               limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> dict:
        src = DataSource.load(repo.objects, h)
        keys = sorted(src.items)
        items = []
        for key in keys[offset:offset + limit]:
            it = Item.load(repo.objects, src.items[key])
            items.append({"name": it.name, "kind": it.kind, "hash": src.items[key], "raw": it.raw.hash,
                          "size": it.raw.size, "models": sorted(it.models), "refined_with": len(it.refined_with)})
        return {"name": src.name, "hash": h, "total": len(keys), "offset": offset, "items": items}

    @router.get("/arrays/{h}/slice.png", summary="Central section of a 3-D array as PNG",
                responses={200: {"content": {"image/png": {}}}})
    def slice_png(h: HashParam, axis: Annotated[int, Query(ge=0, le=2)] = 0) -> Response:
        png = cache.get((h, axis))
        if png is None:
            meta = repo.objects.array_meta(h)
            if len(meta.shape) != 3 or int(np.prod(meta.shape)) > MAX_SLICE_ELEMENTS or 0 in meta.shape:
                raise ApiError(400, f"array {h} has shape {list(meta.shape)}: slices need a 3-D volume of at most "
                               f"{MAX_SLICE_ELEMENTS} voxels")
            vol = repo.objects.get_array(h)
            png = encode_png(to_uint8(central_slice(vol.real if np.iscomplexobj(vol) else vol, axis)))
            cache.put((h, axis), png)
        return Response(png, media_type="image/png", headers={"cache-control": "public, max-age=31536000"})

    @router.get("/pulls", summary="Pull requests (refs/pulls/<n>) with their check summaries")
    def pulls() -> dict:
        out = []
        for key, h in repo.refs.list("refs/pulls/"):
            out.append(_pull_summary(ctx, key, h))
        return {"pulls": out}

    @router.get("/pulls/{number}", summary="One pull request with its collision report")
    def pull(number: Annotated[int, Path(ge=1, le=10 ** 9)]) -> dict:
        key = f"refs/pulls/{number}"
        h = repo.refs.get(key)
        if h is None:
            raise ApiError(404, f"no pull request #{number}")
        summary = _pull_summary(ctx, key, h)
        report = None
        check = summary.get("check")
        if check:
            report = repo.objects.get_record(check)
        return {**summary, "report": report}

    return router


def _pull_summary(ctx: ServerContext, key: str, h: str) -> dict[str, Any]:
    """A pull-request record read generically (any record kind under refs/pulls/)."""
    objects = ctx.repo.objects
    try:
        kind, body = objects.get_record_with_kind(h)
    except (ObjectNotFound, InvalidInput) as exc:
        return {"ref": key, "hash": h, "error": str(exc)}
    out: dict[str, Any] = {"ref": key, "number": key.removeprefix("refs/pulls/"), "hash": h, "kind": kind}
    if isinstance(body, dict):
        for field in ("title", "author", "into", "state", "created", "updated", "description"):
            if field in body:
                out[field] = body[field]
        src = body.get("from")
        if isinstance(src, dict):
            out["from"] = src.get("name")
            try:
                out["head"] = deref(src.get("commit"))
            except InvalidInput:
                pass
        for field in ("check", "merge_commit"):
            try:
                out[field] = deref(body.get(field)) if body.get(field) is not None else None
            except InvalidInput:
                out[field] = None
        if out.get("check"):
            try:
                report = objects.get_record(out["check"])
                out["counts"] = report.get("counts") if isinstance(report, dict) else None
            except MrepoError:
                out["counts"] = None
    return out
