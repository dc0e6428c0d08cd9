"""Client side of the batch protocol (server side: :mod:`mrepo.api.batch`).

:class:`BatchClient` wraps an :class:`~mrepo.store.http_backend.HttpBackend`:

- :meth:`BatchClient.missing`: which objects and arrays the server lacks (``batch/have``);
- :meth:`BatchClient.upload`: one pack of ``(key, bytes)`` frames (``batch/upload``), in write
  order (arrays as ``zarr.json`` then chunks, blobs, records from the leaves up);
- :meth:`BatchClient.download`: the frames of the named objects and arrays (``batch/download``),
  read incrementally; the caller verifies each before writing it.

:class:`RecordBuffer` holds the records a command writes through an HttpBackend until the next
ref swap, then sends them in dependency order in one pack, so a record never reaches the server
before the records it names (and nothing is sent when the command fails first).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from . import pack
from . import protocol_names as names
from .errors import CorruptObject, InvalidInput
from .file_body import FileBody
from .hashing import parse_record_bytes
from .http_wire import BODY_VIEWS
from .objects import references
from .walk import leaves_first

if TYPE_CHECKING:
    from .http_backend import HttpBackend

#: Bytes of frames coalesced into one piece of the upload body.
UPLOAD_PIECE = 1 << 20
#: Largest frame accepted from a server in a download.
MAX_DOWNLOAD_FRAME = 1 << 30
#: Largest record accepted in a closure answer (records are JSON documents of KiB; a population
#: record names every data source and species).
MAX_CLOSURE_FRAME = 64 << 20
#: Bytes of a closure answer kept in memory; a larger answer is cut there (what it lacks is then
#: downloaded level by level).
MAX_CLOSURE_BYTES = 256 << 20


def coalesced(frames: Iterable[tuple[str, bytes | FileBody]], piece: int = UPLOAD_PIECE) -> Iterator[bytes | FileBody]:
    """The pack of ``frames`` in pieces of about ``piece`` bytes (few, large writes). Data of ``piece``
    bytes or more, and every :class:`~mrepo.store.file_body.FileBody` (sent by the kernel), is a piece
    of its own; smaller data is gathered with the framing around it."""
    out = bytearray(pack.MAGIC)
    for key, data in frames:
        out += pack.frame_header(key, len(data))
        if len(data) >= piece or isinstance(data, FileBody):
            yield bytes(out)
            out.clear()
            yield data if isinstance(data, FileBody) else bytes(data)
            continue
        out += data
        if len(out) >= piece:
            yield bytes(out)
            out.clear()
    out += pack.END
    yield bytes(out)


class BatchUnsupported(InvalidInput):
    """The server does not speak the batch protocol (an older mrepo)."""


class BatchClient:
    """Batch requests against one server."""

    def __init__(self, backend: HttpBackend):
        self.backend = backend

    def _post_json(self, path: str, body: dict[str, Any]) -> Any:
        resp = self.backend._request("POST", path, json=body)
        if resp.status_code in (404, 405):
            raise BatchUnsupported(f"{self.backend.url} does not offer {path}")
        self.backend._raise(resp, path)
        return resp.json()

    def missing(self, objects: list[str], arrays: list[str]) -> tuple[set[str], set[str]]:
        """(object hashes, array hashes) among those given that the server lacks; present ones are freshened."""
        miss_o: set[str] = set()
        miss_a: set[str] = set()
        step = names.MAX_BATCH_HASHES
        for i in range(0, max(len(objects), len(arrays)), step):
            doc = self._post_json(names.BATCH_HAVE_PATH, {names.F_OBJECTS: objects[i:i + step],
                                                          names.F_ARRAYS: arrays[i:i + step]})
            miss_o.update(doc[names.F_MISSING_OBJECTS])
            miss_a.update(doc[names.F_MISSING_ARRAYS])
        return miss_o, miss_a

    def sizes(self, arrays: list[str]) -> dict[str, int]:
        """Bytes that the server's ``zarr.json`` of each named array declares (arrays it holds), to deal
        a pull's arrays to streams of about equal bytes; an untrusted hint (entries not asked for, or
        not a count of bytes, are dropped), and empty where the server predates ``batch/sizes``."""
        wanted, out = set(arrays), {}
        step = names.MAX_BATCH_HASHES
        try:
            for i in range(0, len(arrays), step):
                doc = self._post_json(names.BATCH_SIZES_PATH, {names.F_ARRAYS: arrays[i:i + step]})
                got = doc.get(names.F_SIZES) if isinstance(doc, dict) else None
                for h, n in (got.items() if isinstance(got, dict) else ()):
                    if h in wanted and type(n) is int and n >= 0:
                        out[h] = n
        except BatchUnsupported:
            return {}
        return out

    def upload(self, frames: Iterable[tuple[str, bytes | FileBody]]) -> dict[str, Any]:
        """Send one pack (a frame's data may be a local file, sent from the page cache); the answer counts frames stored and already present. Not retried here:
        a caller retries by negotiating again (what was stored stays stored)."""
        headers = {"Content-Type": names.PACK_MEDIA_TYPE, names.UPLOAD_HEADER: self.backend.upload_id}
        resp = self.backend._request("POST", names.BATCH_UPLOAD_PATH, idempotent=False,
                                     content=coalesced(frames), headers=headers)
        if resp.status_code in (404, 405):
            raise BatchUnsupported(f"{self.backend.url} does not offer {names.BATCH_UPLOAD_PATH}")
        self.backend._raise(resp, "objects/")
        return resp.json()

    def closure(self, roots: list[str]) -> dict[str, bytes]:
        """Key -> bytes of the first records of the closure of ``roots`` the server sends
        (``batch/closure``; unverified: the caller checks each record it uses against its hash).
        Empty where the server predates the endpoint; cut after :data:`MAX_CLOSURE_BYTES`. A server
        that sends more than
        :data:`~mrepo.store.protocol_names.CLOSURE_RECORDS` frames, or a key that is not an
        object's, is refused (CorruptObject)."""
        got: dict[str, bytes] = {}
        body = {names.F_OBJECTS: roots[:names.MAX_BATCH_HASHES]}
        with self.backend._client.stream("POST", f"{self.backend.url}/{names.BATCH_CLOSURE_PATH}", json=body,
                                         extensions={BODY_VIEWS: True}) as resp:
            if resp.status_code in (404, 405):
                return got
            if resp.status_code >= 400:
                resp.read()
                self.backend._raise(resp, "objects/")
            held = frames = 0
            for key, data in pack.decode(resp.iter_bytes(), MAX_CLOSURE_FRAME):
                frames += 1
                if not key.startswith("objects/") or frames > names.CLOSURE_RECORDS:
                    raise CorruptObject(f"{self.backend.url} sent {key[:100]!r} in a closure of "
                                        f"{names.CLOSURE_RECORDS} records at most")
                got[key] = data
                held += len(data)
                if held >= MAX_CLOSURE_BYTES:  # enough held: the rest comes level by level
                    break
        return got

    def download(self, objects: list[str], arrays: list[str]) -> Iterator[tuple[str, bytes]]:
        """Frames ``(key, bytes)`` of the named objects and arrays the server holds (unverified)."""
        step = names.MAX_BATCH_HASHES
        for i in range(0, max(len(objects), len(arrays)), step):
            body = {names.F_OBJECTS: objects[i:i + step], names.F_ARRAYS: arrays[i:i + step]}
            client = self.backend._client
            with client.stream("POST", f"{self.backend.url}/{names.BATCH_DOWNLOAD_PATH}", json=body,
                               extensions={BODY_VIEWS: True}) as resp:
                if resp.status_code in (404, 405):
                    raise BatchUnsupported(f"{self.backend.url} does not offer {names.BATCH_DOWNLOAD_PATH}")
                if resp.status_code >= 400:
                    resp.read()
                    self.backend._raise(resp, "objects/")
                # pieces as they come off the socket (read-only views, mrepo.store.http_wire): the
                # pack reader joins a frame once (a fixed chunk size would copy every byte through
                # another buffer first)
                yield from pack.decode(resp.iter_bytes(), MAX_DOWNLOAD_FRAME)


class RecordBuffer:
    """Records written through an HttpBackend, held until the next ref swap (thread-safe)."""

    def __init__(self) -> None:
        self._data: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def add(self, key: str, data: bytes) -> None:
        with self._lock:
            self._data[key] = bytes(data)

    def get(self, key: str) -> bytes | None:
        with self._lock:
            return self._data.get(key)

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    def drain(self, send: Callable[[list[tuple[str, bytes]]], None]) -> None:
        """Send every held record, leaves first (a record after the records it names), then forget them."""
        with self._lock:
            items = dict(self._data)
        if not items:
            return
        send(dependency_order(items))
        with self._lock:
            for key in items:
                self._data.pop(key, None)


def dependency_order(records: dict[str, bytes]) -> list[tuple[str, bytes]]:
    """``(key, bytes)`` of records so that every record comes after the held records it references."""
    by_hash = {k[len("objects/"):].replace("/", ""): k for k in records}
    children: dict[str, list[str]] = {}
    for h, key in by_hash.items():
        _, body = parse_record_bytes(records[key])
        children[h] = [c for kind, c in references(body) if kind == "record" and c in by_hash and c != h]
    return [(by_hash[h], records[by_hash[h]]) for h in leaves_first({h: children[h] for h in sorted(by_hash)})]
