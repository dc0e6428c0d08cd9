"""The batch protocol: negotiate what is missing, then move many objects in one stream.

Like git's pack negotiation, in three requests instead of one per object:

- ``POST /repo/batch/have`` (write): the client lists object and array hashes it is about to
  send; the server answers those it lacks or holds damaged (and freshens the ones it has, for
  gc). A present copy counts as held when it passes the single-upload path's check
  (:func:`mrepo.store.soundness.object_sound`: records and blobs re-read and re-hashed up to 1 MiB,
  larger blobs by presence; :func:`mrepo.store.soundness.array_sound`: every chunk file of an array,
  of any size, against the digest its ``zarr.json`` records), so the client sends a damaged one and
  the upload replaces it.
- ``POST /repo/batch/upload`` (write): one pack (:mod:`mrepo.store.pack`) of objects and arrays in
  write order: arrays (``zarr.json`` first, then its chunks), blobs, records from the leaves up.
  Every frame is verified before it becomes visible: objects by hash, canonical form, schema and
  references (:mod:`mrepo.api.ingest`); arrays chunk by chunk as they arrive (digest, declared
  size, decoding, padding) and by the whole array hash, slab by slab, chunks coming in slab
  order (:class:`mrepo.store.integrity.ArrayReceiver`). Each chunk is checked once and written
  once, on arrival: under its final name while this upload holds the array's lock (invisible
  until ``zarr.json``, written after the array hash), or, when another upload of the same array
  holds it, in this upload's staging area, moved under the final names on publication. An
  array present but damaged is received into staging too and replaces the stored files
  (chunks, then ``zarr.json``) once it verifies; until then readers see the damaged copy.
  What was stored stays stored when the stream breaks, so a retry (after a kill, on either side)
  negotiates again and sends only the rest.
- ``POST /repo/batch/download`` (read): the client names the objects and arrays it wants; the
  answer is one pack of them (arrays as ``zarr.json`` then chunks), which the client verifies.
  Chunk files go out by ``sendfile`` where the server offers ASGI's zero-copy send (``mrepo serve``).
- ``POST /repo/batch/closure`` (read): the first records (breadth first, up to
  :data:`mrepo.store.protocol_names.CLOSURE_RECORDS`) of the closure of the records named, in one
  pack: a pull receives the levels of a small closure in one request instead of one per level, and
  asks for the rest, if any, level by level.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field, StringConstraints
from starlette.types import Send

from ..store import CorruptObject, InvalidInput, MrepoError, ObjectNotFound, pack
from ..store import protocol_names as names
from ..store.batch_client import coalesced
from ..store.errors import InvalidRecord
from ..store.file_body import FileBody, stored_body
from ..store.hashing import RECORD_TAG, parse_record_bytes
from ..store.integrity import ArrayReceiver, Buffers, check_array_metadata, check_slab_size, chunk_keys
from ..store.objects import array_prefix, object_key
from ..store.parallel import per_key, settle, window
from ..store.soundness import array_sound, object_sound
from ..store.walk import split_references
from .auth import require
from .context import ServerContext, blocking
from .errors import ApiError
from .ingest import REHASH_PRESENT_BYTES, store_object
from .receive_buffer import BODY_VIEWS, ZERO_COPY_SEND
from .staging import UPLOAD_ID, staging_prefix

_HASH_IN_JSON = re.compile(r"[0-9a-f]{64}")
Hash = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
#: Chunk bytes of one stream being checked and written in the thread pool at once.
CHECK_BYTES = 32 << 20
#: Arrays of one stream being published (their last chunks checked, hash, ``zarr.json``) at once.
PUBLISHING = 2
#: Groups of frames read ahead of the one being stored (each at most about one piece of the body).
PIPELINE_PIECES = 8
#: Upload frames from this size on reach the workers in the socket's pieces (:class:`mrepo.store.pack.FramePieces`).
JOIN_IN_WORKER_BYTES = 64 << 10
#: Output buffered before a piece of the download stream is sent.
DOWNLOAD_PIECE = 1 << 20
#: Bytes of download pieces read from the store per hop to the thread pool.
DOWNLOAD_BATCH = 8 << 20


class HashLists(BaseModel):
    """Object hashes (records and blobs) and array hashes."""

    objects: list[Hash] = Field(default_factory=list, alias=names.F_OBJECTS, max_length=names.MAX_BATCH_HASHES)
    arrays: list[Hash] = Field(default_factory=list, alias=names.F_ARRAYS, max_length=names.MAX_BATCH_HASHES)

    model_config = {"populate_by_name": True}


class _OpenArray:
    """An array being received: its checked ``zarr.json``, the receiver that checks its chunks (None
    when the server holds the array already) and where the chunks go: under their final names
    while holding the array's ``lock``, else (``lock`` None) to this upload's staging area."""

    def __init__(self, h: str, metadata: bytes, receiver: ArrayReceiver | None, lock: threading.Lock | None,
                 staging: str):
        self.h = h
        self.metadata = metadata
        self.receiver = receiver
        self.lock = lock
        self.prefix = array_prefix(h) if lock is not None else staging
        #: Chunks being checked and written in the pool, with their sizes, in arrival order.
        self.checks: deque[tuple[Future, int]] = deque()
        self.written: list[str] = []

    @property
    def present(self) -> bool:
        return self.receiver is None

    @property
    def complete(self) -> bool:
        return self.receiver is None or self.receiver.complete

    def wait_checks(self) -> None:
        """Wait for every chunk in flight (all of them end), then raise the first failure."""
        failed = [f.exception() for f, _ in self.checks]
        self.checks.clear()
        if any(failed):
            raise next(e for e in failed if e is not None)


class BatchReceiver:
    """Stores the frames of one upload stream, each verified before it becomes visible."""

    def __init__(self, ctx: ServerContext, upload: str, pool: ThreadPoolExecutor, publish_pool: ThreadPoolExecutor,
                 buffers: Buffers):
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
        #: Arrays being published while later frames arrive.
        self._publishing: list[Future] = []
        #: Slab memory of the array checks, the server's (see :func:`build_router`).
        self.buffers = buffers

    def take(self, frames: list[tuple[str, bytes]]) -> None:
        """Verify and store frames. Consecutive objects that do not name each other are checked and
        written in parallel; a record that names an object of the running group waits for it."""
        group: list[tuple[str, bytes]] = []
        in_group: set[str] = set()
        for key, data in frames:
            if isinstance(data, pack.FramePieces) and not _is_chunk(key):
                data = bytes(data)  # objects and zarr.json are checked as bytes; only chunks are copied into slabs
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
            receiver, lock = None, None
            present = self.objects.freshen("array", h)
            if not present or not array_sound(self.backend, h):
                meta = check_array_metadata(h, data, max_bytes=self.ctx.staging.max_array_bytes)
                check_slab_size(h, meta)
                receiver = ArrayReceiver(h, meta, self.buffers)
                lock = None if present else self.ctx.staging.lock(h)  # a damaged copy is replaced from staging
                if lock is not None and not lock.acquire(blocking=False):  # another upload of it is under way
                    lock = None
                elif lock is not None and self.objects.has_array(h):  # published since: its chunks stay
                    lock.release()
                    receiver, lock = None, None
            self.array = _OpenArray(h, data, receiver, lock, staging_prefix(h, self.upload))
            if receiver is None:
                self.present += 1  # its chunks, if sent, are dropped; it closes with the next frame
            else:
                self._close_array_if_complete()  # an array without chunks is complete at once
            return
        arr = self.array
        if arr is None or arr.h != h:
            raise InvalidInput(f"pack: chunk {key} without its array's zarr.json before it")
        if arr.receiver is None:
            return
        self._start_check(arr, path, data)
        for future in settle(arr.checks, CHECK_BYTES):  # raises the first failed check
            future.result()
        self._close_array_if_complete()

    def take_chunks(self, frames: list[tuple[str, bytes]]) -> tuple[int, list[Future]]:
        """Start the checks of the leading ``frames`` that are chunks of the array being received,
        up to (not including) its last chunk, without waiting for anything: on the event loop, no
        thread hop per piece of a large upload. Returns how many frames it took and the oldest checks
        in flight that must end before more is taken (more than CHECK_BYTES in flight); raises the
        first failed check that has ended. The frames it leaves (the last chunk, which closes and
        publishes the array, a ``zarr.json``, objects) go to :meth:`take` in the thread pool."""
        arr = self.array
        if arr is None or arr.receiver is None:
            return 0, []
        prefix = f"arrays/{arr.h}/"
        taken = 0
        for key, data in frames:
            if arr.receiver.unadmitted <= 1 or not key.startswith(prefix) or key == prefix + "zarr.json":
                break
            self._start_check(arr, key[len(prefix):], data)
            taken += 1
        return taken, settle(arr.checks, CHECK_BYTES)

    def _start_check(self, arr: _OpenArray, path: str, data: bytes) -> None:
        """Admit a chunk of the open array (of this array, not sent before, in slab order) and start
        its check and write in the pool."""
        arr.receiver.admit(path)
        arr.checks.append((self.pool.submit(self._check_chunk, arr, path, data), len(data)))

    def _check_chunk(self, arr: _OpenArray, path: str, data: bytes | pack.FramePieces) -> None:
        """Check one chunk (in the pool), then write it once. A chunk still in the socket's pieces is
        first copied into reused memory here (instead of joined on the event loop)."""
        block = None
        if isinstance(data, pack.FramePieces):
            if arr.receiver.meta.shape:  # (the one chunk of a 0-d array would stay referenced as its slab)
                block = self.buffers.take((len(data),), "uint8")
                data.copy_into(block)
                data = memoryview(block)
            else:
                data = bytes(data)
        try:
            arr.receiver.add(path, data)
            self.backend.put(arr.prefix + path, data)
        finally:
            if block is not None:
                self.buffers.give(block)
        arr.written.append(arr.prefix + path)

    def _close_array_if_complete(self) -> None:
        arr = self.array
        if arr is None or not arr.complete:
            return
        self.array = None
        self.known.add(arr.h)
        if arr.present:
            return
        # Published in the background while the next frames arrive (its last chunks may still be
        # in flight); the oldest publication is awaited when too many are under way.
        # A staged array waits for the lock that another upload holds until that upload publishes:
        # in a thread of its own, never in a pool that the holder needs to finish.
        self._publishing.append(self.publish_pool.submit(self._publish, arr) if arr.lock is not None
                                else _in_thread(self._publish, arr))
        while len(self._publishing) > PUBLISHING:
            self._collect(self._publishing.pop(0))

    def _publish(self, arr: _OpenArray) -> bool:
        """Make a received array visible once every chunk passed its check and the array its hash:
        ``zarr.json`` after the chunks (moved from staging first when they were staged; over
        the stored files when the array is present but damaged)."""
        published = False
        try:
            arr.wait_checks()
            arr.receiver.finish()
            if arr.lock is None:
                with self.ctx.staging.lock(arr.h):
                    if self.objects.has_array(arr.h) and array_sound(self.backend, arr.h):
                        return False
                    final = array_prefix(arr.h)
                    for k in chunk_keys(arr.receiver.meta):
                        self.backend.move(arr.prefix + k, final + k)
                    self.backend.put(final + "zarr.json", arr.metadata)
            else:
                self.backend.put(arr.prefix + "zarr.json", arr.metadata)
            published = True
            return True
        finally:
            self._release(arr, published)

    def _release(self, arr: _OpenArray, published: bool) -> None:
        """After publication or failure: drop what an unpublished array left and release its lock."""
        try:
            if not published:
                for key in arr.written:
                    self.backend.delete(key)
            if arr.lock is None:
                self.ctx.staging.discard(arr.h, self.upload)
        finally:
            arr.written.clear()
            if arr.lock is not None:
                arr.lock.release()
                arr.lock = None

    def _collect(self, future: Future) -> None:
        if future.result():
            self.stored += 1
        else:
            self.present += 1

    def _wait_published(self) -> None:
        """Wait for every array in flight; the first failure is raised."""
        while self._publishing:
            self._collect(self._publishing.pop(0))

    def finish(self) -> None:
        """The stream is complete: no array may be left half-sent, every array is published."""
        self._close_array_if_complete()
        if self.array is not None:
            raise InvalidInput(f"pack ended in the middle of array {self.array.h}")
        self._wait_published()

    def abandon(self) -> None:
        """Wait for arrays in flight (errors were reported already) and drop staged chunks of an
        array the stream did not complete."""
        for future in self._publishing:
            future.exception()  # errors were reported already: the stream's own error is what the client hears
        self._publishing.clear()
        arr, self.array = self.array, None
        if arr is not None and not arr.present:
            try:
                arr.wait_checks()
            except Exception:  # noqa: BLE001, S110 - as above
                pass
            self._release(arr, published=False)


def _in_thread(fn: Callable[..., Any], *args: Any) -> Future:
    """``fn(*args)`` in a new thread; its Future."""
    future: Future = Future()

    def run() -> None:
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits for the future
            future.set_exception(exc)

    threading.Thread(target=run, name="mrepo-publish-staged", daemon=True).start()
    return future


async def _in_batches(pieces: Iterator[bytes], size: int) -> AsyncIterator[bytes]:
    """The pieces of a blocking iterator (store reads), taken in the thread pool in batches that double
    from one piece up to ``size`` bytes: one thread hop per batch instead of one per piece (a pull of
    three 32 MiB maps crossed ~560 times between the event loop and the pool, a wake-up of each side
    every time), and the first piece goes out as soon as it is read."""
    limit = 0

    def take() -> list[bytes]:
        batch, n = [], 0
        for piece in pieces:
            batch.append(piece)
            n += len(piece)
            if n >= limit:
                break
        return batch

    while batch := await blocking(take):
        limit = min(max(2 * limit, 1 << 20), size)
        for piece in batch:
            yield piece


def _is_chunk(key: str) -> bool:
    """True for the key of an array chunk file (``arrays/<hash>/c...``)."""
    return key.startswith("arrays/") and not key.endswith("/zarr.json")


def _names_any(record: bytes, hashes: set[str]) -> bool:
    """True when the record's bytes name any of ``hashes`` (a cheap over-approximation: any mention)."""
    return any(h.encode() in record for h in hashes) if len(hashes) < 64 else \
        any(m in hashes for m in _HASH_IN_JSON.findall(record.decode("utf-8", "replace")))


