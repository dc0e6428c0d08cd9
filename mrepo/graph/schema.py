"""Record schemas: what a well-formed record of each kind holds.

Records are checked by kind when they arrive from another store (clone, fetch, pull,
push), when the server accepts an upload, and by ``verify``. The check is structural:
known kinds only; required fields present with the right JSON types; optional fields,
when present, of the right type; every reference object (``{"@record"|"@array"|"@blob":
hash}``) anywhere in the body well-formed. Fields a schema does not name are allowed, so
a newer mrepo may add fields without breaking an older reader's checks (a new *kind*
needs a schema here, or :func:`register_schema`).

Refs point only at records of their kind (:func:`ref_target_kind`): branches, tags and
remote-tracking branches at commits; pull-request refs at pull-request records.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..store import InvalidInput, ObjectStore, is_hash
from ..store.errors import InvalidRecord
from ..store.integrity import check_object_bytes, parse_canonical_record
from ..store.objects import REF_KEYS

Check = Callable[[Any, str], None]  # (value, field path) -> None, raises InvalidRecord


def _fail(path: str, expected: str, value: Any) -> None:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:56] + "...'"
    raise InvalidRecord(f"field {path or '<body>'}: expected {expected}, got {shown}")


def _type(expected: str, test: Callable[[Any], bool]) -> Check:
    def check(value: Any, path: str) -> None:
        if not test(value):
            _fail(path, expected, value)
    return check


STR = _type("a string", lambda v: isinstance(v, str))
INT = _type("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool))
NUM = _type("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool))
DICT = _type("an object", lambda v: isinstance(v, dict))
LIST = _type("a list", lambda v: isinstance(v, list))
HASH = _type("a 64-hex hash", is_hash)


def _ref(kind: str) -> Check:
    key = f"@{kind}"
    return _type(f"a {kind} reference {{{key!r}: hash}}",
                 lambda v: isinstance(v, dict) and len(v) == 1 and is_hash(v.get(key)))


REC, ARR, BLOB = _ref("record"), _ref("array"), _ref("blob")


def opt(check: Check) -> Check:
    """``None`` or what ``check`` accepts."""
    def run(value: Any, path: str) -> None:
        if value is not None:
            check(value, path)
    return run


def one_of(*values: Any) -> Check:
    return _type("one of " + ", ".join(map(repr, values)), lambda v: v in values)


def positive(check: Check) -> Check:
    def run(value: Any, path: str) -> None:
        check(value, path)
        if value <= 0:
            _fail(path, "a positive number", value)
    return run


def list_of(item: Check) -> Check:
    def run(value: Any, path: str) -> None:
        LIST(value, path)
        for i, v in enumerate(value):
            item(v, f"{path}[{i}]")
    return run


def map_of(item: Check, key: Check = STR) -> Check:
    def run(value: Any, path: str) -> None:
        DICT(value, path)
        for k, v in value.items():
            key(k, f"{path} key")
            item(v, f"{path}.{k}")
    return run


def fields(required: dict[str, Check], optional: dict[str, Check] | None = None) -> Check:
    """An object with ``required`` fields and, when present, ``optional`` ones (others allowed)."""
    optional = optional or {}

    def run(value: Any, path: str) -> None:
        DICT(value, path)
        for name, check in required.items():
            where = f"{path}.{name}" if path else name
            if name not in value:
                raise InvalidRecord(f"field {where}: required but missing")
            check(value[name], where)
        for name, check in optional.items():
            if name in value:
                check(value[name], f"{path}.{name}" if path else name)
    return run


@dataclass(frozen=True)
class Schema:
    kind: str
    check: Check


_SCHEMAS: dict[str, Schema] = {}


def register_schema(kind: str, check: Check) -> None:
    """Make records of ``kind`` acceptable, checked by ``check(body, "")``."""
    _SCHEMAS[kind] = Schema(kind, check)


def known_kinds() -> list[str]:
    return sorted(_SCHEMAS)


register_schema("commit", fields(
    {"parents": list_of(REC), "population": REC, "author": STR, "time": STR, "message": STR,
     "operation": fields({"name": STR}), "mrepo_version": STR}))
register_schema("population", fields(
    {"name": STR, "sources": map_of(REC), "species": map_of(REC)}, {"metadata": DICT}))
register_schema("source", fields(
    {"name": STR, "items": map_of(REC, HASH)}, {"metadata": DICT, "polarity": one_of("light", "dark")}))
_RAW = fields({"hash": HASH, "size": INT}, {"format": STR, "uri": opt(STR), "blob": BLOB, "parts": list_of(BLOB)})
register_schema("item", fields(
    {"kind": one_of("frames", "tilts"), "name": STR, "raw": _RAW},
    {"imaging": DICT, "models": map_of(ARR), "refined_with": list_of(REC), "metadata": DICT, "tilt_movies": _RAW}))
register_schema("particles", fields(
    {"count": INT, "temporal_samples": INT, "items": list_of(HASH),
     "columns": fields({c: ARR for c in ("id", "item_index", "coordinates", "angles", "half")})}))
register_schema("species", fields(
    {"name": STR, "diameter": positive(NUM), "symmetry": STR, "pixel_size": positive(NUM), "box": INT,
     "half1": ARR, "half2": ARR, "mask": ARR, "particles": REC},
    {"temporal_samples": INT, "resolution": opt(NUM), "denoiser": opt(BLOB), "fsc": opt(ARR),
     "contributors": list_of(REC), "metadata": DICT}))
register_schema("pull-request", fields(
    {"number": positive(INT), "title": STR, "author": STR, "into": STR,
     "state": one_of("open", "merged", "closed"),
     "from": fields({"name": STR, "commit": REC}, {"ref": opt(STR)})},
    {"check": opt(REC), "merge_commit": opt(REC), "previous": opt(REC), "created": STR, "updated": STR,
     "description": STR}))
register_schema("collision-report", fields(
    {}, {"pr": INT, "commits": fields({}, {"target": REC, "head": REC, "base": opt(REC)}), "conflicts": LIST,
         "collisions": LIST, "duplicates": LIST, "reclassifications": LIST, "id_clashes": LIST, "shared": LIST}))
register_schema("merge-report", fields({"policy": STR, "conflicts": LIST}))
register_schema("item-particles", fields(
    {"species": STR, "item": HASH, "ids": ARR, "coordinates": ARR, "angles": ARR}))
register_schema("item-result", fields(
    {}, {"inputs": DICT, "item": REC, "particles": map_of(REC), "nc_spectra": opt(ARR), "sums": DICT,
         "stats": DICT}))


def _check_references(body: Any) -> None:
    """Every ``{"@record"|"@array"|"@blob": ...}`` in the body holds a valid hash."""
    stack: list[tuple[Any, str]] = [(body, "")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, dict):
            if len(value) == 1:
                (key, h), = value.items()
                if key in REF_KEYS:
                    if not is_hash(h):
                        _fail(path, f"a {REF_KEYS[key]} reference holding a 64-hex hash", value)
                    continue
            stack.extend((v, f"{path}.{k}" if path else k) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(value))


def validate_record(kind: str, body: Any, h: str = "") -> None:
    """Raise InvalidRecord (one line, naming the record and field) unless ``body`` is a
    well-formed record of ``kind``."""
    schema = _SCHEMAS.get(kind)
    where = f"{kind} record {h}" if h else f"{kind} record"
    if schema is None:
        raise InvalidRecord(f"record {h or ''}: unknown record kind {kind[:40]!r} "
                            f"(known: {', '.join(known_kinds())})".replace("record :", "record:"))
    try:
        schema.check(body, "")
        _check_references(body)
    except InvalidRecord as exc:
        raise InvalidRecord(f"{where}: {exc}") from None


def check_record_bytes(h: str, data: bytes) -> tuple[str, Any]:
    """(kind, body) of the stored bytes of record ``h`` after every check: the bytes hash to
    ``h``, are canonical and match their kind's schema. CorruptObject / InvalidRecord."""
    if check_object_bytes(h, data) != "record":
        raise InvalidRecord(f"object {h} is a blob, not a record")
    kind, body = parse_canonical_record(data, h)
    validate_record(kind, body, h)
    return kind, body


# ----------------------------------------------------------------------------- ref targets


def ref_target_kind(ref_key: str) -> str:
    """The record kind ref ``ref_key`` may point at: ``pull-request`` for ``refs/pulls/<n>``
    and ``refs/remotes/<remote>/pulls/<n>``, ``commit`` for everything else."""
    parts = ref_key.split("/")
    if parts[:2] == ["refs", "pulls"]:
        return "pull-request"
    if parts[:2] == ["refs", "remotes"] and len(parts) == 5 and parts[3] == "pulls" and parts[4].isdigit():
        return "pull-request"
    return "commit"


def check_ref_target(objects: ObjectStore, ref_key: str, h: str) -> None:
    """Raise InvalidInput unless ``h`` is a stored record of the kind ``ref_key`` may name
    (ObjectNotFound when it is not stored: objects come before refs)."""
    expected = ref_target_kind(ref_key)
    kind, _ = objects.get_record_with_kind(h)
    if kind != expected:
        raise InvalidInput(f"{ref_key} may point only at a {expected} record; {h[:12]} is a {kind} record")
