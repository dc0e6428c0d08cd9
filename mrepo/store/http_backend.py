"""HTTP client backend: a repository served by ``mrepo serve`` used as a remote.

URL form: ``http(s)://host:port/repo`` (the server mounts its repository under
``/repo``). Keys map onto the server's remote protocol (see ``mrepo.api.protocol``):

==========================  =============================================
key                         request
==========================  =============================================
``mrepo.json``, ``HEAD``    ``GET <url>/mrepo.json``, ``GET <url>/HEAD``
``objects/ab/cdef…``        ``GET/HEAD/PUT <url>/objects/abcdef…``
``arrays/<hash>/<path>``    ``GET/HEAD/PUT <url>/arrays/<hash>/<path>``
``refs/<name>``             ``GET/PUT/DELETE <url>/refs/<name>`` (CAS by
                            ``If-Match: <etag>`` / ``If-None-Match: *``)
listing ``prefix``          ``GET <url>/list?prefix=…&after=…&limit=…``
==========================  =============================================

The bearer token comes from ``options["token"]`` or ``$MREPO_TOKEN``. Idempotent
requests (reads and uploads of content-addressed objects) are retried on
connection errors and 5xx answers with exponential backoff; a compare-and-swap
whose answer was lost is resolved by reading the ref back.

Imports nothing of mrepo outside ``mrepo.store``.
"""

from __future__ import annotations

import functools
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from . import http_wire
from . import protocol_names as names
from .backends import Backend, Entry, Token
from .batch_client import BatchClient, BatchUnsupported, RecordBuffer
from .errors import (
    AccessDenied,
    CorruptObject,
    InvalidInput,
    InvalidName,
    ObjectNotFound,
    RefConflict,
    RefNamespaceClash,
    Unreachable,
)
from .hashing import RECORD_TAG, is_hash
from .names import check_key, check_object_key, check_ref_key

LIST_PAGE = 1000
http_wire.install()  # large bodies without copies (mrepo.store.http_wire)
UPLOAD_HEADER = names.UPLOAD_HEADER
OPERATION_HEADER = names.OPERATION_HEADER


class _NoListing(Exception):
    """The server does not offer this listing (an older mrepo)."""


class ServerError(Unreachable):
    """The server could not be reached or failed (after retries)."""

    exit_code = 6


def _message(resp: httpx.Response) -> str:
    try:
        doc = resp.json()
        detail = doc.get(names.F_DETAIL)
        text = detail if isinstance(detail, str) else doc.get(names.F_ERROR, "")
    except (ValueError, AttributeError):
        text = resp.text[:200]
    return f"HTTP {resp.status_code} from {resp.request.method} {resp.request.url.path}: {text}"


def _error_code(resp: httpx.Response) -> str | None:
    """The ``error`` code of an error answer's JSON body, if any."""
    try:
        doc = resp.json()
    except ValueError:
        return None
    code = doc.get(names.F_ERROR) if isinstance(doc, dict) else None
    return code if isinstance(code, str) else None


@functools.cache
def _tls_context() -> Any:
    """The verifying TLS context of https remotes, made once per process (loading the CA bundle
    takes 30-90 ms, which every backend paid again; a plain http:// remote needs none)."""
    return httpx.create_ssl_context()


