"""Storage backends: a flat key space of immutable objects plus compare-and-swap refs.

A backend maps keys (``objects/ab/cd...``, ``refs/heads/main``) to bytes under a
root URL. Three kinds of write exist:

- :meth:`Backend.put` — an object appears under its final key only when
  complete (temporary name + atomic rename locally; one PUT on S3).
- :meth:`Backend.cas` — compare-and-swap of a small mutable file (a ref): locally
  with an exclusive lock file and atomic rename, on S3 with conditional PUT
  (``If-None-Match: *`` to create, ``If-Match: <etag>`` to update), in memory
  under a process lock.
- :meth:`Backend.delete` — garbage collection and ref deletion only.

URL forms: a plain path or ``file://`` (local folder), ``s3://bucket/prefix``
(s3fs; endpoint and credentials from options or the environment variables
``MREPO_S3_ENDPOINT``/``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``), ``memory://name``.
"""

from __future__ import annotations

import base64
import errno
import os
import socket
import threading
import time
import uuid
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from .errors import (
    AccessDenied,
    InvalidInput,
    InvalidName,
    ObjectNotFound,
    RefConflict,
    Unreachable,
    require_extra,
)
from .names import check_key

#: Ref "version token" returned by :meth:`Backend.read_versioned`; opaque to callers.
Token = str | None


@dataclass(frozen=True)
class Entry:
    """A listed key with its size in bytes and modification time (epoch seconds)."""

    key: str
    size: int
    mtime: float


