"""Refs: the only mutable state of a repository, changed by compare-and-swap.

Keys: ``refs/heads/<branch>``, ``refs/tags/<tag>``, ``refs/remotes/<remote>/<branch>``,
``refs/pulls/<n>``; each file holds one hash and a newline. ``HEAD`` names the
default branch (``ref: refs/heads/main``).

Name rules: :func:`mrepo.store.names.check_ref_name` (a subset of git's
``check-ref-format``). Namespaces do not overlap: ``heads/main`` and
``heads/main/x`` cannot both exist (:func:`check_ref_namespace`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from . import reflog
from .backends import Backend, Token
from .errors import InvalidInput, RefConflict, RefNamespaceClash, RefNotFound
from .hashing import check_hash, is_hash
from .names import MAX_NAME_LENGTH, check_ref_key, check_ref_name  # noqa: F401 - re-exported

HEAD_KEY = "HEAD"

#: The name rules live in :mod:`mrepo.store.names` (one place for client, backends and server).
check_name = check_ref_name

#: ``RefStore.update(token=...)`` left out: the ref is read first.
_UNREAD = object()


def check_ref_namespace(backend: Backend, key: str) -> None:
    """Refuse to create ``key`` when it would clash with an existing ref (RefNamespaceClash): a ref
    cannot also be a folder of refs, so ``refs/heads/main`` and ``refs/heads/main/x`` (or
    ``dev`` and ``dev/sub``) never both exist. Checked before a ref is created; two writers
    creating clashing names at the same instant can still both succeed on S3 (no transaction
    spans two keys), which readers then see as two refs."""
    parts = key.split("/")
    first = 4 if len(parts) > 3 and parts[1] == "remotes" else 3  # refs/remotes/<remote>/<name...>
    for i in range(first, len(parts)):
        above = "/".join(parts[:i])
        if backend.exists(above):
            raise RefNamespaceClash(f"cannot create {key}: {above} exists (a ref cannot also be a folder of refs)")
    for entry in backend.list(key + "/"):
        raise RefNamespaceClash(f"cannot create {key}: {entry.key} exists below it (a ref cannot also be a folder of refs)")


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
        #: Called as ``check_target(key, new)`` before a ref is set; raises when ``new`` may not be
        #: the target of ``key`` (the Repository checks the record kind: branches and tags -> commits).
        self.check_target: Callable[[str, str], None] | None = None

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
               who: str | None = None, token: Token | object = _UNREAD) -> None:
        """Set ref ``key`` to ``new`` (delete when None) if it still holds ``expected``.

        Raises RefConflict when the ref holds anything else (None: must not exist). After the
        swap, the move is recorded in the reflog (:mod:`mrepo.store.reflog`) with ``operation``
        and ``who`` (default ``$MREPO_AUTHOR`` or user@host); a backend whose server records
        moves itself (``logs_ref_moves``) gets ``operation`` with the swap instead.

        ``token``: the token :meth:`read` returned with ``expected``, when the caller read the ref
        itself; the swap is then made against that read (one request less on S3), and refused as
        well if the ref moved since.
        """
        check_ref_key(key)
        if new is not None:
            check_hash(new, "ref target")
        if token is _UNREAD:
            current, tok = self.read(key)
        else:
            current, tok = expected, token  # type: ignore[assignment]
        if current != expected:
            raise RefConflict(
                f"{key} is at {_abbrev(current)}, expected {_abbrev(expected)}: another writer changed it; "
                "fetch and retry"
            )
        if new is not None and self.check_target is not None:
            self.check_target(key, new)
        if current is None and new is not None and not self.backend.checks_writes:
            check_ref_namespace(self.backend, key)  # a server checks it itself (409), one request less
        data = None if new is None else (new + "\n").encode()
        try:
            if self.backend.logs_ref_moves:
                self.backend.cas(key, tok, data, operation=operation)  # type: ignore[call-arg]
            else:
                self.backend.cas(key, tok, data)
        except RefNamespaceClash:
            raise  # the server's own namespace check (checks_writes): its message names the clash
        except RefConflict:
            raise RefConflict(
                f"{key} changed while updating from {_abbrev(expected)} to {_abbrev(new)}: another writer won; "
                "fetch and retry"
            ) from None
        if not self.backend.logs_ref_moves:
            reflog.append(self.backend, key, expected, new, operation=operation, who=who)

    def list(self, prefix: str = "refs/") -> Iterator[tuple[str, str]]:
        """(key, hash) of every ref below ``prefix``, sorted by key: from one listing with values where
        the backend offers it (an mrepo server: ``list_refs``), else a listing and a read per ref."""
        listed = self.backend.list_refs(prefix)
        if listed is not None:
            yield from sorted(dict(listed).items())
            return
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
