"""The batch protocol: negotiate what is missing, then move many objects in one stream.

Like git's pack negotiation, in three requests instead of one per object:

- ``POST /repo/batch/have`` (write): the client lists object and array hashes it is about to
  send; the server answers those it lacks (and freshens the ones it has, for gc).
- ``POST /repo/batch/upload`` (write): one pack (:mod:`mrepo.store.pack`) of objects and arrays in
  write order: arrays (``zarr.json`` first, then its chunks), blobs, records from the leaves up.
  Every frame is verified before it becomes visible: objects by hash, canonical form, schema and
  references (:mod:`mrepo.api.ingest`); arrays chunk by chunk against their ``zarr.json``
  digests, then the whole array hash in bounded memory (:mod:`mrepo.store.array_verify`).
  What was stored stays stored when the stream breaks, so a retry (after a kill, on either side)
  negotiates again and sends only the rest.
- ``POST /repo/batch/download`` (read): the client names the objects and arrays it wants; the
  answer is one pack of them (arrays as ``zarr.json`` then chunks), which the client verifies.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field, StringConstraints

from ..store import CorruptObject, InvalidInput, MrepoError, ObjectNotFound, pack
from ..store import protocol_names as names
from ..store.array_verify import check_chunk, check_slab_size, verify_array
from ..store.batch_client import coalesced
from ..store.errors import InvalidRecord
from ..store.hashing import RECORD_TAG
from ..store.integrity import check_array_metadata
from ..store.objects import array_prefix, object_key
from ..store.parallel import window
from .auth import require
from .context import ServerContext, blocking
from .errors import ApiError
from .ingest import store_object
from .staging import UPLOAD_ID, staging_prefix

_HASH_IN_JSON = re.compile(r"[0-9a-f]{64}")
Hash = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
#: Chunk bytes of one array kept in memory before they are spilled to the staging area.
MEMORY_STAGE_BYTES = 64 << 20
#: Groups of frames read ahead of the one being stored (each at most about one piece of the body).
PIPELINE_PIECES = 8
#: Output buffered before a piece of the download stream is sent.
DOWNLOAD_PIECE = 1 << 20


class HashLists(BaseModel):
    """Object hashes (records and blobs) and array hashes."""

    objects: list[Hash] = Field(default_factory=list, alias=names.F_OBJECTS, max_length=names.MAX_BATCH_HASHES)
    arrays: list[Hash] = Field(default_factory=list, alias=names.F_ARRAYS, max_length=names.MAX_BATCH_HASHES)

    model_config = {"populate_by_name": True}


class _OpenArray:
    """An array being received: its checked ``zarr.json`` and the chunks so far."""

    def __init__(self, h: str, metadata: bytes, meta, present: bool):  # noqa: ANN001 - ArrayMeta
        self.h = h
        self.metadata = metadata
        self.meta = meta
        self.present = present
        self.memory: dict[str, bytes] = {}
        self.spilled: set[str] = set()
        self.bytes = 0

    @property
    def complete(self) -> bool:
        return len(self.memory) + len(self.spilled) == len(self.meta.chunk_digests)


class BatchReceiver:
    """Stores the frames of one upload stream, each verified before it becomes visible."""

    def __init__(self, ctx: ServerContext, upload: str, pool: ThreadPoolExecutor, publish_pool: ThreadPoolExecutor):
        self.ctx = ctx
        self.pool = pool
        self.publish_pool = publish_pool
        self.upload = upload
        self.backend = ctx.storage.backend
        self.objects = ctx.storage.objects
        self.array: _OpenArray | None = None
        self.known: set[str] = set()
        self.stored = 0
        self.present = 0
        #: Arrays being verified and written while later frames arrive: (future, bytes held).
        self._publishing: list[tuple[Future, int]] = []

    def take(self, frames: list[tuple[str, bytes]]) -> None:
        """Verify and store frames. Consecutive objects that do not name each other are checked and
        written in parallel; a record that names an object of the running group waits for it."""
        group: list[tuple[str, bytes]] = []
        in_group: set[str] = set()
        for key, data in frames:
            if key.startswith("objects/"):
                self._close_array_if_complete()
                if self.array is not None:
                    raise InvalidInput(f"pack: {key} arrives before array {self.array.h} is complete")
                self._wait_published()  # a record may name any array sent before it
                h = key[len("objects/"):].replace("/", "")
                if in_group and data.startswith(RECORD_TAG) and _names_any(data, in_group):
                    self._store_group(group)
                    group, in_group = [], set()
                group.append((h, data))
                in_group.add(h)
            else:
                self._store_group(group)
                group, in_group = [], set()
                self._take_array_file(key, data)
        self._store_group(group)

    def _store_group(self, group: list[tuple[str, bytes]]) -> None:
        if not group:
            return
        known = self.known
        fresh = list(self.pool.map(lambda hd: store_object(self.backend, self.objects, hd[0], hd[1], known), group))
        self.stored += sum(fresh)
        self.present += len(fresh) - sum(fresh)
        self.known.update(h for h, _ in group)

    def _take_array_file(self, key: str, data: bytes) -> None:
        _, h, path = key.split("/", 2)
        if path == "zarr.json":
            self._close_array_if_complete()
            if self.array is not None:
                raise InvalidInput(f"pack: array {h} starts before array {self.array.h} is complete")
            present = self.objects.freshen("array", h)
            meta = None
            if not present:
                meta = check_array_metadata(h, data, max_bytes=self.ctx.staging.max_array_bytes)
                check_slab_size(h, meta)
            self.array = _OpenArray(h, data, meta, present)
            if not present and not meta.chunk_digests:
                self._close_array_if_complete()
            elif present:
                self.present += 1
            return
        arr = self.array
        if arr is None or arr.h != h:
            raise InvalidInput(f"pack: chunk {key} without its array's zarr.json before it")
        if arr.present:
            return
        check_chunk(arr.meta, path, data, f"array {h}")
        if path in arr.memory or path in arr.spilled:
            raise InvalidInput(f"pack: chunk {key} sent twice")
        arr.bytes += len(data)
        if arr.bytes > MEMORY_STAGE_BYTES:
            for k, v in arr.memory.items():
                self.backend.put(staging_prefix(h, self.upload) + k, v)
                arr.spilled.add(k)
            arr.memory.clear()
            self.backend.put(staging_prefix(h, self.upload) + path, data)
            arr.spilled.add(path)
        else:
            arr.memory[path] = data
        self._close_array_if_complete()

    def _chunk(self, arr: _OpenArray, key: str) -> bytes:
        if key in arr.memory:
            return arr.memory[key]
        return self.backend.get(staging_prefix(arr.h, self.upload) + key)

    def _close_array_if_complete(self) -> None:
        arr = self.array
        if arr is None or not (arr.present or arr.complete):
            return
        self.array = None
        self.known.add(arr.h)
        if arr.present:
            return
        # Verified and written in the background while the next frames arrive, with a bound on the
        # chunk bytes held: the oldest publication is awaited first when the bound is passed.
        self._publishing.append((self.publish_pool.submit(self._publish, arr), len(arr.memory) and arr.bytes))
        while len(self._publishing) > 1 and sum(n for _, n in self._publishing) > MEMORY_STAGE_BYTES:
            self._collect(self._publishing.pop(0)[0])

    def _publish(self, arr: _OpenArray) -> bool:
        """Verify array ``arr`` (slab by slab) and make it visible: chunks first, ``zarr.json`` last."""
        try:
            with self.ctx.staging.lock(arr.h):
                if self.objects.has_array(arr.h):
                    return False
                # chunks held in memory were checked against their digests on arrival; spilled ones
                # are read back from staging and checked again
                verify_array(arr.h, arr.meta, lambda k: self._chunk(arr, k), digests_checked=arr.memory)
                prefix = array_prefix(arr.h)
                for k in sorted(arr.meta.chunk_digests):
                    self.backend.put(prefix + k, self._chunk(arr, k))
                self.backend.put(prefix + "zarr.json", arr.metadata)
                return True
        finally:
            if arr.spilled:
                self.ctx.staging.discard(arr.h, self.upload)

    def _collect(self, future: Future) -> None:
        if future.result():
            self.stored += 1
        else:
            self.present += 1

    def _wait_published(self) -> None:
        """Wait for every array in flight; the first failure is raised."""
        while self._publishing:
            self._collect(self._publishing.pop(0)[0])

    def finish(self) -> None:
        """The stream is complete: no array may be left half-sent, every array is published."""
        self._close_array_if_complete()
        if self.array is not None:
            raise InvalidInput(f"pack ended in the middle of array {self.array.h}")
        self._wait_published()

    def abandon(self) -> None:
        """Wait for arrays in flight (errors were reported already) and drop staged chunks of an
        array the stream did not complete."""
        for future, _ in self._publishing:
            try:
                future.result()
            except Exception:  # noqa: BLE001, S110 - the stream's own error is what the client hears
                pass
        self._publishing.clear()
        if self.array is not None and self.array.spilled:
            self.ctx.staging.discard(self.array.h, self.upload)
        self.array = None


def _names_any(record: bytes, hashes: set[str]) -> bool:
    """True when the record's bytes name any of ``hashes`` (a cheap over-approximation: any mention)."""
    return any(h.encode() in record for h in hashes) if len(hashes) < 64 else \
        any(m in hashes for m in _HASH_IN_JSON.findall(record.decode("utf-8", "replace")))