class Backend(ABC):
    """Key/value access to one repository root."""

    url: str

    @abstractmethod
    def get(self, key: str) -> bytes:
        """Bytes at ``key``; raises ObjectNotFound."""

    @abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Write ``data`` at ``key`` so that it appears only when complete (overwrites)."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; missing keys are ignored."""

    @abstractmethod
    def list(self, prefix: str) -> Iterator[Entry]:
        """Every key below ``prefix`` (a folder-like prefix ending in ``/``), recursively."""

    def list_refs(self, prefix: str) -> Iterator[tuple[str, str]] | None:
        """(key, hash) of the refs below ``prefix`` in one listing with values, where the backend has
        one (an mrepo server); None here: RefStore lists the keys and reads each ref."""
        return None

    @abstractmethod
    def read_versioned(self, key: str) -> tuple[bytes | None, Token]:
        """Current bytes of a mutable file and a token for :meth:`cas` (None, None if absent)."""

    @abstractmethod
    def cas(self, key: str, expected: Token, data: bytes | None) -> Token:
        """Replace the file at ``key`` with ``data`` (delete it when ``data`` is None) if its
        token is still ``expected`` (None: it must not exist). Raises RefConflict otherwise.
        Returns the new token."""

    def put_file(self, key: str, path: str | Path) -> None:
        """Upload a local file (default: read it whole)."""
        self.put(key, Path(path).read_bytes())

    #: True where rewriting a small object costs less than checking for it first (S3).
    cheap_overwrite: bool = False

    #: True where the other side records ref moves in the reflog itself (an mrepo server):
    #: :meth:`cas` then takes ``operation=`` and clients write no ``logs/`` entries.
    logs_ref_moves: bool = False

    #: True where the other side checks what it is sent (an mrepo server verifies uploads, record
    #: schemas, ref targets and ref namespaces itself), so a client need not read its uploads back to
    #: check them, nor list the refs around a new one.
    checks_writes: bool = False

    #: True where reading or checking a key costs a few system calls in this process (a local folder,
    #: memory), not a network round trip: small per-key work is then done in a plain loop
    #: (:func:`mrepo.store.parallel.per_key`), not handed to threads.
    in_process: ClassVar[bool] = False

    #: Where each presence check is a network round trip: the keys one listing request returns, so
    #: a transfer can learn with one request per prefix what a small store holds. 0 (local folder,
    #: memory): a presence check costs less than a listing.
    list_page: int = 0

    def touch(self, key: str) -> bool:
        """Refresh the modification time of an existing key ("freshen", as git does), so that
        ``gc`` treats it as young; False when the key does not exist. Backends that cannot
        freshen (a remote server freshens on its side) only report existence."""
        return self.exists(key)

    def put_immutable(self, key: str, data: bytes) -> bool:
        """Store a content-addressed object: write it when absent, freshen it when present.

        Returns True when it was written. Freshening closes the race with ``gc``: an object a
        writer is about to reference again is young, and so is everything it reaches.
        """
        if self.touch(key):
            return False
        self.put(key, data)
        return True

    def get_size(self, key: str) -> int:
        return len(self.get(key))

    def local_file(self, key: str) -> Path | None:
        """The local file holding ``key``, for readers that map large objects instead of reading
        them; None when the backend is not a local folder or the key is absent."""
        return None

    def move(self, src: str, dst: str) -> None:
        """Make the object at ``src`` appear at ``dst`` (overwriting) and remove ``src``;
        ObjectNotFound when ``src`` is absent. A copy and a delete by default (locally a rename)."""
        self.put(dst, self.get(src))
        self.delete(src)

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release resources (connections)."""


# ----------------------------------------------------------------------------- local


class LocalBackend(Backend):
    """A folder on a local or network file system."""

    in_process = True

    #: A lock file older than this, whose writer process is gone, is broken.
    STALE_LOCK_SECONDS = 30.0

    #: Folders (relative to the root) found to resolve inside it, kept up to this many.
    _SAFE_FOLDERS = 1 << 16

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.url = str(self.root)
        self._inside = str(self.root).rstrip(os.sep) + os.sep
        self._safe: set[str] = set()

    def _path(self, key: str) -> Path:
        """The file of ``key``; InvalidName unless ``key`` is a safe key (:func:`check_key`) whose
        resolved path (symbolic links followed) stays inside the root, whatever the caller.

        The root is resolved once; a folder below it is resolved once and remembered, so a key in a
        known folder costs one ``lstat`` (is the file itself a symbolic link?) instead of a walk
        through every component of the path."""
        rel = check_key(key)
        path = self.root / rel
        folder = rel.rpartition("/")[0]
        if folder in self._safe:
            if not os.path.islink(path):
                return path
        real = os.path.realpath(path)
        if not real.startswith(self._inside):
            raise InvalidName(f"key {key!r} resolves to {real}, outside the repository root {self.root}")
        if not folder or os.path.realpath(os.path.dirname(path)).startswith(self._inside):
            if len(self._safe) >= self._SAFE_FOLDERS:
                self._safe.clear()
            self._safe.add(folder)
        return path

    def local_file(self, key: str) -> Path | None:
        path = self._path(key)
        return path if path.is_file() else None

    def _folder(self, prefix: str) -> Path:
        """The folder of a listing prefix (``""`` is the root; ``a/b/`` is ``a/b``)."""
        return self.root if prefix in ("", "/") else self._path(prefix.removesuffix("/"))

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFound(f"{key} not found in {self.url}") from None

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            tmp.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()

    def put_file(self, key: str, path: str | Path) -> None:
        import shutil

        dest = self._path(key)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.tmp")
        try:
            tmp.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, tmp)
            os.replace(tmp, dest)
        finally:
            if tmp.exists():
                tmp.unlink()

    def move(self, src: str, dst: str) -> None:
        source, dest = self._path(src), self._path(dst)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(source, dest)
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(f"{src} not found in {self.url}") from None
        except OSError as exc:
            if exc.errno != errno.EXDEV:  # another file system below the root: copy and delete
                raise
            super().move(src, dst)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def touch(self, key: str) -> bool:
        try:
            os.utime(self._path(key))
            return True
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return False

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            pass

    def get_size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            raise ObjectNotFound(f"{key} not found in {self.url}") from None

    def list(self, prefix: str) -> Iterator[Entry]:
        base = self._folder(prefix)
        if not base.is_dir():
            return
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                if name.startswith("."):
                    continue  # temporary files and locks
                full = os.path.join(dirpath, name)
                try:
                    st = os.stat(full)
                except FileNotFoundError:
                    continue
                yield Entry(os.path.relpath(full, self.root).replace(os.sep, "/"), st.st_size, st.st_mtime)

    def read_versioned(self, key: str) -> tuple[bytes | None, Token]:
        try:
            data = self._path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None, None
        return data, data.decode("utf-8", "replace")

    # -- locking
    def _lock_path(self, key: str) -> Path:
        path = self._path(key)
        return path.with_name(f".{path.name}.lock")

    def _acquire(self, lock: Path, timeout: float = 10.0) -> None:
        lock.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._break_if_stale(lock)
                if time.monotonic() > deadline:
                    raise RefConflict(
                        f"ref lock {lock} is held by another writer; remove it if no mrepo process is running"
                    ) from None
                time.sleep(0.002)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{socket.gethostname()} {os.getpid()}\n")
            return

    def _break_if_stale(self, lock: Path) -> None:
        try:
            owner = lock.read_text().split()
            age = time.time() - lock.stat().st_mtime
        except (FileNotFoundError, ValueError):
            return
        if len(owner) == 2 and owner[0] == socket.gethostname():
            try:
                os.kill(int(owner[1]), 0)
                return  # owner alive
            except ProcessLookupError:
                pass  # owner died: break the lock
            except (PermissionError, ValueError):
                return
        elif age < self.STALE_LOCK_SECONDS:
            return
        try:
            lock.unlink()
        except FileNotFoundError:
            pass

    def cas(self, key: str, expected: Token, data: bytes | None) -> Token:
        lock = self._lock_path(key)
        self._acquire(lock)
        try:
            return _swap_under_lock(self, key, expected, data)
        finally:
            try:
                lock.unlink()
            except FileNotFoundError:
                pass


def _swap_under_lock(backend: Backend, key: str, expected: Token, data: bytes | None) -> Token:
    """The compare-and-swap step once the caller holds the key's exclusive lock; the token of
    a locally stored ref is its content."""
    _, current = backend.read_versioned(key)
    if current != expected:
        raise RefConflict(f"{key} changed concurrently (expected {_short(expected)}, found {_short(current)})")
    if data is None:
        backend.delete(key)
        return None
    backend.put(key, data)
    return data.decode("utf-8", "replace")


def _short(token: Token) -> str:
    if token is None:
        return "nothing"
    return repr(token.strip()[:16])


# ----------------------------------------------------------------------------- memory


class FsspecBackend(Backend):
    """Shared key/value access through an fsspec file system rooted at ``self._root``."""

    fs: Any
    _root: str

    def _p(self, key: str) -> str:
        return f"{self._root}/{check_key(key)}"

    def _mtime(self, info: dict[str, Any]) -> float:
        """Modification time (epoch seconds) from an fsspec ``find(detail=True)`` entry."""
        raise NotImplementedError

    def get(self, key: str) -> bytes:
        try:
            return self.fs.cat_file(self._p(key))
        except FileNotFoundError:
            raise ObjectNotFound(f"{key} not found in {self.url}") from None

    def put(self, key: str, data: bytes) -> None:
        self.fs.pipe_file(self._p(key), bytes(data))

    def delete(self, key: str) -> None:
        try:
            self.fs.rm_file(self._p(key))
        except FileNotFoundError:
            pass

    def list(self, prefix: str) -> Iterator[Entry]:
        base = self._root if prefix in ("", "/") else self._p(prefix.removesuffix("/"))
        try:
            found = self.fs.find(base, detail=True)
        except FileNotFoundError:
            return
        for path, info in found.items():
            if info.get("type") == "directory":
                continue
            yield Entry(path[len(self._root) + 1:], int(info.get("size") or 0), self._mtime(info))


class MemoryBackend(FsspecBackend):
    """fsspec's in-process memory file system (``memory://name``); for tests and scratch work."""

    in_process = True

    _locks: ClassVar[dict[str, threading.Lock]] = {}
    _global = threading.Lock()

    def __init__(self, url: str):
        import fsspec

        self.url = url.rstrip("/")
        self.fs = fsspec.filesystem("memory")
        self._root = "/" + self.url[len("memory://"):].strip("/")
        with self._global:
            self._lock = self._locks.setdefault(self.url, threading.Lock())

    def _mtime(self, info: dict[str, Any]) -> float:
        created = info.get("created")
        return created.timestamp() if hasattr(created, "timestamp") else float(created or 0.0)

    def exists(self, key: str) -> bool:
        return self.fs.isfile(self._p(key))

    def touch(self, key: str) -> bool:
        try:
            self.fs.pipe_file(self._p(key), self.fs.cat_file(self._p(key)))  # resets "created"
            return True
        except FileNotFoundError:
            return False

    def read_versioned(self, key: str) -> tuple[bytes | None, Token]:
        try:
            data = self.fs.cat_file(self._p(key))
        except FileNotFoundError:
            return None, None
        return data, data.decode("utf-8", "replace")

    def cas(self, key: str, expected: Token, data: bytes | None) -> Token:
        with self._lock:
            return _swap_under_lock(self, key, expected, data)


