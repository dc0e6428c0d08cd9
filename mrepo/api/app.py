"""``create_app``: the FastAPI application that ``mrepo serve`` runs with uvicorn.

Mounts the remote protocol (``/repo``), pull requests (``/repo/pulls``, when
:mod:`mrepo.graph.pulls` is present), the web view's JSON (``/api``) and its static
files (``/`` and ``/static``), the JSON error bodies, the access log and the body
size limit. The OpenAPI schema is at ``/openapi.json``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO

from fastapi import Depends, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from .. import __version__
from ..graph import Repository
from ..store import InvalidInput, check_name
from ..store import protocol_names as names
from . import batch, named_api, protocol, webview
from .auth import AccessPolicy, require
from .context import ServerContext
from .errors import install_error_handlers
from .middleware import AccessLog, AccessLogAndLimit
from .staging import ArrayStaging
from .tokens import LiveTokens

STATIC = Path(__file__).parent / "static"
DEFAULT_MAX_BODY = 64 << 20
DEFAULT_MAX_ARRAY = 8 << 30
logger = logging.getLogger("mrepo.api")


def create_app(repo_url: str, tokens_path: str | Path | None = None, anonymous_read: bool = False,
               protected: tuple[str, ...] | list[str] = ("main",), max_body_bytes: int = DEFAULT_MAX_BODY, *,
               access_log: IO[str] | None | bool = None, repo_options: dict | None = None,
               staging_max_age: float = 24 * 3600.0, staging_sweep_every: float | None = None,
               max_array_bytes: int = DEFAULT_MAX_ARRAY, body_grace: float = 10.0,
               body_min_rate: float = 1024.0) -> FastAPI:
    """The server application for the repository at ``repo_url``.

    ``tokens_path``: TOML token file (see :mod:`mrepo.api.tokens`; re-read when it changes);
    without one only anonymous reads (when enabled) succeed. ``protected``: branches that move
    only by a pull-request merge. ``max_body_bytes``: largest accepted request body, and largest
    frame of a batch upload (413 / 400 above). ``max_array_bytes``: largest array (declared
    uncompressed size) accepted. ``access_log``: stream for JSON lines (default stderr; False
    disables). Staged uploads older than ``staging_max_age`` s are swept at start and every
    ``staging_sweep_every`` s (default: a quarter of the age, at most an hour) while running.
    ``body_grace``/``body_min_rate``: a request body must average ``body_min_rate`` bytes/s after
    ``body_grace`` s (408 otherwise). The OpenAPI schema (``/openapi.json``) and its page
    (``/docs``) need read access like every other read.
    """
    if max_body_bytes < 1024:
        raise InvalidInput(f"max_body_bytes must be at least 1024, got {max_body_bytes}")
    for name in protected:
        check_name(name, "protected branch")
    repo = Repository.open(repo_url, repo_options)
    policy = AccessPolicy(LiveTokens(tokens_path), anonymous_read)
    staging = ArrayStaging(repo.storage, max_array_bytes=max_array_bytes)
    staging.sweep(staging_max_age)
    ctx = ServerContext(repo, policy, staging, frozenset(protected), max_body_bytes)
    sweep_every = staging_sweep_every or min(max(staging_max_age / 4, 1.0), 3600.0)

    async def sweep_forever() -> None:
        while True:
            await asyncio.sleep(sweep_every)
            try:
                n = await run_in_threadpool(staging.sweep, staging_max_age)
                if n:
                    logger.info("swept %d staged file(s) of abandoned uploads", n)
            except Exception as exc:  # noqa: BLE001 - a failed sweep must not stop the server
                logger.warning("staging sweep failed: %s", exc)

    pools = batch.BatchPools()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        sweeper = asyncio.create_task(sweep_forever())
        await run_in_threadpool(pools.start)
        try:
            yield
        finally:
            sweeper.cancel()
            pools.close()
            if isinstance(policy.tokens, LiveTokens):
                policy.tokens.flush()
            repo.close()

    app = FastAPI(title="mrepo", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None,
                  description="A served mrepo repository: remote protocol, pull requests and a web view.")
    app.state.mrepo = ctx
    install_error_handlers(app)
    log = None if access_log is False else AccessLog(access_log if not isinstance(access_log, bool) else None)
    app.add_middleware(AccessLogAndLimit, log=log, max_body_bytes=max_body_bytes,
                       streamed_paths=(f"{names.MOUNT}/{names.BATCH_UPLOAD_PATH}",), body_grace=body_grace,
                       body_min_rate=body_min_rate)
    reader = [Depends(require(policy, "read"))]

    @app.get("/openapi.json", include_in_schema=False, dependencies=reader)
    def openapi_schema() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=reader)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="mrepo API")

    app.include_router(protocol.build_router(ctx))
    app.include_router(batch.build_router(ctx, pools))
    pulls_enabled = _pulls_available()
    if pulls_enabled:
        from . import pulls_api

        app.include_router(pulls_api.build_router(ctx))
    app.include_router(webview.build_router(ctx))
    app.include_router(named_api.build_router(ctx))

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/health", tags=["server"], summary="Liveness and features")
    def health() -> JSONResponse:
        return JSONResponse({"ok": True, "version": __version__, "pulls": pulls_enabled})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    return app


def _pulls_available() -> bool:
    try:
        import mrepo.graph.pulls  # noqa: F401
    except ModuleNotFoundError as exc:
        if exc.name != "mrepo.graph.pulls":
            raise
        return False
    return True
