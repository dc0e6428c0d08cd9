"""What the server accepts as an object: the checks shared by single uploads and the batch stream.

A record or blob becomes visible on the server only when its bytes hash to its name, a
record is in canonical form and valid for its kind (:mod:`mrepo.graph.schema`), and every
object it references is already on the server (write order: objects, then the records
that name them, then refs). A present object is replaced when its stored copy is damaged
(an upload that verifies repairs it); an intact one is only freshened (gc age).
:mod:`mrepo.store.soundness` says whether a present copy counts as intact (records and blobs re-hashed up to
REHASH_PRESENT_BYTES, larger blobs by presence; arrays of any size by every chunk file against its recorded
digest), the same rule for single uploads (:mod:`mrepo.api.staging` for arrays) and for the batch negotiation
(:mod:`mrepo.api.batch`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..store import Backend, CorruptObject, InvalidInput, ObjectNotFound, ObjectStore, references
from ..store.hashing import RECORD_TAG, hash_bytes
from ..store.integrity import check_object_bytes, parse_canonical_record
from ..store.objects import object_key
from ..store.soundness import array_sound, object_sound

#: Present records and blobs up to this size are re-read and re-hashed before being skipped (repair of
#: damage); arrays are checked whatever their size (:func:`mrepo.store.soundness.array_sound`).
REHASH_PRESENT_BYTES = 1 << 20


def _schema_checker() -> Callable[[str, bytes], tuple[str, Any]]:
    """H1's ``check_record_bytes`` (integrity + canonical form + schema) when present."""
    try:
        from ..graph.schema import check_record_bytes
    except ImportError:
        def check_record_bytes(h: str, data: bytes) -> tuple[str, Any]:
            check_object_bytes(h, data)
            return parse_canonical_record(data, h)
    return check_record_bytes


check_record = _schema_checker()


def check_object(objects: ObjectStore, h: str, data: bytes, known: set[str] | None = None) -> str:
    """``"record"`` or ``"blob"`` when ``data`` may be stored as object ``h`` on this server.

    Raises CorruptObject (hash, tag), InvalidInput (schema, canonical form) or ObjectNotFound
    (a referenced object the server lacks; ``known``: hashes stored earlier in the same stream).
    """
    if not data.startswith(RECORD_TAG):
        return check_object_bytes(h, data)  # a blob (or CorruptObject: bad hash, unknown tag)
    _, body = check_record(h, data)  # hashes the bytes once, then canonical form and schema
    missing = []
    for ref_kind, child in references(body):
        if known is not None and child in known:
            continue
        present = objects.has_array(child) if ref_kind == "array" else objects.has_object(child)
        if not present:
            missing.append(f"{ref_kind} {child}")
    if missing:
        raise ObjectNotFound(f"record {h} refers to objects the server lacks (upload them first): "
                             f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
    return "record"


def store_object(backend: Backend, objects: ObjectStore, h: str, data: bytes,
                 known: set[str] | None = None) -> bool:
    """Check and store object ``h``; False when an intact copy was there already (freshened)."""
    if not isinstance(data, bytes) or len(data) == 0:
        raise InvalidInput(f"object {h}: empty upload")
    key = object_key(h)
    if backend.touch(key):
        try:
            if backend.get_size(key) == len(data) and (
                    len(data) > REHASH_PRESENT_BYTES or hash_bytes(backend.get(key)) == h):
                return False
        except ObjectNotFound:
            pass
    check_object(objects, h, data, known)
    backend.put(key, data)
    return True


__all__ = ["CorruptObject", "array_sound", "check_object", "check_record", "object_sound", "store_object"]
