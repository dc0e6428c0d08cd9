"""Bearer tokens for ``mrepo serve``: stored hashed in a TOML file, with roles and optional expiry.

File layout (``tokens.toml``)::

    [tokens.alice]
    role = "write"                 # read < write < maintain
    hash = "blake3:<64 hex>"       # BLAKE3 of the secret; the secret itself is never stored
    created = "2025-01-01T00:00:00Z"
    expires = "2025-07-01T00:00:00Z"   # optional: refused from that instant on

Secrets look like ``mrepo_<43 url-safe characters>`` (256 random bits).

A running server re-reads the file when its modification time or size changes (checked at
most every :data:`RELOAD_CHECK_SECONDS`), so ``mrepo token remove`` and role changes take effect
at once. An unreadable file revokes every token (fail closed) until it is fixed. The server
records each token's last use in ``<tokens file>.last-used.json`` (written at most every
:data:`LAST_USED_FLUSH_SECONDS`), which ``mrepo token list`` shows; every request's token name is
also in the access log.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
import secrets
import threading
import time
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import blake3

from ..store import InvalidInput

ROLES: dict[str, int] = {"read": 1, "write": 2, "maintain": 3}
_TOKEN_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$")
_HASH = re.compile(r"^blake3:[0-9a-f]{64}$")
_TIME = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$")
RELOAD_CHECK_SECONDS = 0.5
LAST_USED_FLUSH_SECONDS = 30.0
log = logging.getLogger("mrepo.api")


def hash_secret(secret: str) -> str:
    """Stored form of a secret: ``blake3:<hex digest>``."""
    return "blake3:" + blake3.blake3(b"mrepo-token\0" + secret.encode("utf-8")).hexdigest()


def utc_stamp(when: datetime | None = None) -> str:
    return (when or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_expiry(text: str, now: datetime | None = None) -> str:
    """``expires`` value from ``30d`` / ``12h`` / ``90m`` (from now) or a UTC time ``YYYY-MM-DDTHH:MM:SSZ``
    (a bare date ``YYYY-MM-DD`` means its midnight UTC)."""
    now = now or datetime.now(UTC)
    m = re.fullmatch(r"([0-9]{1,5})([dhm])", text.strip())
    if m:
        unit = {"d": "days", "h": "hours", "m": "minutes"}[m.group(2)]
        return utc_stamp(now + timedelta(**{unit: int(m.group(1))}))
    if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text.strip()):
        text = text.strip() + "T00:00:00Z"
    if not _TIME.match(text.strip()):
        raise InvalidInput(f"invalid expiry {text!r}: use e.g. 30d, 12h, 90m, 2025-12-31 or 2025-12-31T23:59:59Z")
    return text.strip()


@dataclass(frozen=True)
class Principal:
    """Who made a request: a token name (or ``anonymous``) and its role."""

    name: str
    role: str

    def allows(self, role: str) -> bool:
        return ROLES[self.role] >= ROLES[role]


@dataclass(frozen=True)
class TokenEntry:
    """One token of the file (its secret only as a hash)."""

    name: str
    role: str
    hash: str
    created: str | None = None
    expires: str | None = None

    def expired(self, now: str | None = None) -> bool:
        return self.expires is not None and (now or utc_stamp()) >= self.expires


def check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidInput(f"unknown role {role!r}: use read, write or maintain")
    return role


class TokenStore:
    """Token name -> entry, loaded from a TOML file."""

    def __init__(self, entries: dict[str, TokenEntry] | dict[str, tuple[str, str]] | None = None):
        self._entries: dict[str, TokenEntry] = {}
        for name, value in (entries or {}).items():
            self._entries[name] = value if isinstance(value, TokenEntry) else TokenEntry(name, value[0], value[1])
        self._by_hash = {e.hash: e for e in self._entries.values()}

    @classmethod
    def load(cls, path: str | Path | None) -> TokenStore:
        """Read ``path`` (an absent or None path gives an empty store)."""
        if path is None or not Path(path).exists():
            return cls()
        try:
            doc = tomllib.loads(Path(path).read_text("utf-8"))
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"cannot read token file {path}: {exc}") from None
        entries: dict[str, TokenEntry] = {}
        for name, spec in (doc.get("tokens") or {}).items():
            if not _TOKEN_NAME.match(name) or not isinstance(spec, dict):
                raise InvalidInput(f"token file {path}: bad entry {name!r}")
            role, h = spec.get("role"), spec.get("hash")
            if role not in ROLES or not isinstance(h, str) or not _HASH.match(h):
                raise InvalidInput(f"token file {path}: entry {name!r} needs role read|write|maintain and a "
                                   "blake3:<hex> hash")
            expires, created = spec.get("expires"), spec.get("created")
            if expires is not None and (not isinstance(expires, str) or not _TIME.match(expires)):
                raise InvalidInput(f"token file {path}: entry {name!r} has expires {expires!r}; "
                                   "use YYYY-MM-DDTHH:MM:SSZ")
            entries[name] = TokenEntry(name, role, h, created if isinstance(created, str) and _TIME.match(created)
                                       else None, expires)
        return cls(entries)

    def entries(self) -> list[TokenEntry]:
        return [self._entries[n] for n in sorted(self._entries)]

    def names(self) -> dict[str, str]:
        """Token name -> role."""
        return {n: e.role for n, e in self._entries.items()}

    def authenticate(self, secret: str) -> Principal | None:
        """The principal a secret belongs to, or None (unknown or expired; constant time per entry)."""
        h = hash_secret(secret)
        found: TokenEntry | None = None
        for stored, entry in self._by_hash.items():
            if hmac.compare_digest(stored, h):
                found = entry
        if found is None or found.expired():
            return None
        return Principal(found.name, found.role)


class LiveTokens:
    """The token file of a running server, re-read when it changes (by mtime and size)."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path is not None else None
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self._lock = threading.Lock()
        self.store = TokenStore.load(self.path)
        self._stamp = self._file_stamp()
        self._last_used: dict[str, str] = {}
        self._flushed = time.monotonic()

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path) if self.path is not None else None
        except FileNotFoundError:
            return None
        return None if st is None else (st.st_mtime_ns, st.st_size)

    def current(self) -> TokenStore:
        """The store, reloaded first when the file changed since the last check."""
        if self.path is None:
            return self.store
        now = time.monotonic()
        if now - self._checked < RELOAD_CHECK_SECONDS:
            return self.store
        with self._lock:
            self._checked = now
            stamp = self._file_stamp()
            if stamp != self._stamp:
                self._stamp = stamp
                try:
                    self.store = TokenStore.load(self.path)
                except InvalidInput as exc:
                    log.error("%s; every token is refused until the file is fixed", exc)
                    self.store = TokenStore()
        return self.store

    def authenticate(self, secret: str) -> Principal | None:
        who = self.current().authenticate(secret)
        if who is not None:
            self.note_use(who.name)
        return who

    def note_use(self, name: str) -> None:
        """Remember the last use of token ``name``; flushed to the sidecar file now and then."""
        with self._lock:
            self._last_used[name] = utc_stamp()
            due = time.monotonic() - self._flushed >= LAST_USED_FLUSH_SECONDS
        if due:
            self.flush()

    def flush(self) -> None:
        """Write the last-use times (merged with the file's) to ``<tokens>.last-used.json``."""
        if self.path is None:
            return
        with self._lock:
            self._flushed = time.monotonic()
            fresh = dict(self._last_used)
        if not fresh:
            return
        target = last_used_path(self.path)
        merged = {**read_last_used(self.path), **fresh}
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            tmp.write_text(json.dumps(merged, sort_keys=True, indent=1) + "\n", "utf-8")
            tmp.replace(target)
        except OSError as exc:
            log.warning("cannot record token use in %s: %s", target, exc)