def _download_frames(ctx: ServerContext, wanted: HashLists, pool: ThreadPoolExecutor, *, files: bool = False
                     ) -> Iterator[tuple[str, bytes | FileBody]]:
    """(key, data) of the wanted objects and arrays that the server holds, arrays as zarr.json then
    chunks; with ``files``, chunk files of a local store as :class:`FileBody` (sent by the kernel)."""
    backend, objects = ctx.storage.backend, ctx.storage.objects
    read_chunk = (lambda k: (k, stored_body(backend, k))) if files else (lambda k: (k, backend.get(k)))

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
            keys = chunk_keys(objects.array_meta(h))  # grid order: the receiver checks slab by slab
        except MrepoError:
            keys = []
        for key, data in window(pool, read_chunk, [prefix + k for k in keys]):
            yield key, data


def _closure_frames(ctx: ServerContext, roots: list[str], limit: int, pool: ThreadPoolExecutor
                    ) -> Iterator[tuple[str, bytes]]:
    """(key, bytes) of the records of the closure of ``roots`` that the server holds, level by level
    (breadth first), at most ``limit``; a record that is absent or does not parse is left out and not
    descended into (the client asks for what it still lacks, and verifies what it gets)."""
    backend = ctx.storage.backend
    seen, frontier, sent = set(roots), list(roots), 0

    def read(h: str) -> bytes | None:
        try:
            return backend.get(object_key(h))
        except ObjectNotFound:
            return None

    while frontier and sent < limit:
        frontier = frontier[:limit - sent]
        level, frontier = frontier, []
        for h, data in zip(level, per_key(pool, backend)(read, level)):
            if data is None or not data.startswith(RECORD_TAG):
                continue
            try:
                body = parse_record_bytes(data)[1]
            except MrepoError:
                continue
            yield object_key(h), data
            sent += 1
            frontier.extend(split_references(body, seen)[1])


