"""What an object store itself says about the bytes it holds, so that a present object can be
compared with known-good bytes without downloading it.

S3 keeps, for each object, its size, its ETag and, where the upload carried one, a checksum that
S3 recomputed over the received body and checked before storing (the upload is refused
otherwise): :meth:`mrepo.store.backends.S3Backend.put` sends a CRC32 with every single-part PUT,
and botocore sends one by default. A HEAD with ``ChecksumMode=ENABLED`` returns it. The ETag of
a single-part upload is the MD5 of the stored bytes, except under KMS or customer-key
encryption (then it is opaque), and a multipart ETag (``<md5 of md5s>-<parts>``) is not an MD5
of the content. So a CRC32 that differs proves the stored bytes differ; an ETag that differs
proves nothing.

Trusted: the store's own checksum over the bytes it stored, in the user's own bucket (the
destination of a push, or of a fetch into an S3 repository). This is used only to decide that an
object *present at the destination* need not be sent again (:func:`mrepo.store.soundness.array_sound`);
objects *received* from another store are always verified in full against their names.
"""

from __future__ import annotations

import base64
import hashlib
import re
import zlib
from dataclasses import dataclass

from .backends import Backend, S3Backend

__all__ = ["StoredChecksum", "offers_checksums", "stored_checksum"]

_MD5_HEX = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class StoredChecksum:
    """Size in bytes of a stored object, the full-object CRC32 the store checked on upload (None
    when none is kept, or only a per-part one), and its ETag without quotes (None when absent)."""

    size: int
    crc32: int | None
    etag: str | None

    def matches(self, data: bytes) -> bool | None:
        """True when the stored bytes are ``data`` (same size and the same CRC32, or an ETag equal
        to the MD5 of ``data``); False when they are not (size or CRC32 differ); None when the
        store keeps no checksum that can tell (then the object must be read to be checked)."""
        if self.size != len(data):
            return False
        if self.crc32 is not None:
            return self.crc32 == zlib.crc32(data)
        if self.etag is not None and _MD5_HEX.match(self.etag) and hashlib.md5(data).hexdigest() == self.etag:
            return True
        return None


def offers_checksums(backend: Backend) -> bool:
    """True where :func:`stored_checksum` asks the store for its checksum (S3: one HEAD, no body)."""
    return isinstance(backend, S3Backend)


def stored_checksum(backend: Backend, key: str) -> StoredChecksum | None:
    """What ``backend`` keeps about ``key`` (one HEAD on S3); None when ``key`` is absent or the
    backend keeps no checksum of its own (local folder, memory, an mrepo server)."""
    if not isinstance(backend, S3Backend):
        return None
    bucket, obj_key, _ = backend.fs.split_path(backend._p(key))
    try:
        head = backend.fs.call_s3("head_object", Bucket=bucket, Key=obj_key, ChecksumMode="ENABLED")
    except FileNotFoundError:
        return None
    return StoredChecksum(int(head.get("ContentLength") or 0), _full_crc32(head),
                         str(head.get("ETag") or "").strip('"').lower() or None)


def _full_crc32(head: dict) -> int | None:
    """The full-object CRC32 of a HEAD answer (base64 of 4 big-endian bytes); None when absent or
    composite (a multipart upload's checksum of part checksums, ``<b64>-<parts>``)."""
    value = head.get("ChecksumCRC32")
    if not value or "-" in value or head.get("ChecksumType", "FULL_OBJECT") != "FULL_OBJECT":
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except ValueError:
        return None
    return int.from_bytes(raw, "big") if len(raw) == 4 else None
