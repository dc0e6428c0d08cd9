"""The remote protocol under ``/repo``: what :class:`mrepo.store.http_backend.HttpBackend` speaks.

Objects are immutable and verified before they become visible; refs change only by
compare-and-swap; nothing else is writable. Roles: reads need ``read``, uploads and
ref updates ``write``, ref deletion and moving tags ``maintain``. Protected branches
change only through a pull-request merge (a plain update answers 403).

ETags of refs are ``"<BLAKE3 of the stored bytes>"``; ``PUT`` needs ``If-Match: <etag>``
(update) or ``If-None-Match: *`` (create) and answers 409 when the ref moved.
"""

from __future__ import annotations

import re
from typing import Annotated

import blake3
from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from ..store import CorruptObject, InvalidInput, ObjectNotFound, RefConflict, check_name, reflog
from ..store import protocol_names as names
from ..store.errors import InvalidRecord
from ..store.hashing import hash_bytes, is_hash
from ..store.names import check_array_file, check_ref_key
from ..store.objects import array_prefix, object_key
from ..store.refs import HEAD_KEY, check_ref_namespace
from ..store.repo_store import FORMAT_KEY
from .auth import require
from .context import ServerContext, blocking, read_body
from .errors import ApiError
from .ingest import store_object
from .staging import UPLOAD_ID

HASH_PATTERN = r"^[0-9a-f]{64}$"
REFLOG_ENTRY = re.compile(r"^=[0-9]{8}T[0-9]{6}\.[0-9]{6}Z-[0-9a-f]{8}\.json$")
MAX_LIST = 1000
OCTET = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
BINARY_BODY = {"requestBody": {"content": OCTET, "required": True}}
BINARY_ANSWER = {200: {"content": OCTET, "description": "the stored bytes"}}

HashParam = Annotated[str, Path(pattern=HASH_PATTERN, description="BLAKE3 hex digest")]


def etag(data: bytes) -> str:
    """Strong ETag of a ref's stored bytes."""
    return '"' + blake3.blake3(data).hexdigest() + '"'


def _is_array_file(path: str) -> bool:
    try:
        check_array_file(path)
        return True
    except InvalidInput:
        return False


def check_array_path(path: str) -> str:
    try:
        return check_array_file(path)  # the rules every backend and client use (mrepo.store.names)
    except InvalidInput:
        raise ApiError(400, f"invalid array file {path[:80]!r}: expected zarr.json or a chunk key c/i/j/...") from None


def ref_key(name: str) -> str:
    """``refs/<name>`` after validating ``name`` (400 on traversal or bad characters)."""
    try:
        check_name(name, "ref name")
    except InvalidInput as exc:
        raise ApiError(400, str(exc)) from None
    if name.split("/", 1)[0] not in ("heads", "tags", "pulls", "remotes") or "/" not in name:
        raise ApiError(404, f"no ref namespace for {name[:80]!r} (heads/, tags/, pulls/, remotes/)")
    try:
        return check_ref_key("refs/" + name)  # e.g. refs/pulls/0 or refs/pulls/01: 400
    except InvalidInput as exc:
        raise ApiError(400, str(exc)) from None


def _is_name(name: str, what: str) -> bool:
    """``name`` passes the ref-name rules (:func:`mrepo.store.check_name`)."""
    try:
        check_name(name, what)
    except InvalidInput:
        return False
    return True


def check_list_prefix(prefix: str) -> str:
    """Listable prefixes: ``refs/…/``, ``arrays/<hash>/`` and ``objects/<2 hex>/``."""
    if prefix in ("refs/", "logs/"):
        return prefix
    for head, what in (("refs/", "ref prefix"), ("logs/refs/", "reflog prefix")):
        if prefix.startswith(head) and prefix.endswith("/") and _is_name(prefix[len(head):-1], what):
            return prefix
    if re.fullmatch(r"arrays/[0-9a-f]{64}/", prefix) or re.fullmatch(r"objects/[0-9a-f]{2}/", prefix):
        return prefix
    raise ApiError(400, f"cannot list {prefix[:80]!r}: use refs/.../, logs/refs/.../, arrays/<hash>/ or "
                   "objects/<2 hex>/")