class HttpBackend(Backend):
    """Backend API over HTTP against an ``mrepo serve`` server.

    ``options``: ``token`` (bearer secret; default ``$MREPO_TOKEN``), ``timeout`` (s, 30),
    ``retries`` (attempts for idempotent requests, 5), ``backoff`` (first delay in s, 0.2),
    ``max_connections`` (32).
    """

    def __init__(self, url: str, options: dict[str, Any] | None = None):
        opts = dict(options or {})
        self.url = url.rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            raise InvalidInput(f"not an http(s) URL: {url!r}")
        token = opts.get("token") or os.environ.get("MREPO_TOKEN")
        headers = {"User-Agent": "mrepo-http-backend"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.retries = max(1, int(opts.get("retries", 5)))
        self.backoff = float(opts.get("backoff", 0.2))
        limits = httpx.Limits(max_connections=int(opts.get("max_connections", 32)),
                              max_keepalive_connections=int(opts.get("max_connections", 32)))
        self._client = httpx.Client(headers=headers, timeout=float(opts.get("timeout", 30.0)), limits=limits,
                                    verify=_tls_context() if self.url.startswith("https://") else False)
        #: Upload session id: the server stages this client's array chunks under it.
        self.upload_id = uuid.uuid4().hex
        self._complete_arrays: dict[str, bool] = {}
        self._lock = threading.Lock()
        #: Batch protocol requests (mrepo.store.batch_client).
        self.batch = BatchClient(self)
        #: Records written but not yet sent: they go in dependency order before the next ref swap.
        self.records = RecordBuffer()
        self.defer_records = bool(opts.get("defer_records", True))

    # ------------------------------------------------------------------ plumbing
    def _path(self, key: str) -> str:
        """Server path (relative to the URL) for a backend key; InvalidInput for unknown keys."""
        if key in ("mrepo.json", "HEAD", "config.json"):
            return key
        check_key(key)  # the same key rules as every backend (mrepo.store.names)
        if key.startswith(("objects/", "arrays/")):
            check_object_key(key)
            if key.startswith("objects/"):
                return "objects/" + key[len("objects/"):].replace("/", "")
            return key
        if key.startswith(("refs/", "logs/")):
            return key
        raise InvalidInput(f"key {key!r} cannot be addressed through the HTTP protocol")

    def _request(self, method: str, path: str, *, idempotent: bool = True, **kw: Any) -> httpx.Response:
        attempts = self.retries if idempotent else 1
        delay = self.backoff
        last: Exception | None = None
        for attempt in range(attempts):
            try:
                resp = self._client.request(method, f"{self.url}/{path}", **kw)
            except httpx.TransportError as exc:
                last = exc
            else:
                if resp.status_code < 500 or attempt == attempts - 1:
                    return resp
                last = ServerError(_message(resp))
            if attempt < attempts - 1:
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        raise ServerError(f"{method} {self.url}/{path} failed after {attempts} attempt(s): {last}") from None

    @staticmethod
    def _raise(resp: httpx.Response, key: str) -> None:
        code = resp.status_code
        if code < 400:
            return
        msg = _message(resp)
        if code == 404:
            raise ObjectNotFound(f"{key} not found ({msg})")
        if code in (401, 403):
            sent = resp.request.headers.get("authorization")
            raise AccessDenied(msg + ("" if sent else " (no token sent: set MREPO_TOKEN to a token from "
                                      "'mrepo token add')"))
        if code == 409 and key.startswith("refs/") and _error_code(resp) == names.E_REF_NAMESPACE:
            raise RefNamespaceClash(msg)
        if code in (409, 412, 428):
            raise RefConflict(msg) if key.startswith("refs/") else InvalidInput(msg)
        if code == 400 and key.startswith(("objects/", "arrays/")):
            raise CorruptObject(msg)
        if code < 500:
            raise InvalidInput(msg)
        raise ServerError(msg)

    # ------------------------------------------------------------------ Backend API
    def get(self, key: str) -> bytes:
        held = self.records.get(key)
        if held is not None:
            return held
        resp = self._request("GET", self._path(key))
        self._raise(resp, key)
        return resp.content

    def exists(self, key: str) -> bool:
        if self.records.get(key) is not None:
            return True
        resp = self._request("HEAD", self._path(key))
        if resp.status_code == 404:
            return False
        self._raise(resp, key)
        return True

    def get_size(self, key: str) -> int:
        held = self.records.get(key)
        if held is not None:
            return len(held)
        resp = self._request("HEAD", self._path(key))
        self._raise(resp, key)
        return int(resp.headers.get("content-length", "0"))

    def put(self, key: str, data: bytes) -> None:
        """Upload an object or array file (the server answers 200 and stores nothing when it
        already holds it, freshening it for gc). Array chunks of an array the server already
        holds complete are not sent."""
        path = self._path(key)
        headers: dict[str, str] = {"Content-Type": "application/octet-stream"}
        if key.startswith("objects/"):
            if self.defer_records and bytes(data[:len(RECORD_TAG)]) == RECORD_TAG:
                self.records.add(key, data)  # sent, leaves first, before the next ref swap
                return
        elif key.startswith("arrays/"):
            h = key.split("/")[1]
            if not key.endswith("/zarr.json") and self._array_complete(h):
                return
            headers[UPLOAD_HEADER] = self.upload_id
        else:
            raise InvalidInput(f"{key}: only objects and arrays are uploaded with put; refs change by CAS")
        resp = self._request("PUT", path, content=bytes(data), headers=headers)
        self._raise(resp, key)
        if key.endswith("/zarr.json"):
            with self._lock:
                self._complete_arrays[key.split("/")[1]] = True

    #: Objects up to this size are simply uploaded by put_immutable; larger ones are HEADed first.
    SMALL_OBJECT = 1 << 20

    def put_immutable(self, key: str, data: bytes) -> bool:
        if len(data) > self.SMALL_OBJECT and self.exists(key):
            return False
        self.put(key, data)
        return True

    def _array_complete(self, h: str) -> bool:
        with self._lock:
            known = self._complete_arrays.get(h)
        if known is None:
            known = self.exists(f"arrays/{h}/zarr.json")
            with self._lock:
                self._complete_arrays[h] = known
        return known

    def delete(self, key: str) -> None:
        raise InvalidInput(f"{key}: objects are deleted only by gc on the server; refs change by CAS")

    def _pages(self, path: str, prefix: str, *, optional: bool = False) -> Iterator[tuple[dict, str | None]]:
        """(answer, the ``after`` it was asked with) of each page of a listing below ``prefix``; with
        ``optional``, _NoListing when the server answers the first page 404/405 (it predates the listing)."""
        after: str | None = None
        while True:
            params = {"prefix": prefix, "limit": str(LIST_PAGE)}
            if after:
                params["after"] = after
            resp = self._request("GET", path, params=params)
            if optional and after is None and resp.status_code in (404, 405):
                raise _NoListing(path)
            self._raise(resp, prefix)
            doc = resp.json()
            if not isinstance(doc, dict):
                raise InvalidInput(f"{self.url} answered a listing that is not an object")
            yield doc, after
            after = doc.get(names.F_NEXT)
            if not after:
                return
            if not isinstance(after, str):
                raise InvalidInput(f"{self.url} answered a listing with a bad next page {str(after)[:80]!r}")

    def _listed_key(self, key: object, prefix: str, after: str | None, check: Callable[[str], Any]) -> str:
        """``key`` from a listing below ``prefix`` (asked after ``after``), checked by ``check``."""
        if not isinstance(key, str) or not key.startswith(prefix):
            raise InvalidName(f"{self.url} listed {str(key)[:80]!r} under {prefix!r}: refused")
        if after is not None and key <= after:
            raise InvalidInput(f"{self.url} answered a listing that goes backwards at {key[:80]!r}")
        try:
            check(key)
        except InvalidName as exc:
            raise InvalidName(f"{self.url} listed an invalid key: {exc}") from None
        return key

    def list(self, prefix: str) -> Iterator[Entry]:
        for doc, after in self._pages(names.LIST_PATH, prefix):
            for e in doc[names.F_ENTRIES]:
                yield Entry(self._listed_key(e["key"], prefix, after, check_key), int(e["size"]), float(e["mtime"]))

    def list_refs(self, prefix: str) -> Iterator[tuple[str, str]] | None:
        """(key, hash) of every ref below ``prefix`` in one request per page (``GET refs``), each name
        and hash checked as the receiving side's rules say; None where the server predates it."""
        out: list[tuple[str, str]] = []
        try:
            for doc, after in self._pages(names.REFS_PATH, prefix, optional=True):
                refs = doc.get(names.F_REFS)
                if not isinstance(refs, list):
                    raise InvalidInput(f"{self.url} answered a ref listing without {names.F_REFS!r}")
                for ref in refs:
                    ref = ref if isinstance(ref, dict) else {}
                    key = self._listed_key(ref.get(names.F_REF_NAME), prefix, after, check_ref_key)
                    value = ref.get(names.F_REF_HASH)
                    if not isinstance(value, str) or not is_hash(value):
                        raise InvalidInput(f"{self.url} lists {key} at {str(value)[:70]!r}, not a hash")
                    out.append((key, value))
        except _NoListing:
            return None
        return iter(out)

    def read_versioned(self, key: str) -> tuple[bytes | None, Token]:
        resp = self._request("GET", self._path(key))
        if resp.status_code == 404:
            return None, None
        self._raise(resp, key)
        return resp.content, resp.headers.get("etag")

    #: The server writes the reflog entry of every ref it swaps (``X-Mrepo-Operation`` names it).
    logs_ref_moves = True
    #: The server verifies every upload, record schema and ref target (mrepo.api.protocol).
    checks_writes = True

    def cas(self, key: str, expected: Token, data: bytes | None, operation: str | None = None) -> Token:
        if not key.startswith("refs/"):
            raise AccessDenied(f"{key} cannot be changed through the server")
        self.flush_records()
        headers = {"If-None-Match": "*"} if expected is None else {"If-Match": expected}
        if operation:
            headers[OPERATION_HEADER] = " ".join(operation.split())[:120].encode("ascii", "replace").decode()
        try:
            if data is None:
                resp = self._request("DELETE", key, idempotent=False, headers=headers)
            else:
                headers["Content-Type"] = "application/octet-stream"
                resp = self._request("PUT", key, idempotent=False, content=bytes(data), headers=headers)
        except ServerError:
            # The answer was lost: the swap may or may not have happened. Read the ref back.
            current, token = self.read_versioned(key)
            if current == data:
                return token
            raise
        self._raise(resp, key)
        return None if data is None else resp.headers.get("etag")

    def flush_records(self) -> None:
        """Send the held records, leaves first: one pack, or one PUT each from an older server."""
        def send(frames: list[tuple[str, bytes]]) -> None:
            try:
                self.batch.upload(frames)
            except BatchUnsupported:
                for key, data in frames:
                    resp = self._request("PUT", self._path(key), content=data,
                                         headers={"Content-Type": "application/octet-stream"})
                    self._raise(resp, key)

        self.records.drain(send)

    def close(self) -> None:
        self._client.close()