# ----------------------------------------------------------------------------- s3


def s3_options_from_env(options: dict[str, Any] | None = None) -> dict[str, Any]:
    """s3fs options: explicit ``options`` first, then environment variables."""
    opts: dict[str, Any] = dict(options or {})
    endpoint = opts.pop("endpoint_url", None) or os.environ.get("MREPO_S3_ENDPOINT") or os.environ.get(
        "AWS_ENDPOINT_URL"
    )
    client_kwargs = dict(opts.pop("client_kwargs", {}) or {})
    if endpoint:
        client_kwargs.setdefault("endpoint_url", endpoint)
    region = opts.pop("region", None) or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        client_kwargs.setdefault("region_name", region)
    if "key" not in opts and os.environ.get("AWS_ACCESS_KEY_ID"):
        opts["key"] = os.environ["AWS_ACCESS_KEY_ID"]
    if "secret" not in opts and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        opts["secret"] = os.environ["AWS_SECRET_ACCESS_KEY"]
    opts["client_kwargs"] = client_kwargs
    opts.setdefault("use_listings_cache", False)
    # Every object mrepo reads is checked against its content hash (records, blobs, array chunks
    # and the array's hash); botocore's CRC32 of each GET response would be a second, weaker pass
    # over the same bytes, on s3fs's one event-loop thread. Uploads keep their checksum.
    config = dict(opts.pop("config_kwargs", {}) or {})
    config.setdefault("response_checksum_validation", "when_required")
    opts["config_kwargs"] = config
    return opts


