"""Error bodies of the server: every failure answers ``{"error": <code>, "detail": <message>}``.

``error`` is a short machine-readable code (``unauthorized``, ``forbidden``, ``not-found``,
``bad-request``, ``conflict``, ``too-large``, ...); ``detail`` a one-line message or
a structured value (validation errors).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ..store import (
    CorruptObject,
    InvalidInput,
    MergeConflict,
    MrepoError,
    ObjectNotFound,
    RefConflict,
    RefNotFound,
    RepositoryNotFound,
)

log = logging.getLogger("mrepo.api")
#: Key in the ASGI scope set by the access-log middleware when a request body arrived too slowly.
BODY_TIMEOUT = "mrepo.body_timeout"

CODES = {400: "bad-request", 401: "unauthorized", 403: "forbidden", 404: "not-found", 405: "method-not-allowed",
         408: "timeout", 409: "conflict", 411: "length-required", 412: "precondition-failed", 413: "too-large",
         422: "invalid-request", 428: "precondition-required", 500: "server-error"}


class ApiError(Exception):
    """An error answer with an HTTP status, a code and a message."""

    def __init__(self, status: int, detail: object, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(str(detail))
        self.status = status
        self.detail = detail
        self.code = code or CODES.get(status, "error")
        self.headers = headers


def error_response(status: int, detail: object, code: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code or CODES.get(status, "error"), "detail": detail}, status_code=status,
                        headers=headers)


def status_of(exc: MrepoError) -> int:
    """HTTP status for a library error."""
    if isinstance(exc, (ObjectNotFound, RefNotFound, RepositoryNotFound)):
        return 404
    if isinstance(exc, (RefConflict, MergeConflict)):
        return 409
    if isinstance(exc, (InvalidInput, CorruptObject)):
        return 400
    return 500


def install_error_handlers(app: FastAPI) -> None:
    """Answer every failure with the JSON error body."""

    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.detail, exc.code, exc.headers)

    @app.exception_handler(MrepoError)
    async def _mrepo(_: Request, exc: MrepoError) -> JSONResponse:
        return error_response(status_of(exc), str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, exc.detail, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        detail = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        return error_response(400, detail, "bad-request")

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, _: ClientDisconnect) -> Response:
        if request.scope.get(BODY_TIMEOUT):
            return error_response(408, "request body arrived too slowly; connection closed",
                                  headers={"Connection": "close"})
        log.info("client disconnected during %s %s", request.method, request.url.path)  # one line, no traceback
        return Response(status_code=499)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, f"internal error ({type(exc).__name__})")
