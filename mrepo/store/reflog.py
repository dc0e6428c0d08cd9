"""The reflog: every move of a ref, recorded after its compare-and-swap succeeded.

Layout: one small JSON file per move, never rewritten, under the ref's own folder::

    logs/<ref key>/=<UTC time, µs>-<8 hex>.json   e.g. logs/refs/heads/main/=20261129T081100.123456Z-1a2b3c4d.json

A file per entry (rather than an appended file) works the same on a local folder, S3 and
memory: each is written once, complete, by :meth:`Backend.put`. The ``=`` mark cannot
start a ref name component, so a branch ``a`` and a branch ``a/b`` never mix their
entries. Names sort chronologically.

Entry body (canonical JSON): ``ref`` (the ref key), ``old`` / ``new`` (hash or null:
null old = created, null new = deleted), ``who``, ``when`` (UTC ISO 8601 with
microseconds and ``Z``), ``operation`` (e.g. ``commit``, ``merge``, ``push``,
``branch -d``).

Entries are kept by ``gc`` (they are tiny); the commits they name stay roots of ``gc``
while the entry is younger than the grace period, so a deleted branch or a forced move
can be undone (``mrepo branch --restore``) within it.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from .backends import Backend
from .errors import InvalidInput, ObjectNotFound
from .hashing import canonical_json

LOGS_PREFIX = "logs/"
ENTRY_MARK = "="
MAX_OPERATION = 120


@dataclass(frozen=True)
class ReflogEntry:
    """One move of ``ref`` from ``old`` to ``new`` (None: absent) by ``who`` at ``when``."""

    ref: str
    old: str | None
    new: str | None
    who: str
    when: str
    operation: str
    key: str = ""

    def to_json(self) -> dict[str, str | None]:
        return {"ref": self.ref, "old": self.old, "new": self.new, "who": self.who, "when": self.when,
                "operation": self.operation}

    @property
    def timestamp(self) -> float:
        """``when`` as epoch seconds."""
        return datetime.strptime(self.when, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def default_who() -> str:
    """``$MREPO_AUTHOR``, else ``user@host``."""
    return os.environ.get("MREPO_AUTHOR") or f"{getpass.getuser()}@{socket.gethostname()}"


def log_prefix(ref_key: str) -> str:
    """Folder holding the entries of ``ref_key`` (``refs/...``)."""
    if not ref_key.startswith("refs/"):
        raise InvalidInput(f"reflog is kept for refs/... keys, not {ref_key!r}")
    return f"{LOGS_PREFIX}{ref_key}/"


def append(backend: Backend, ref_key: str, old: str | None, new: str | None, *, operation: str,
           who: str | None = None, now: datetime | None = None) -> ReflogEntry:
    """Write one entry (after the ref's swap succeeded); returns it."""
    moment = now or datetime.now(UTC)
    when = moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    entry = ReflogEntry(ref_key, old, new, who or default_who(), when, " ".join(operation.split())[:MAX_OPERATION])
    stamp = moment.strftime("%Y%m%dT%H%M%S.%fZ")
    key = f"{log_prefix(ref_key)}{ENTRY_MARK}{stamp}-{uuid.uuid4().hex[:8]}.json"
    backend.put(key, canonical_json(entry.to_json()))
    return ReflogEntry(**{**entry.to_json(), "key": key})  # type: ignore[arg-type]


def _parse(backend: Backend, key: str) -> ReflogEntry | None:
    try:
        doc = json.loads(backend.get(key))
        return ReflogEntry(ref=str(doc["ref"]), old=doc.get("old"), new=doc.get("new"), who=str(doc.get("who", "")),
                           when=str(doc["when"]), operation=str(doc.get("operation", "")), key=key)
    except (ObjectNotFound, ValueError, KeyError, TypeError):
        return None  # an unreadable entry is skipped, never fatal


def read(backend: Backend, ref_key: str) -> list[ReflogEntry]:
    """Entries of one ref, newest first."""
    prefix = log_prefix(ref_key)
    keys = [e.key for e in backend.list(prefix)
            if "/" not in e.key[len(prefix):] and e.key[len(prefix):].startswith(ENTRY_MARK)]
    entries = [_parse(backend, k) for k in sorted(keys, reverse=True)]
    return [e for e in entries if e is not None]


def read_all(backend: Backend, *, since: float | None = None) -> list[ReflogEntry]:
    """Entries of every ref, newest first; with ``since`` (epoch seconds) only those written after it
    (selected by the time in their names, so older entries are not even read)."""
    keys = [e.key for e in backend.list(LOGS_PREFIX) if e.key.rsplit("/", 1)[-1].startswith(ENTRY_MARK)]
    if since is not None:
        keys = [k for k in keys if _name_time(k) > since]
    entries = [e for e in (_parse(backend, k) for k in keys) if e is not None]
    return sorted(entries, key=lambda e: (e.when, e.key), reverse=True)


def _name_time(key: str) -> float:
    """Epoch seconds in an entry's file name (``=<YYYYmmddTHHMMSS.ffffffZ>-…``); +inf when unreadable,
    so an odd name is read rather than skipped."""
    stamp = key.rsplit("/", 1)[-1][len(ENTRY_MARK):].split("-", 1)[0]
    try:
        return datetime.strptime(stamp, "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return float("inf")