def last_used_path(path: str | Path) -> Path:
    p = Path(path)
    return p.with_name(p.name + ".last-used.json")


def read_last_used(path: str | Path) -> dict[str, str]:
    """Token name -> last use (UTC) recorded by servers using the token file at ``path``."""
    try:
        doc = json.loads(last_used_path(path).read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in doc.items() if isinstance(k, str) and isinstance(v, str) and _TIME.match(v)} \
        if isinstance(doc, dict) else {}


def _write(path: Path, entries: list[TokenEntry]) -> None:
    """Rewrite the token file atomically with mode 0600."""
    lines = ["# mrepo serve tokens: secrets are stored as BLAKE3 hashes only", ""]
    for e in sorted(entries, key=lambda e: e.name):
        lines += [f"[tokens.{e.name}]", f'role = "{e.role}"', f'hash = "{e.hash}"']
        if e.created:
            lines.append(f'created = "{e.created}"')
        if e.expires:
            lines.append(f'expires = "{e.expires}"')
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    tmp.write_text("\n".join(lines), "utf-8")
    tmp.chmod(0o600)
    tmp.replace(path)


def add_token(path: str | Path, name: str, role: str, *, expires: str | None = None) -> str:
    """Create token ``name`` with ``role`` (and optional ``expires``, see :func:`parse_expiry`) in the
    TOML file at ``path``; returns the new secret. Refuses an existing name."""
    if not _TOKEN_NAME.match(name):
        raise InvalidInput(f"invalid token name {name!r}: letters, digits, _ and - (at most 64)")
    check_role(role)
    path = Path(path)
    store = TokenStore.load(path)
    if name in store.names():
        raise InvalidInput(f"token {name!r} already exists in {path}")
    secret = "mrepo_" + secrets.token_urlsafe(32)
    entry = TokenEntry(name, role, hash_secret(secret), utc_stamp(),
                       None if expires is None else parse_expiry(expires))
    _write(path, [*store.entries(), entry])
    return secret


def remove_token(path: str | Path, name: str) -> TokenEntry:
    """Delete token ``name`` from the file (a running server refuses it at once); returns its entry."""
    path = Path(path)
    store = TokenStore.load(path)
    found = {e.name: e for e in store.entries()}
    if name not in found:
        raise InvalidInput(f"no token {name!r} in {path} (known: {', '.join(sorted(found)) or 'none'})")
    _write(path, [e for e in store.entries() if e.name != name])
    return found[name]


def set_role(path: str | Path, name: str, role: str) -> TokenEntry:
    """Change the role of token ``name`` (takes effect on a running server at once)."""
    check_role(role)
    path = Path(path)
    entries = {e.name: e for e in TokenStore.load(path).entries()}
    if name not in entries:
        raise InvalidInput(f"no token {name!r} in {path}")
    new = TokenEntry(name, role, entries[name].hash, entries[name].created, entries[name].expires)
    entries[name] = new
    _write(path, list(entries.values()))
    return new