def build_router(ctx: ServerContext) -> APIRouter:
    """Routes of the remote protocol for one server."""
    router = APIRouter(prefix=names.MOUNT, tags=["remote protocol"])
    reader = Depends(require(ctx.policy, "read"))
    writer = Depends(require(ctx.policy, "write"))
    maintainer = Depends(require(ctx.policy, "maintain"))
    backend = ctx.storage.backend
    objects = ctx.storage.objects

    def get_and_head(path: str, **kw):  # noqa: ANN202 - decorator factory
        """Register one endpoint for GET and HEAD (distinct OpenAPI operation ids)."""
        def register(fn):  # noqa: ANN001, ANN202
            router.add_api_route(path, fn, methods=["GET"], **kw)
            router.add_api_route(path, fn, methods=["HEAD"], name=f"{fn.__name__}_head", **kw)
            return fn
        return register

    def raw(key: str, method: str) -> Response:
        if method == "HEAD":
            size = backend.get_size(key)
            return Response(status_code=200, headers={"content-length": str(size)},
                            media_type="application/octet-stream")
        return Response(backend.get(key), media_type="application/octet-stream")

    # ------------------------------------------------------------------ repository files
    @router.get(f"/{names.FORMAT_PATH}", dependencies=[reader], summary="Format document of the repository")
    def get_format() -> Response:
        return Response(backend.get(FORMAT_KEY), media_type="application/json")

    @router.get(f"/{names.HEAD_PATH}", dependencies=[reader], summary="Default branch (ref: refs/heads/<name>)")
    def get_head() -> Response:
        data, _ = backend.read_versioned(HEAD_KEY)
        return Response(data or b"ref: refs/heads/main\n", media_type="text/plain")

    # ------------------------------------------------------------------ records and blobs
    @get_and_head(f"/{names.OBJECTS_PATH}/{{h}}", dependencies=[reader], responses=BINARY_ANSWER,
                      summary="A record or blob (the exact hashed bytes)")
    def get_object(h: HashParam, request: Request) -> Response:
        return raw(object_key(h), request.method)

    @router.put(f"/{names.OBJECTS_PATH}/{{h}}", dependencies=[writer], openapi_extra=BINARY_BODY, status_code=201,
                summary="Upload a record or blob; its BLAKE3 must equal the name",
                responses={200: {"description": "already present, nothing stored"}})
    async def put_object(h: HashParam, request: Request) -> JSONResponse:
        data = await read_body(request, ctx.max_body_bytes)
        if hash_bytes(data) != h:
            raise ApiError(400, f"body does not hash to {h} (BLAKE3 of the stored bytes)", "hash-mismatch")
        return await blocking(_store_object, h, data)

    def _store_object(h: str, data: bytes) -> JSONResponse:
        """Checked by :func:`mrepo.api.ingest.store_object`: hash, canonical form and schema of a
        record, references present; a damaged stored copy is replaced, an intact one freshened."""
        try:
            stored = store_object(backend, objects, h, data)
        except ObjectNotFound as exc:
            raise ApiError(400, str(exc), "missing-object") from None
        except InvalidRecord as exc:
            raise ApiError(400, str(exc), "invalid-record") from None
        except CorruptObject as exc:
            raise ApiError(400, str(exc), "hash-mismatch") from None
        return JSONResponse({"hash": h, "stored": stored}, status_code=201 if stored else 200)

    # ------------------------------------------------------------------ arrays (Zarr v3, read-only to zarr clients)
    @get_and_head(f"/{names.ARRAYS_PATH}/{{h}}/{{path:path}}", dependencies=[reader],
                      responses=BINARY_ANSWER, summary="A file of a complete Zarr v3 array")
    def get_array_file(h: HashParam, path: str, request: Request) -> Response:
        if not _is_array_file(path):  # e.g. zarr v2 probes (.zarray, .zattrs): simply absent
            raise ApiError(404, f"array {h} has no file {path[:80]!r}")
        if not objects.has_array(h):
            raise ApiError(404, f"array {h} not found")
        media = "application/json" if path == "zarr.json" else "application/octet-stream"
        response = raw(array_prefix(h) + path, request.method)
        response.headers["content-type"] = media
        response.headers["cache-control"] = "public, max-age=31536000, immutable"
        return response

    @router.put(f"/{names.ARRAYS_PATH}/{{h}}/{{path:path}}", dependencies=[writer], openapi_extra=BINARY_BODY,
                status_code=201,
                summary="Upload an array file: chunks are staged; zarr.json publishes the verified array",
                responses={200: {"description": "array already complete and intact (or a chunk equal to the "
                                                "stored file), nothing stored"},
                           202: {"description": "chunk staged"}})
    async def put_array_file(h: HashParam, path: str, request: Request,
                             x_mrepo_upload: Annotated[str | None, Header(pattern=UPLOAD_ID.pattern)] = None
                             ) -> JSONResponse:
        check_array_path(path)
        data = await read_body(request, ctx.max_body_bytes)
        upload = x_mrepo_upload or "default"
        return await blocking(_store_array_file, h, path, upload, data)

    def _store_array_file(h: str, path: str, upload: str, data: bytes) -> JSONResponse:
        """A present array is freshened (gc age) and replaced only when its stored copy is damaged,
        by the batch protocol's rule (:mod:`mrepo.api.staging`): a chunk equal to the stored file
        is not staged, ``zarr.json`` publishes over a copy that fails its check."""
        objects.freshen("array", h)
        if path != "zarr.json":
            if not ctx.staging.stage(h, upload, path, data):
                return JSONResponse({"hash": h, "stored": False}, status_code=200)
            return JSONResponse({"hash": h, "staged": path}, status_code=202)
        try:
            published = ctx.staging.publish(h, upload, data)
        except CorruptObject as exc:
            raise ApiError(400, str(exc), "hash-mismatch") from None
        return JSONResponse({"hash": h, "stored": published}, status_code=201 if published else 200)

    # ------------------------------------------------------------------ listings
    @router.get(f"/{names.LIST_PATH}", dependencies=[reader],
                summary="Keys below a prefix, sorted, one page at a time")
    def list_keys(prefix: Annotated[str, Query(max_length=300)],
                  after: Annotated[str | None, Query(max_length=400)] = None,
                  limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = MAX_LIST) -> dict:
        check_list_prefix(prefix)
        if prefix.startswith("arrays/") and not objects.has_array(prefix.split("/")[1]):
            raise ApiError(404, f"array {prefix.split('/')[1]} not found")
        entries = sorted((e for e in backend.list(prefix) if after is None or e.key > after), key=lambda e: e.key)
        page = entries[:limit]
        return {"entries": [{"key": e.key, "size": e.size, "mtime": e.mtime} for e in page],
                "next": page[-1].key if len(entries) > limit else None}

    @router.get(f"/{names.REFS_PATH}", dependencies=[reader], summary="Refs below a prefix with their hashes, paginated")
    def list_refs(prefix: Annotated[str, Query(max_length=300)] = "refs/",
                  after: Annotated[str | None, Query(max_length=400)] = None,
                  limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = MAX_LIST) -> dict:
        if not prefix.startswith("refs/"):
            raise ApiError(400, "ref prefixes start with refs/")
        check_list_prefix(prefix)
        found = [(k, v) for k, v in ctx.storage.refs.list(prefix) if after is None or k > after]
        page = found[:limit]
        return {names.F_REFS: [{names.F_REF_NAME: k, names.F_REF_HASH: v} for k, v in page],
                names.F_NEXT: page[-1][0] if len(found) > limit else None}

    # ------------------------------------------------------------------ refs
    @get_and_head(f"/{names.REFS_PATH}/{{name:path}}", dependencies=[reader],
                      summary="A ref's stored bytes (<hash>\\n) with its ETag")
    def get_ref(name: str) -> Response:
        key = ref_key(name)
        data, _ = backend.read_versioned(key)
        if data is None:
            raise ApiError(404, f"{key} does not exist")
        return Response(data, media_type="text/plain", headers={"etag": etag(data)})

    @get_and_head(f"/{names.LOGS_PATH}/refs/{{name:path}}", dependencies=[reader],
                      summary="One reflog entry (JSON: ref, old, new, who, when, operation)")
    def get_reflog_entry(name: str, request: Request) -> Response:
        ref_part, _, entry = name.rpartition("/")
        if not REFLOG_ENTRY.match(entry):
            raise ApiError(404, f"no reflog entry {entry[:80]!r}")
        key = ref_key(ref_part)
        response = raw(f"logs/{key}/{entry}", request.method)
        response.headers["content-type"] = "application/json"
        return response

    @router.put(f"/{names.REFS_PATH}/{{name:path}}", openapi_extra=BINARY_BODY,
                summary="Compare-and-swap a ref (If-Match: <etag> or If-None-Match: *)",
                responses={409: {"description": "the ref moved"}, 403: {"description": "protected or read-only"}})
    async def put_ref(name: str, request: Request, who=writer,
                      if_match: Annotated[str | None, Header(max_length=200)] = None,
                      if_none_match: Annotated[str | None, Header(max_length=200)] = None,
                      x_mrepo_operation: Annotated[str | None, Header(max_length=200)] = None) -> Response:
        key = ref_key(name)
        data = await read_body(request, 4096)
        target = data.decode("ascii", "replace").strip()
        if not is_hash(target) or data.strip() != data.rstrip(b"\n"):
            raise ApiError(400, f"a ref holds one hash and a newline, got {data[:80]!r}")
        expected = _expected(if_match, if_none_match)
        return await blocking(_swap, key, expected, (target + "\n").encode(), who, x_mrepo_operation)

    @router.delete(f"/{names.REFS_PATH}/{{name:path}}", summary="Delete a ref by compare-and-swap (If-Match: <etag>)")
    def delete_ref(name: str, who=maintainer, if_match: Annotated[str | None, Header(max_length=200)] = None,
                   x_mrepo_operation: Annotated[str | None, Header(max_length=200)] = None) -> Response:
        key = ref_key(name)
        if if_match is None:
            raise ApiError(428, "deleting a ref needs If-Match: <etag>")
        return _swap(key, if_match, None, who, x_mrepo_operation)

    def _swap(key: str, expected: str | None, data: bytes | None, who, operation: str | None = None  # noqa: ANN001
              ) -> Response:
        namespace = key.split("/")[1]
        branch = key.removeprefix("refs/heads/") if namespace == "heads" else None
        current, token = backend.read_versioned(key)
        if namespace == "remotes":
            raise ApiError(403, "remote-tracking refs are not writable through the server")
        if namespace == "pulls":
            raise ApiError(403, "pull requests change only through the pull-request endpoints (/repo/pulls): "
                           "the server sets their number, state and author")
        if branch is not None and branch in ctx.protected and not (current is None and data is not None
                                                                   and who.allows("maintain")):
            raise ApiError(403, f"branch {branch!r} is protected: it changes only through a pull-request merge "
                           "by a maintainer")
        if branch is not None and not who.allows("maintain") and any(branch.startswith(p + "/") for p in ctx.protected):
            # heads/main/x would block the creation of a protected heads/main (namespace clash)
            raise ApiError(403, f"branch {branch!r} lies below a protected branch name: only a maintainer "
                           "creates refs there")
        if namespace == "tags" and current is not None and not who.allows("maintain"):
            raise ApiError(403, "moving or deleting a tag needs role maintain")
        if data is not None:
            _check_target(namespace, data.decode().strip())
        found = None if current is None else etag(current)
        if found != expected:
            raise ApiError(409, f"{key} changed: expected {expected or 'no ref'}, found {found or 'no ref'}; "
                           "fetch and retry")
        if current is None and data is not None:
            try:
                check_ref_namespace(backend, key)  # heads/main vs heads/main/x: 409, never a 500
            except RefConflict as exc:
                raise ApiError(409, str(exc), names.E_REF_NAMESPACE) from None
        try:
            backend.cas(key, token, data)
        except RefConflict as exc:
            raise ApiError(409, str(exc)) from None
        old = None if current is None else current.decode("ascii", "replace").strip()
        reflog.append(backend, key, old, None if data is None else data.decode().strip(),
                      operation=operation or ("delete" if data is None else "update"), who=who.name)
        if data is None:
            return Response(status_code=204)
        return Response(data, status_code=201 if current is None else 200, media_type="text/plain",
                        headers={"etag": etag(data)})

    def _check_target(namespace: str, h: str) -> None:
        try:
            kind, _ = objects.get_record_with_kind(h)
        except ObjectNotFound:
            raise ApiError(400, f"ref target {h} is not on the server: upload objects before the ref",
                           "missing-object") from None
        except (InvalidInput, CorruptObject) as exc:
            raise ApiError(400, f"ref target {h}: {exc}") from None
        if namespace in ("heads", "tags") and kind != "commit":
            raise ApiError(400, f"ref target {h} is a {kind} record, not a commit")

    return router


def _expected(if_match: str | None, if_none_match: str | None) -> str | None:
    if if_none_match is not None:
        if if_none_match.strip() != "*" or if_match is not None:
            raise ApiError(400, "use either If-None-Match: * (create) or If-Match: <etag> (update)")
        return None
    if if_match is None:
        raise ApiError(428, "a ref update needs If-Match: <etag> or If-None-Match: *")
    return if_match.strip()
