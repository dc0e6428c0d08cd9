"""Refs: the only mutable state of a repository, changed by compare-and-swap.

Keys: ``refs/heads/<branch>``, ``refs/tags/<tag>``, ``refs/remotes/<remote>/<branch>``,
``refs/pulls/<n>``; each file holds one hash and a newline. ``HEAD`` names the
default branch (``ref: refs/heads/main``).

Name rules (a subset of git's ``check-ref-format``): non-empty components of
ASCII letters, digits and ``._-+@``, none starting with ``.`` or ending with
``.lock``, no ``..``, at most 200 characters in all.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from . import reflog
from .backends import Backend, Token
from .errors import InvalidInput, InvalidName, RefConflict, RefNotFound
from .hashing import check_hash, is_hash

_COMPONENT = re.compile(r"^[A-Za-z0-9_+@-][A-Za-z0-9._+@-]*$")
MAX_NAME_LENGTH = 200
HEAD_KEY = "HEAD"


def check_name(name: object, what: str = "name") -> str:
    """Validate a branch/tag/remote name (may contain ``/``); raises InvalidName."""
    if not isinstance(name, str) or not name:
        raise InvalidName(f"invalid {what} {name!r}: empty")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidName(f"invalid {what} {name[:40]!r}...: longer than {MAX_NAME_LENGTH} characters")
    for part in name.split("/"):
        if not part or part in (".", "..") or ".." in part or part.endswith(".lock") or not _COMPONENT.match(part):
            raise InvalidName(
                f"invalid {what} {name!r}: use letters, digits and ._-+@ in /-separated parts, "
                "no '..', no leading '.'"
            )
    return name


def branch_key(name: str) -> str:
    return f"refs/heads/{check_name(name, 'branch name')}"


def tag_key(name: str) -> str:
    return f"refs/tags/{check_name(name, 'tag name')}"


def remote_key(remote: str, branch: str) -> str:
    return f"refs/remotes/{check_name(remote, 'remote name')}/{check_name(branch, 'branch name')}"


class RefStore:
    """Read, list and compare-and-swap refs on a backend."""

    def __init__(self, backend: Backend):
        self.backend = backend

    def read(self, key: str) -> tuple[str | None, Token]:
        """(hash, token) of ref ``key``; (None, None) when absent."""
        data, token = self.backend.read_versioned(key)
        if data is None or not data.strip():
            return None, token
        value = data.decode("ascii", "replace").strip()
        if not is_hash(value):
            raise InvalidInput(f"ref {key} holds {value[:70]!r}, not a hash")
        return value, token

    def get(self, key: str) -> str | None:
        return self.read(key)[0]

    def require(self, key: str) -> str:
        value = self.get(key)
        if value is None:
            raise RefNotFound(f"{key} does not exist")
        return value

    def update(self, key: str, new: str | None, expected: str | None, *, operation: str = "update",
               who: str | None = None) -> None:
        """Set ref ``key`` to ``new`` (delete when None) if it still holds ``expected``.

        Raises RefConflict when the ref holds anything else (None: must not exist). After the
        swap, the move is recorded in the reflog (:mod:`mrepo.store.reflog`) with ``operation``
        and ``who`` (default ``$MREPO_AUTHOR`` or user@host); a backend whose server records
        moves itself (``logs_ref_moves``) gets ``operation`` with the swap instead.
        """
        if new is not None:
            check_hash(new, "ref target")
        current, tok = self.read(key)
        if current != expected:
            raise RefConflict(
                f"{key} is at {_abbrev(current)}, expected {_abbrev(expected)}: another writer changed it; "
                "fetch and retry"
            )
        data = None if new is None else (new + "\n").encode()
        try:
            if self.backend.logs_ref_moves:
                self.backend.cas(key, tok, data, operation=operation)  # type: ignore[call-arg]
            else:
                self.backend.cas(key, tok, data)
        except RefConflict:
            raise RefConflict(
                f"{key} changed while updating from {_abbrev(expected)} to {_abbrev(new)}: another writer won; "
                "fetch and retry"
            ) from None
        if not self.backend.logs_ref_moves:
            reflog.append(self.backend, key, expected, new, operation=operation, who=who)

    def list(self, prefix: str = "refs/") -> Iterator[tuple[str, str]]:
        """(key, hash) of every ref below ``prefix``, sorted by key."""
        for entry in sorted(self.backend.list(prefix), key=lambda e: e.key):
            value = self.get(entry.key)
            if value is not None:
                yield entry.key, value

    # ------------------------------------------------------------------ HEAD / default branch
    def default_branch(self) -> str:
        data, _ = self.backend.read_versioned(HEAD_KEY)
        if not data:
            return "main"
        text = data.decode("utf-8", "replace").strip()
        return text.removeprefix("ref: refs/heads/")

    def set_default_branch(self, name: str) -> None:
        check_name(name, "branch name")
        _, token = self.backend.read_versioned(HEAD_KEY)
        self.backend.cas(HEAD_KEY, token, f"ref: refs/heads/{name}\n".encode())


def _abbrev(h: str | None) -> str:
    return "nothing" if h is None else h[:12]
