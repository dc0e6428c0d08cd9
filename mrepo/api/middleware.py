"""ASGI middleware of the server: JSON-lines access log and the request body size limit.

Access log lines (one JSON object per request)::

    {"time": "2025-01-01T12:00:00.123Z", "method": "PUT", "path": "/repo/objects/ab…",
     "status": 201, "duration_ms": 3.2, "token": "alice", "bytes_in": 1234}

``token`` is the name of the bearer token the request authenticated with
(``anonymous`` for anonymous reads, null when none was accepted).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from datetime import UTC, datetime
from typing import IO, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import error_response

#: Key in the ASGI scope of a per-request dict the auth dependency fills in.
LOG_STATE = "mrepo.log"


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
                 streamed_paths: tuple[str, ...] = ()):
        self.app = app
        self.log = log
        self.max_body_bytes = max_body_bytes
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

        async def send_logged(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                status["sent"] = True
            await send(message)

        async def receive_counted() -> Message:
            message = await receive()
            if message["type"] == "http.request":
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
            if self.log is not None:
                self.log.write({
                    "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
                    "method": scope.get("method"), "path": scope.get("path"), "status": status["code"],
                    "duration_ms": round((time.perf_counter() - start) * 1000, 3), "token": state.get("token"),
                    "bytes_in": received["bytes"],
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
