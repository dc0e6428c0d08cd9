"""Bearer tokens for ``mrepo serve``: stored hashed in a TOML file, with roles.

File layout (``tokens.toml``)::

    [tokens.alice]
    role = "write"                 # read < write < maintain
    hash = "blake3:<64 hex>"       # BLAKE3 of the secret; the secret itself is never stored
    created = "2025-01-01T00:00:00Z"

Secrets look like ``mrepo_<43 url-safe characters>`` (256 random bits).
"""

from __future__ import annotations

import hmac
import re
import secrets
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import blake3

from ..store import InvalidInput

ROLES: dict[str, int] = {"read": 1, "write": 2, "maintain": 3}
_TOKEN_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$")
_HASH = re.compile(r"^blake3:[0-9a-f]{64}$")


def hash_secret(secret: str) -> str:
    """Stored form of a secret: ``blake3:<hex digest>``."""
    return "blake3:" + blake3.blake3(b"mrepo-token\0" + secret.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who made a request: a token name (or ``anonymous``) and its role."""

    name: str
    role: str

    def allows(self, role: str) -> bool:
        return ROLES[self.role] >= ROLES[role]


def check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidInput(f"unknown role {role!r}: use read, write or maintain")
    return role


class TokenStore:
    """Token name -> (role, secret hash), loaded from a TOML file."""

    def __init__(self, entries: dict[str, tuple[str, str]] | None = None):
        self._entries = dict(entries or {})
        self._by_hash = {h: (name, role) for name, (role, h) in self._entries.items()}

    @classmethod
    def load(cls, path: str | Path | None) -> TokenStore:
        """Read ``path`` (an absent or None path gives an empty store)."""
        if path is None or not Path(path).exists():
            return cls()
        try:
            doc = tomllib.loads(Path(path).read_text("utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise InvalidInput(f"cannot read token file {path}: {exc}") from None
        entries: dict[str, tuple[str, str]] = {}
        for name, spec in (doc.get("tokens") or {}).items():
            if not _TOKEN_NAME.match(name) or not isinstance(spec, dict):
                raise InvalidInput(f"token file {path}: bad entry {name!r}")
            role, h = spec.get("role"), spec.get("hash")
            if role not in ROLES or not isinstance(h, str) or not _HASH.match(h):
                raise InvalidInput(f"token file {path}: entry {name!r} needs role read|write|maintain and a "
                                   "blake3:<hex> hash")
            entries[name] = (role, h)
        return cls(entries)

    def names(self) -> dict[str, str]:
        """Token name -> role."""
        return {n: r for n, (r, _) in self._entries.items()}

    def authenticate(self, secret: str) -> Principal | None:
        """The principal a secret belongs to, or None (compared in constant time per entry)."""
        h = hash_secret(secret)
        found: Principal | None = None
        for stored, (name, role) in self._by_hash.items():
            if hmac.compare_digest(stored, h):
                found = Principal(name, role)
        return found


def add_token(path: str | Path, name: str, role: str) -> str:
    """Create token ``name`` with ``role`` in the TOML file at ``path``; returns the new secret.

    Refuses an existing name. The file is rewritten atomically with mode 0600.
    """
    if not _TOKEN_NAME.match(name):
        raise InvalidInput(f"invalid token name {name!r}: letters, digits, _ and - (at most 64)")
    check_role(role)
    path = Path(path)
    store = TokenStore.load(path)
    if name in store.names():
        raise InvalidInput(f"token {name!r} already exists in {path}")
    secret = "mrepo_" + secrets.token_urlsafe(32)
    entries = dict(store._entries)
    entries[name] = (role, hash_secret(secret))
    created = _created_times(path)
    created[name] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = ["# mrepo serve tokens: secrets are stored as BLAKE3 hashes only", ""]
    for n in sorted(entries):
        r, h = entries[n]
        lines += [f"[tokens.{n}]", f'role = "{r}"', f'hash = "{h}"']
        if n in created:
            lines.append(f'created = "{created[n]}"')
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    tmp.write_text("\n".join(lines), "utf-8")
    tmp.chmod(0o600)
    tmp.replace(path)
    return secret


def _created_times(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    doc = tomllib.loads(path.read_text("utf-8"))
    return {n: str(s["created"]) for n, s in (doc.get("tokens") or {}).items()
            if isinstance(s, dict) and isinstance(s.get("created"), str) and re.fullmatch(r"[0-9TZ:-]+", s["created"])}
