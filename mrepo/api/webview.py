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
- ``/api/arrays/{hash}/iso.png``: a shaded isosurface (``sigma`` above the mean) seen from
  ``azimuth``/``elevation`` degrees (:mod:`mrepo.api.isosurface`)
- ``/api/commits/{rev}``: a commit, its population summary and the diff to its first parent
- ``/api/species-history``: a species' resolution (Å) along the first-parent history of a revision
- ``/api/items/{hash}/thumbnail.png`` and ``/api/items/{hash}/ctf``: raw-data thumbnail and CTF
  fit of an item (:mod:`mrepo.api.item_views`)
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
from .isosurface import render_isosurface, sigma_level
from .item_views import ctf_fit, item_summary, raw_image, thumbnail
from .png import central_slice, encode_png, to_uint8
from .protocol import HASH_PATTERN

MAX_SLICE_ELEMENTS = 512 ** 3
#: Largest curve (values of an FSC array) sent as JSON; larger ones are answered with an error field.
MAX_CURVE_VALUES = 20000
MAX_ISO_ELEMENTS = 256 ** 3
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


def fsc_curve(ctx: ServerContext, sp: Species, array: str | None = None) -> dict[str, Any] | None:
    """{"frequency": 1/Å, "fsc": values} of a species' ``fsc`` array (or of ``array``), or None."""
    h = array or sp.fsc
    if h is None:
        return None
    n = int(np.prod(ctx.repo.objects.array_meta(h).shape))
    if n > MAX_CURVE_VALUES:  # a 4 M-entry "FSC" would cost hundreds of MiB of JSON: refused, not loaded
        return {"error": f"FSC array {h[:12]} has {n} values; the web view draws curves of at most "
                         f"{MAX_CURVE_VALUES}"}
    arr = np.asarray(ctx.repo.objects.get_array(h), dtype=np.float64)
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

    @router.get("/species/{h}", summary="A species with its FSC curves and map hashes")
    def species(h: HashParam) -> dict:
        sp = Species.load(repo.objects, h)
        body = repo.objects.get_record(h, "species")
        curves = []
        if sp.fsc is not None:
            curves.append({"name": "masked", **(fsc_curve(ctx, sp) or {})})
        for name, ref in sorted((sp.metadata.get("fsc_curves") or {}).items()):
            try:
                curves.append({"name": name, **(fsc_curve(ctx, sp, deref(ref, "array")) or {})})
            except (InvalidInput, MrepoError):
                continue
        maps = {"half1": sp.half1, "half2": sp.half2, "mask": sp.mask}
        try:
            if sp.metadata.get("filtered") is not None:
                maps = {"filtered": deref(sp.metadata["filtered"], "array"), **maps}
        except InvalidInput:
            pass
        try:  # the noise2noise-denoised map (mrepo species denoise), shown beside the filtered one
            if sp.metadata.get("denoised") is not None:
                first = dict(list(maps.items())[:1]) if "filtered" in maps else {}
                maps = {**first, "denoised": deref(sp.metadata["denoised"], "array"), **maps}
        except InvalidInput:
            pass
        return {"hash": h, "record": body, "fsc": fsc_curve(ctx, sp), "curves": curves, "maps": maps,
                "resolution": sp.resolution, "pixel_size": sp.pixel_size, "box": sp.box}

    @router.get("/species-history", summary="A species' resolution along the first-parent history")
    def species_history(name: Annotated[str, Query(max_length=200)],
                        rev: Annotated[str | None, Query(max_length=300)] = None,
                        limit: Annotated[int, Query(ge=1, le=2000)] = 500) -> dict:
        return species_history_of(ctx, rev or repo.default_branch, name, limit)

    @router.get("/commits/{rev:path}", summary="A commit, its population and the diff to its first parent")
    def commit_view(rev: str) -> dict:
        return commit_detail(ctx, rev)

    @router.get("/items/{h}", summary="An item's imaging summary (defocus, dose) and models")
    def item_view(h: HashParam) -> dict:
        it = Item.load(repo.objects, h)
        return {"name": it.name, "kind": it.kind, "hash": h, "raw": it.raw.hash, "imaging": it.imaging,
                "models": sorted(it.models), **item_summary(repo, it)}

    @router.get("/items/{h}/thumbnail.png", summary="Thumbnail of an item's raw data (frame average)",
                responses={200: {"content": {"image/png": {}}}})
    def item_thumbnail(h: HashParam) -> Response:
        png = cache.get((h, 10))
        if png is None:
            png = encode_png(to_uint8(thumbnail(raw_image(repo, Item.load(repo.objects, h)))))
            cache.put((h, 10), png)
        return Response(png, media_type="image/png", headers={"cache-control": "public, max-age=31536000"})

    @router.get("/items/{h}/ctf", summary="CTF fit of an item: flattened power spectrum and CTF²")
    def item_ctf(h: HashParam) -> dict:
        return ctf_fit(repo, Item.load(repo.objects, h))

    @router.get("/arrays/{h}/iso.png", summary="Shaded isosurface of a 3-D array as PNG",
                responses={200: {"content": {"image/png": {}}}})
    def iso_png(h: HashParam, azimuth: Annotated[float, Query(ge=-360, le=360)] = 30.0,
                elevation: Annotated[float, Query(ge=-90, le=90)] = 20.0,
                sigma: Annotated[float, Query(ge=-10, le=20)] = 2.0,
                size: Annotated[int, Query(ge=32, le=512)] = 256) -> Response:
        meta = repo.objects.array_meta(h)
        if len(meta.shape) != 3 or int(np.prod(meta.shape)) > MAX_ISO_ELEMENTS or 0 in meta.shape:
            raise ApiError(400, f"array {h} has shape {list(meta.shape)}: isosurfaces need a 3-D volume of at most "
                           f"{MAX_ISO_ELEMENTS} voxels")
        vol = np.asarray(repo.objects.get_array(h), dtype=np.float32)
        img = render_isosurface(vol, sigma_level(vol, sigma), azimuth=azimuth, elevation=elevation, size=size)
        return Response(encode_png(img), media_type="image/png", headers={"cache-control": "public, max-age=3600"})

    @router.get("/sources/{h}", summary="A data source's items")
    def source(h: HashParam, offset: Annotated[int, Query(ge=0)] = 0,
               limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> dict:
        src = DataSource.load(repo.objects, h)
        keys = sorted(src.items)
        items = []
        for key in keys[offset:offset + limit]:
            it = Item.load(repo.objects, src.items[key])
            items.append({"name": it.name, "kind": it.kind, "hash": src.items[key], "raw": it.raw.hash,
                          "size": it.raw.size, "models": sorted(it.models), "refined_with": len(it.refined_with),
                          "stored": it.raw.stored, **item_summary(repo, it)})
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
            report = _ids_as_text(repo.objects.get_record(check))
        return {**summary, "report": report}

    return router


def species_history_of(ctx: ServerContext, rev: str, name: str, limit: int = 500) -> dict[str, Any]:
    """Resolution (Å) of species ``name`` at each commit of the first-parent history of ``rev``,
    oldest first; commits without the species are left out."""
    repo = ctx.repo
    h: str | None = repo.resolve(rev)
    points: list[dict[str, Any]] = []
    while h is not None and len(points) < limit:
        c = Commit.load(repo.objects, h)
        pop = Population.load(repo.objects, c.population)
        if name in pop.species:
            sp = Species.load(repo.objects, pop.species[name])
            op = c.operation or {}
            points.append({"commit": h, "time": c.time, "message": c.message, "operation": op.get("name"),
                           "iteration": op.get("iteration"), "resolution": sp.resolution, "species": pop.species[name]})
        h = c.parents[0] if c.parents else None
    points.reverse()
    return {"rev": rev, "name": name, "points": points}


def commit_detail(ctx: ServerContext, rev: str) -> dict[str, Any]:
    """A commit, the names in its population and the diff to its first parent (item keys named)."""
    repo = ctx.repo
    h = repo.resolve(rev)
    c = Commit.load(repo.objects, h)
    pop = Population.load(repo.objects, c.population)
    out: dict[str, Any] = {"hash": h, **c.to_body(), "parents": list(c.parents),
                           "population": {"name": pop.name, "hash": c.population,
                                                                     "sources": sorted(pop.sources),
                                                                     "species": sorted(pop.species)}}
    if not c.parents:
        out["diff"] = None
        return out
    d = repo.diff(c.parents[0], h).to_json()
    names: dict[str, str] = {}
    for pop_h in (c.population, Commit.load(repo.objects, c.parents[0]).population):
        p = Population.load(repo.objects, pop_h)
        for s_h in p.sources.values():
            for key, item_h in DataSource.load(repo.objects, s_h).items.items():
                names.setdefault(key, Item.load(repo.objects, item_h).name)
    for field in ("items_added", "items_removed", "items_changed"):
        d[field] = [{"source": s, "key": k, "name": names.get(k, k[:12])} for s, k in d.get(field, [])]
    out["diff"] = {"parent": c.parents[0], **d}
    return out


_ID_FIELDS = ("id", "id_a", "id_b", "incoming_id", "existing_id")


def _ids_as_text(report: Any) -> Any:
    """Particle ids (63-bit integers) as decimal strings: JavaScript numbers keep only 53 bits."""
    if not isinstance(report, dict):
        return report
    out = dict(report)
    for key in ("collisions", "duplicates", "reclassifications", "id_clashes", "shared"):
        rows = out.get(key)
        if isinstance(rows, list):
            out[key] = [{k: (str(v) if k in _ID_FIELDS and isinstance(v, int) else v) for k, v in r.items()}
                        if isinstance(r, dict) else r for r in rows]
    return out


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