#: Key prefixes of content-addressed files (records, blobs, array chunks and ``zarr.json``): their
#: names are hashes of their content, checked by every reader.
CONTENT_ADDRESSED = ("objects/", "arrays/")


def _unsigned_payload(opts: dict[str, Any]) -> dict[str, Any]:
    """``opts`` with botocore's S3 option ``payload_signing_enabled`` off (unless set explicitly)."""
    out = dict(opts)
    config = dict(out.get("config_kwargs") or {})
    s3 = dict(config.get("s3") or {})
    s3.setdefault("payload_signing_enabled", False)
    config["s3"] = s3
    out["config_kwargs"] = config
    return out


class S3Backend(FsspecBackend):
    """An S3 (or S3-protocol) bucket and prefix through s3fs, with conditional PUTs for refs."""

    def __init__(self, url: str, options: dict[str, Any] | None = None):
        require_extra("s3fs", "s3", "an s3:// repository")
        import s3fs

        self.url = url.rstrip("/")
        path = self.url[len("s3://"):]
        if not path:
            raise InvalidInput(f"S3 URL {url!r} names no bucket")
        self._root = path
        opts = s3_options_from_env(options)
        self.fs = s3fs.S3FileSystem(**opts)
        self._check_bucket(opts.get("client_kwargs", {}).get("endpoint_url") or "the default AWS endpoint")
        #: The client of content-addressed PUTs (:data:`CONTENT_ADDRESSED`): no SHA-256 of the body
        #: in the request signature (see :meth:`put`); the same endpoint and credentials, made from
        #: the same aiobotocore session (a session of its own would load botocore's S3 model again:
        #: 0.3 s before the first chunk could leave).
        self.objects_fs = s3fs.S3FileSystem(**_unsigned_payload({**opts, "session": self.fs.session
                                                                 or opts.get("session")}))

    def _check_bucket(self, endpoint: str) -> None:
        """One HEAD on the bucket, so an unreachable endpoint or a missing bucket is a one-line error
        (:class:`Unreachable`) instead of a traceback on the first read; a 403 (no ListBucket right) passes."""
        bucket = self._root.split("/", 1)[0]
        self._check_endpoint_listens(endpoint)
        try:
            self.fs.call_s3("head_bucket", Bucket=bucket)
        except FileNotFoundError:
            raise Unreachable(f"S3 bucket {bucket!r} does not exist at {endpoint}") from None
        except PermissionError:
            return
        except Exception as exc:  # botocore's connection and endpoint errors share no base class with OSError
            if type(exc).__name__ == "NoCredentialsError":  # botocore.exceptions: nothing was sent
                raise AccessDenied(f"no S3 credentials for {self.url}: set AWS_ACCESS_KEY_ID and "
                                   "AWS_SECRET_ACCESS_KEY (or an AWS profile)") from None
            raise Unreachable(f"cannot reach S3 endpoint {endpoint} for {self.url}: "
                              f"{type(exc).__name__}: {exc}") from None

    def _check_endpoint_listens(self, endpoint: str) -> None:
        """One TCP connect (5 s timeout) to an explicit endpoint: a refused or unresolvable endpoint fails
        at once instead of after botocore's retries with back-off (about 20 s)."""
        from urllib.parse import urlsplit

        parts = urlsplit(endpoint)
        if not parts.hostname:  # "the default AWS endpoint": nothing to probe
            return
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            socket.create_connection((parts.hostname, port), timeout=5).close()
        except OSError as exc:
            raise Unreachable(f"cannot reach S3 endpoint {endpoint} for {self.url}: {exc}") from None

    def _writer(self, key: str) -> Any:
        """The client that writes ``key``: :attr:`objects_fs` for a content-addressed key."""
        return self.objects_fs if key.startswith(CONTENT_ADDRESSED) else self.fs

    def put_file(self, key: str, path: str | Path) -> None:
        self._writer(key).put_file(str(path), self._p(key))

    #: Objects below this size go up in one PutObject (s3fs's ``pipe_file``: twice its 50 MiB part
    #: size); larger ones in a multipart upload, each part with botocore's own checksum.
    SINGLE_PUT_BYTES = 100 << 20

    def put(self, key: str, data: bytes) -> None:
        """One PUT, with the CRC32 that S3 checks the received body against computed here, in the
        calling thread, and sent with the request (``ChecksumCRC32``): botocore would otherwise
        compute it on s3fs's one event-loop thread, which then delays every other transfer.

        A content-addressed key (an object or an array file, :data:`CONTENT_ADDRESSED`) goes up
        with an unsigned payload (``X-Amz-Content-SHA256: UNSIGNED-PAYLOAD``), as botocore sends
        every PutObject over https: over plain http botocore would otherwise hash each body with
        SHA-256 for the signature, on s3fs's one event-loop thread (about 0.8 s of CPU per GiB
        here, as much as verifying the arrays). The signature still covers the key and the CRC32
        that S3 checks the body against; the bytes themselves are named by their BLAKE3 hash,
        which every reader checks. Refs and reflog entries keep a signed payload. Over plain http
        the CRC32 guards a body against damage, not against someone on the network path who
        rewrites it (readers would refuse such an object; a later push's check of present arrays
        through S3's stored CRC32, :mod:`mrepo.store.stored_checksums`, might not): use https
        where the path is not trusted."""
        data = bytes(data)
        fs = self._writer(key)
        if len(data) >= self.SINGLE_PUT_BYTES:
            fs.pipe_file(self._p(key), data)
            return
        crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode("ascii")
        fs.pipe_file(self._p(key), data, ChecksumAlgorithm="CRC32", ChecksumCRC32=crc)

    #: Objects larger than this are read by s3fs in parallel ranged requests; smaller ones in one GET.
    PARALLEL_GET_BYTES = 64 << 20

    def get(self, key: str) -> bytes:
        """One GET per object (s3fs's ``cat_file`` sends a HEAD for the size first: two requests
        per chunk file); an object over :attr:`PARALLEL_GET_BYTES` is handed back to s3fs, which
        reads it in parallel ranges."""
        from fsspec.asyn import sync

        bucket, obj_key, _ = self.fs.split_path(self._p(key))

        async def fetch() -> bytes | None:
            resp = await self.fs._call_s3("get_object", Bucket=bucket, Key=obj_key)
            async with resp["Body"] as body:
                if int(resp.get("ContentLength") or 0) > self.PARALLEL_GET_BYTES:
                    return None
                return await body.read()

        try:
            data = sync(self.fs.loop, fetch)
        except FileNotFoundError:
            raise ObjectNotFound(f"{key} not found in {self.url}") from None
        return super().get(key) if data is None else data

    def _mtime(self, info: dict[str, Any]) -> float:
        modified = info.get("LastModified")
        return modified.timestamp() if hasattr(modified, "timestamp") else 0.0

    #: Keys one listing request returns (S3's page size): a caller that wants to know whether a
    #: prefix holds at most this many keys pays one request (:attr:`Backend.list_page`).
    list_page = 1000

    def list(self, prefix: str) -> Iterator[Entry]:
        """Every key below ``prefix``, page by page (one ``ListObjectsV2`` request per
        :attr:`list_page` keys, each sent when the previous page is used up; s3fs's ``find``
        lists everything first and adds a HEAD and a second listing when nothing is found)."""
        base = self._root if prefix in ("", "/") else self._p(prefix.removesuffix("/"))
        bucket, key, _ = self.fs.split_path(base)
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": f"{key}/" if key else "", "MaxKeys": self.list_page}
        while True:
            try:
                page = self.fs.call_s3("list_objects_v2", **kwargs)
            except FileNotFoundError:  # no such bucket: nothing below the prefix
                return
            for obj in page.get("Contents", []):
                name = f"{bucket}/{obj['Key']}"
                if obj["Key"].endswith("/"):  # a folder placeholder written by another tool
                    continue
                yield Entry(name[len(self._root) + 1:], int(obj.get("Size") or 0), self._mtime(obj))
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return
            kwargs["ContinuationToken"] = token

    def _head(self, key: str) -> dict[str, Any] | None:
        """HEAD one object (a single request; ``fs.info`` would add a listing on a miss)."""
        bucket, obj_key, _ = self.fs.split_path(self._p(key))
        try:
            return self.fs.call_s3("head_object", Bucket=bucket, Key=obj_key)
        except FileNotFoundError:
            return None

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def touch(self, key: str) -> bool:
        bucket, obj_key, _ = self.fs.split_path(self._p(key))
        try:
            self.fs.call_s3("copy_object", Bucket=bucket, Key=obj_key, MetadataDirective="REPLACE",
                            CopySource={"Bucket": bucket, "Key": obj_key})
            return True
        except FileNotFoundError:
            return False

    cheap_overwrite = True

    def put_immutable(self, key: str, data: bytes) -> bool:
        # One PUT both creates and freshens: cheaper than HEAD + PUT for a new object.
        self.put(key, data)
        return True

    def get_size(self, key: str) -> int:
        head = self._head(key)
        if head is None:
            raise ObjectNotFound(f"{key} not found in {self.url}")
        return int(head["ContentLength"])

    def read_versioned(self, key: str) -> tuple[bytes | None, Token]:
        from botocore.exceptions import ClientError

        bucket, obj_key, _ = self.fs.split_path(self._p(key))
        try:
            resp = self.fs.call_s3("get_object", Bucket=bucket, Key=obj_key)
        except FileNotFoundError:
            return None, None
        except ClientError as exc:  # pragma: no cover - s3fs normally translates
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None, None
            raise
        body = resp["Body"]
        data = _read_body(self.fs, body)
        return data, resp["ETag"]

    def cas(self, key: str, expected: Token, data: bytes | None) -> Token:
        bucket, obj_key, _ = self.fs.split_path(self._p(key))
        try:
            if data is None:
                if expected is None:
                    raise RefConflict(f"{key} does not exist")
                # S3 has no conditional delete everywhere: swap to a tombstone first, then delete.
                self.fs.call_s3("put_object", Bucket=bucket, Key=obj_key, Body=b"", IfMatch=expected)
                self.fs.call_s3("delete_object", Bucket=bucket, Key=obj_key)
                return None
            if expected is None:
                resp = self.fs.call_s3("put_object", Bucket=bucket, Key=obj_key, Body=data, IfNoneMatch="*")
            else:
                resp = self.fs.call_s3("put_object", Bucket=bucket, Key=obj_key, Body=data, IfMatch=expected)
        except RefConflict:
            raise
        except Exception as exc:  # botocore ClientError or s3fs-translated OSError
            if _is_precondition_failure(exc):
                raise RefConflict(f"{key} changed concurrently (conditional PUT refused)") from None
            raise
        self.fs.invalidate_cache(self._p(key))
        return resp["ETag"]


