"""Named maps over HTTP: ``/repo/named/<rev>/species/<name>/<map>/zarr.json`` and its chunks.

A Zarr v3 reader opens ``<server>/repo/named/main/species/apo/half1`` directly (zarr-python
through fsspec's HTTP file system, napari, neuroglancer's ``zarr3://`` source). The
``zarr.json`` carries OME-Zarr multiscales metadata with the voxel size in Å (see
:mod:`mrepo.graph.named`). Reads need role ``read``; every other method answers 405: named
paths are views of immutable arrays. ``zarr.json`` is not cached by clients (a branch moves);
chunks are (they are content-addressed). With anonymous read, answers allow any origin (CORS), so
a browser viewer served elsewhere (neuroglancer) can load public maps.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from ..graph.named import NamedMaps, split_named_path
from ..store import InvalidInput, ObjectNotFound, RefNotFound
from ..store import protocol_names as names
from .auth import require
from .context import ServerContext, blocking
from .errors import ApiError

READ_ONLY = "named map paths are read-only: commit a new species version instead"


def build_router(ctx: ServerContext) -> APIRouter:
    router = APIRouter(prefix=f"{names.MOUNT}/{names.NAMED_PATH}", tags=["named maps"])
    reader = Depends(require(ctx.policy, "read"))

    def read(path: str) -> tuple[bytes, bool]:
        try:
            _, _, _, file = split_named_path(path)
        except InvalidInput as exc:
            raise ApiError(404, str(exc)) from None
        try:
            # a fresh resolver per request: a named path follows its branch
            return NamedMaps(ctx.repo).read(path), file.endswith("zarr.json")  # also <map>.ome/0/zarr.json
        except (ObjectNotFound, RefNotFound) as exc:
            raise ApiError(404, str(exc)) from None

    async def get_named(path: str, request: Request) -> Response:
        data, is_meta = await blocking(read, path)
        headers = {"cache-control": "no-cache" if is_meta else "public, max-age=31536000, immutable",
                   "content-length": str(len(data))}
        if ctx.policy.anonymous_read:  # browser viewers on other origins (neuroglancer) may read public maps
            headers["access-control-allow-origin"] = "*"
        media = "application/json" if is_meta else "application/octet-stream"
        if request.method == "HEAD":
            return Response(status_code=200, headers=headers, media_type=media)
        return Response(data, headers=headers, media_type=media)

    router.add_api_route("/{path:path}", get_named, methods=["GET"], dependencies=[reader],
                         summary="A file of a named map: <rev>/species/<name>/half1|half2|mask|filtered/zarr.json "
                                 "or a chunk key")
    router.add_api_route("/{path:path}", get_named, methods=["HEAD"], dependencies=[reader],
                         name="get_named_head", include_in_schema=False)

    async def refuse(path: str) -> Response:
        raise ApiError(405, READ_ONLY, headers={"Allow": "GET, HEAD"})

    router.add_api_route("/{path:path}", refuse, methods=["PUT", "POST", "DELETE", "PATCH"],
                         summary="Refused: named paths are read-only", include_in_schema=False)
    return router