class PackResponse(StreamingResponse):
    """A pack answer: byte pieces as ``http.response.body``, :class:`FileBody` pieces as ASGI zero-copy
    sends (:data:`ZERO_COPY_SEND`; only produced where the scope offers it)."""

    async def stream_response(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        async for piece in self.body_iterator:
            if isinstance(piece, FileBody):
                with open(piece.path, "rb") as file:
                    await send({"type": ZERO_COPY_SEND, "file": file, "offset": 0, "count": piece.size,
                                "more_body": True})
            else:
                await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class BatchPools:
    """The batch protocol's threads: chunk checks, writes and reads (``work``) and array publication
    (``publish``). :meth:`start` starts them all at once (the server's start-up), where a pool
    would start one per task while none is idle, during the first large transfers: a thread start
    waits for the new thread, ~3 ms each on a busy 2-core machine, on the event loop (9 ms of the
    first large push to a fresh ``mrepo serve``). :meth:`close` lets them go (the server's end)."""

    WORKERS = 8
    PUBLISHERS = 4

    def __init__(self) -> None:
        self._open()

    def _open(self) -> None:
        self.work = ThreadPoolExecutor(self.WORKERS, thread_name_prefix="mrepo-batch")
        self.publish = ThreadPoolExecutor(self.PUBLISHERS, thread_name_prefix="mrepo-publish")
        self.closed = False

    def start(self) -> None:
        if self.closed:  # an app served again after its end (a test client entered twice)
            self._open()
        for pool, n in ((self.work, self.WORKERS), (self.publish, self.PUBLISHERS)):
            meet = threading.Barrier(n)  # n tasks that wait for each other: no thread is idle until all n run
            for future in [pool.submit(meet.wait, 10.0) for _ in range(n)]:
                try:
                    future.result()
                except threading.BrokenBarrierError:  # threads are started on demand anyway
                    break

    def close(self) -> None:
        self.closed = True
        self.work.shutdown(wait=False, cancel_futures=True)
        self.publish.shutdown(wait=False, cancel_futures=True)


def build_router(ctx: ServerContext, pools: BatchPools | None = None) -> APIRouter:
    router = APIRouter(prefix=names.MOUNT, tags=["batch protocol"])
    reader = Depends(require(ctx.policy, "read"))
    writer = Depends(require(ctx.policy, "write"))
    pools = pools or BatchPools()
    # Slab memory of the array checks of every upload, reused from slab to slab and from upload to
    # upload (new memory per slab was the server's largest cost on a push of large arrays: the kernel
    # zeroing fresh pages, 30-40 % of its CPU; memory kept per upload still came fresh from another
    # thread's heap on the next upload: 20 % of the server's CPU in a push of three 32 MiB maps).
    buffers = Buffers()

    @router.post("/" + names.BATCH_HAVE_PATH, dependencies=[writer],
                 summary="Negotiate: which of these objects and arrays does the server lack?")
    async def have(body: HashLists) -> dict:
        def run() -> dict:
            objects = ctx.storage.objects
            backend = ctx.storage.backend
            # Presence checks and small reads in the pool only where each is a round trip (per_key: on
            # a local store 200 hashes took 16 -> 6 ms); a present array is read and hashed in full, in the pool.
            each = per_key(pools.work, backend)
            obj = list(each(lambda h: objects.freshen("record", h) and object_sound(backend, h, REHASH_PRESENT_BYTES), body.objects))
            held = [h for h, p in zip(body.arrays, each(lambda h: objects.freshen("array", h), body.arrays)) if p]
            sound = {h for h, ok in zip(held, pools.work.map(lambda h: array_sound(backend, h), held)) if ok}
            return {names.F_MISSING_OBJECTS: [h for h, p in zip(body.objects, obj) if not p],
                    names.F_MISSING_ARRAYS: [h for h in body.arrays if h not in sound]}
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
        receiver = BatchReceiver(ctx, upload_id, pools.work, pools.publish, buffers)
        # large frames stay in the socket's pieces until a worker copies them (BatchReceiver._check_chunk)
        reader_ = pack.PackReader(max_frame=ctx.max_body_bytes, join_from=JOIN_IN_WORKER_BYTES)
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
                        taken, wait = receiver.take_chunks(frames)  # array chunks: checks start here
                        for future in wait:
                            await asyncio.wrap_future(future)
                        if taken < len(frames):
                            await blocking(receiver.take, frames[taken:])
                except (MrepoError, ValueError) as exc:
                    error = exc
                finally:
                    room.release()

        async def _read_stream() -> None:
            nonlocal error
            request.scope[BODY_VIEWS] = True  # the pack reader takes the socket's pieces as they are
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

    @router.post("/" + names.BATCH_SIZES_PATH, dependencies=[reader],
                 summary="Bytes each named array declares (the arrays the server holds), to balance download streams")
    async def sizes(body: HashLists) -> dict:
        def run() -> dict:
            def declared(h: str) -> int | None:
                try:
                    return ctx.storage.objects.array_meta(h).nbytes
                except (MrepoError, ValueError):
                    return None
            got = dict(zip(body.arrays, pools.work.map(declared, body.arrays)))
            return {names.F_SIZES: {h: n for h, n in got.items() if n is not None}}
        return await blocking(run)

    @router.post("/" + names.BATCH_CLOSURE_PATH, dependencies=[reader],
                 responses={200: {"content": {names.PACK_MEDIA_TYPE: {}}, "description": "a pack of records"}},
                 summary=f"The first records (up to {names.CLOSURE_RECORDS}, breadth first) of the closure of "
                         "the given records, as one pack: a pull's record levels in one request")
    def closure(body: HashLists) -> StreamingResponse:
        frames = _closure_frames(ctx, body.objects, names.CLOSURE_RECORDS, pools.work)
        return StreamingResponse(coalesced(frames, DOWNLOAD_PIECE), media_type=names.PACK_MEDIA_TYPE)

    @router.post("/" + names.BATCH_DOWNLOAD_PATH, dependencies=[reader],
                 responses={200: {"content": {names.PACK_MEDIA_TYPE: {}}, "description": "a pack"}},
                 summary="Download the named objects and arrays as one pack (absent ones are left out)")
    def download(request: Request, body: HashLists) -> StreamingResponse:
        # chunk files go out by sendfile where the server offers ASGI's zero-copy send (mrepo serve)
        files = ZERO_COPY_SEND in request.scope.get("extensions", {})
        pieces = coalesced(_download_frames(ctx, body, pools.work, files=files), DOWNLOAD_PIECE)
        return PackResponse(_in_batches(pieces, DOWNLOAD_BATCH), media_type=names.PACK_MEDIA_TYPE)

    return router