def _read_body(fs: Any, body: Any) -> bytes:
    """Read an aiobotocore streaming body from s3fs's event loop."""
    from fsspec.asyn import sync

    async def _read() -> bytes:
        async with body:
            return await body.read()

    return sync(fs.loop, _read)


def _is_precondition_failure(exc: BaseException) -> bool:
    text = str(exc)
    codes = ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")
    if any(c in text for c in codes):
        return True
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = str(response.get("Error", {}).get("Code", ""))
        return code in codes
    if isinstance(exc, FileExistsError) or getattr(exc, "errno", None) == errno.EEXIST:
        return True
    cause = exc.__cause__ or exc.__context__
    return cause is not None and cause is not exc and _is_precondition_failure(cause)


# ----------------------------------------------------------------------------- factory


BackendFactory = Callable[[str, "dict[str, Any] | None"], Backend]
#: URL scheme -> factory. The built-in schemes are below; other backends (the HTTP client of
#: ``mrepo serve``, third-party stores) register themselves with :func:`register_backend` or are
#: found through the ``mrepo.backends`` entry-point group, so this module names none of them.
_FACTORIES: dict[str, BackendFactory] = {
    "file": lambda url, options: LocalBackend(url[len("file://"):]),
    "s3": lambda url, options: S3Backend(url, options),
    "memory": lambda url, options: MemoryBackend(url),
}


def register_backend(scheme: str, factory: BackendFactory) -> None:
    """Open URLs ``<scheme>://...`` with ``factory(url, options)``."""
    _FACTORIES[scheme.lower()] = factory


def _plugin(scheme: str) -> BackendFactory | None:
    """A factory from the ``mrepo.backends`` entry points (name = scheme), if one is installed."""
    from importlib.metadata import entry_points

    for ep in entry_points(group="mrepo.backends"):
        if ep.name.lower() == scheme:
            factory = ep.load()
            register_backend(scheme, factory)
            return factory
    return None


def open_backend(url: str, options: dict[str, Any] | None = None) -> Backend:
    """A backend for ``url``: a local path or ``file://``, ``s3://``, ``memory://``, or any
    registered scheme (``http(s)://`` is registered by :mod:`mrepo.store`)."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidInput("empty repository URL")
    if "://" not in url:
        return LocalBackend(url)
    scheme = url.split("://", 1)[0].lower()
    factory = _FACTORIES.get(scheme) or _plugin(scheme)
    if factory is None:
        known = ", ".join(f"{s}://" for s in sorted(_FACTORIES))
        raise InvalidInput(f"unknown URL scheme {scheme!r} in {url!r} (use a path or one of {known})")
    return factory(url, options)
