"""ASGI middleware of the server: JSON-lines access log and the request body size limit.

Access log lines (one JSON object per request)::

    {"time": "2025-01-01T12:00:00.123Z", "method": "PUT", "path": "/repo/objects/ab…",
     "status": 201, "duration_ms": 3.2, "token": "alice", "bytes_in": 1234}

``token`` is the name of the bearer token the request authenticated with
(``anonymous`` for anonymous reads, null when none was accepted). A client that disconnects
mid-request is logged with status 499 and ``"disconnected": true`` (no traceback); a body
that arrives too slowly is answered 408 and the connection closed (``"timeout": "body"``).

Slow bodies: a request body must keep an average rate of ``body_min_rate`` bytes/s after a
grace of ``body_grace`` seconds (the deadline for the next piece is ``start + grace +
received / min_rate``), so one-byte-per-second uploads are cut after the grace period while
any real upload is unaffected. Slow headers are handled by the HTTP protocol
(:mod:`mrepo.api.serving`).

Security headers on every answer: ``Content-Security-Policy`` (same-origin scripts, styles and
connections; ``frame-ancestors 'none'``), ``X-Content-Type-Options: nosniff``,
``X-Frame-Options: DENY``, ``Referrer-Policy: no-referrer``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from datetime import UTC, datetime
from typing import IO, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import BODY_TIMEOUT, error_response

#: Key in the ASGI scope of a per-request dict the auth dependency fills in.
LOG_STATE = "mrepo.log"

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
#: The interactive API docs load Swagger UI from its CDN.
DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
            "style-src 'self' https://cdn.jsdelivr.net; img-src 'self' data: https://fastapi.tiangolo.com; "
            "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer")]


class AccessLog:
    """Writes one JSON line per request to a text stream (thread-safe)."""

    def __init__(self, stream: IO[str] | None = None):
        self.stream = stream if stream is not None else sys.stderr
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"))
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()


class BodyTooLarge(Exception):
    """Raised by the counting ``receive`` when a body passes the limit."""


class AccessLogAndLimit:
    """Log every HTTP request and refuse bodies larger than ``max_body_bytes`` with 413."""

    def __init__(self, app: ASGIApp, log: AccessLog | None, max_body_bytes: int,
                 streamed_paths: tuple[str, ...] = (), *, body_grace: float = 10.0, body_min_rate: float = 1024.0):
        self.app = app
        self.log = log
        self.max_body_bytes = max_body_bytes
        self.body_grace = body_grace
        self.body_min_rate = body_min_rate
        #: Paths whose bodies are consumed frame by frame with their own per-frame limit (batch upload).
        self.streamed_paths = frozenset(streamed_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = {"token": None}
        scope[LOG_STATE] = state
        start = time.perf_counter()
        status = {"code": 500, "sent": False}
        received = {"bytes": 0}
        limit = None if scope.get("path") in self.streamed_paths else self.max_body_bytes

        body = {"done": False, "start": time.monotonic(), "disconnected": False}

        async def send_logged(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                status["sent"] = True
                csp = DOCS_CSP if scope.get("path") == "/docs" else CSP
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS,
                                                  (b"content-security-policy", csp.encode())]}
            await send(message)

        async def receive_counted() -> Message:
            if body["done"]:
                message = await receive()  # e.g. a streaming answer listening for a disconnect
            else:
                deadline = body["start"] + self.body_grace + received["bytes"] / self.body_min_rate
                try:  # a timeout scope, not wait_for: no task per piece of the body
                    async with asyncio.timeout(max(deadline - time.monotonic(), 0.001)):
                        message = await receive()
                except TimeoutError:
                    scope[BODY_TIMEOUT] = True
                    body["done"] = True
                    return {"type": "http.disconnect"}
            if message["type"] == "http.disconnect":
                body["disconnected"] = True
            if message["type"] == "http.request":
                if not message.get("more_body", False):
                    body["done"] = True
                received["bytes"] += len(message.get("body", b""))
                if limit is not None and received["bytes"] > limit:
                    raise BodyTooLarge
            return message

        try:
            length = _content_length(scope)
            if limit is not None and length is not None and length > limit:
                await self._too_large(scope, receive, send_logged)
            else:
                try:
                    await self.app(scope, receive_counted, send_logged)
                except BodyTooLarge:
                    if not status["sent"]:
                        await self._too_large(scope, receive, send_logged)
        finally:
            if body["disconnected"] and not status["sent"] and not scope.get(BODY_TIMEOUT):
                status["code"] = 499
            if self.log is not None:
                self.log.write({
                    "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
                    "method": scope.get("method"), "path": scope.get("path"), "status": status["code"],
                    "duration_ms": round((time.perf_counter() - start) * 1000, 3), "token": state.get("token"),
                    "bytes_in": received["bytes"],
                    **({"timeout": "body"} if scope.get(BODY_TIMEOUT) else {}),
                    **({"disconnected": True} if body["disconnected"] and not scope.get(BODY_TIMEOUT) else {}),
                })

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(413, f"request body larger than {self.max_body_bytes} bytes",
                                  headers={"Connection": "close"})
        await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