def _download_frames(ctx: ServerContext, wanted: HashLists, pool: ThreadPoolExecutor) -> Iterator[tuple[str, bytes]]:
    """(key, bytes) of the wanted objects and arrays that the server holds, arrays as zarr.json then chunks."""
    backend, objects = ctx.storage.backend, ctx.storage.objects

    def read_object(h: str) -> tuple[str, bytes | None]:
        try:
            return object_key(h), backend.get(object_key(h))
        except ObjectNotFound:
            return object_key(h), None

    for key, data in window(pool, read_object, wanted.objects):
        if data is not None:
            yield key, data
    for h in wanted.arrays:
        prefix = array_prefix(h)
        try:
            metadata = backend.get(prefix + "zarr.json")
        except ObjectNotFound:
            continue
        yield prefix + "zarr.json", metadata
        try:
            keys = sorted(objects.array_meta(h).chunk_digests)
        except MrepoError:
            keys = []
        for key, data in window(pool, lambda k: (k, backend.get(k)), [prefix + k for k in keys]):
            yield key, data


def build_router(ctx: ServerContext) -> APIRouter:
    router = APIRouter(prefix=names.MOUNT, tags=["batch protocol"])
    reader = Depends(require(ctx.policy, "read"))
    writer = Depends(require(ctx.policy, "write"))
    pool = ThreadPoolExecutor(8, thread_name_prefix="mrepo-batch")
    publish_pool = ThreadPoolExecutor(4, thread_name_prefix="mrepo-publish")

    @router.post("/" + names.BATCH_HAVE_PATH, dependencies=[writer],
                 summary="Negotiate: which of these objects and arrays does the server lack?")
    async def have(body: HashLists) -> dict:
        def run() -> dict:
            objects = ctx.storage.objects
            obj = list(pool.map(lambda h: objects.freshen("record", h), body.objects))
            arr = list(pool.map(lambda h: objects.freshen("array", h), body.arrays))
            return {names.F_MISSING_OBJECTS: [h for h, p in zip(body.objects, obj) if not p],
                    names.F_MISSING_ARRAYS: [h for h, p in zip(body.arrays, arr) if not p]}
        return await blocking(run)

    @router.post("/" + names.BATCH_UPLOAD_PATH, dependencies=[writer],
                 openapi_extra={"requestBody": {"content": {"application/octet-stream": {
                     "schema": {"type": "string", "format": "binary"}}}, "required": True,
                     "description": f"a pack ({names.PACK_MEDIA_TYPE})"}},
                 summary="Upload one pack of objects and arrays, each verified before it becomes visible")
    async def upload(request: Request) -> JSONResponse:
        upload_id = request.headers.get(names.UPLOAD_HEADER) or uuid.uuid4().hex
        if not UPLOAD_ID.match(upload_id):
            raise ApiError(400, f"invalid {names.UPLOAD_HEADER} header")
        receiver = BatchReceiver(ctx, upload_id, pool, publish_pool)
        reader_ = pack.PackReader(max_frame=ctx.max_body_bytes)
        error: Exception | None = None
        start = time.perf_counter()
        # Reading and storing overlap: frames go through a queue bounded in bytes to a consumer that
        # verifies and stores them in the thread pool while the next pieces of the body arrive.
        queue: asyncio.Queue[list[tuple[str, bytes]] | None] = asyncio.Queue()
        room = asyncio.Semaphore(PIPELINE_PIECES)

        async def consume() -> None:
            nonlocal error
            while (frames := await queue.get()) is not None:
                try:
                    if error is None:
                        await blocking(receiver.take, frames)
                except (MrepoError, ValueError) as exc:
                    error = exc
                finally:
                    room.release()

        async def _read_stream() -> None:
            nonlocal error
            try:
                async for piece in request.stream():
                    if error is not None:
                        continue  # drain the body so the client reads the answer
                    try:
                        frames = reader_.feed(piece)
                    except (MrepoError, ValueError) as exc:
                        error = exc
                        continue
                    if frames:
                        await room.acquire()
                        queue.put_nowait(frames)
                if error is None:
                    reader_.finish()
            except (MrepoError, ValueError) as exc:
                error = error or exc

        consumer = asyncio.create_task(consume())
        try:
            await _read_stream()
        finally:  # also on a client disconnect: the consumer stops, arrays in flight end, staging is dropped
            queue.put_nowait(None)
            await consumer
            if error is not None or not reader_.done:
                await blocking(receiver.abandon)
        try:
            if error is None:
                await blocking(receiver.finish)
        except (MrepoError, ValueError) as exc:
            error = exc
        finally:
            await blocking(receiver.abandon)
        if error is not None:
            status = 400
            code = "invalid-record" if isinstance(error, InvalidRecord) else "hash-mismatch" if isinstance(
                error, CorruptObject) else (
                "missing-object" if isinstance(error, ObjectNotFound) else "bad-request")
            raise ApiError(status, f"{error} (stored before the error: {receiver.stored})", code)
        return JSONResponse({names.F_STORED: receiver.stored, names.F_PRESENT: receiver.present,
                             names.F_BYTES: reader_.received,
                             "seconds": round(time.perf_counter() - start, 3)})

    @router.post("/" + names.BATCH_DOWNLOAD_PATH, dependencies=[reader],
                 responses={200: {"content": {names.PACK_MEDIA_TYPE: {}}, "description": "a pack"}},
                 summary="Download the named objects and arrays as one pack (absent ones are left out)")
    def download(body: HashLists) -> StreamingResponse:
        pieces = coalesced(_download_frames(ctx, body, pool), DOWNLOAD_PIECE)
        return StreamingResponse(pieces, media_type=names.PACK_MEDIA_TYPE)

    return router
