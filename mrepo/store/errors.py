"""Exceptions of mrepo. Every message is one line that names what was wrong.

Each class carries the exit code of the ``mrepo`` command (the table: :mod:`mrepo.cli.exit_codes`).
"""

from __future__ import annotations


class MrepoError(Exception):
    """Base of all mrepo errors; the CLI prints ``error: <message>`` and exits non-zero."""

    exit_code = 1


class InvalidInput(MrepoError, ValueError):
    """Bad input from a user: a name, a URL, a value, a file."""

    exit_code = 2


class InvalidName(InvalidInput):
    """A ref, branch, tag or remote name that is not allowed."""


class RepositoryNotFound(MrepoError):
    """No mrepo repository at the given URL."""

    exit_code = 7


class ObjectNotFound(MrepoError, KeyError):
    """A record, blob or array that is not in the store."""

    exit_code = 7

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "object not found"


class CorruptObject(MrepoError):
    """A stored object whose content does not match its hash."""

    exit_code = 8


class RefNotFound(MrepoError, KeyError):
    """A branch, tag or revision that does not exist."""

    exit_code = 7

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "ref not found"


class RefConflict(MrepoError):
    """A compare-and-swap on a ref lost the race: the ref changed under the writer."""

    exit_code = 3


class RefNamespaceClash(RefConflict):
    """A new ref would clash with an existing one: a ref cannot also be a folder of refs."""


class MergeConflict(MrepoError):
    """A merge that could not be resolved by the chosen policy."""

    exit_code = 4


class AccessDenied(MrepoError):
    """A server or store refused the request: no token or credentials, a bad token, or a role too low
    (HTTP 401/403)."""

    exit_code = 5


class Unreachable(MrepoError):
    """A remote (HTTP server, S3 endpoint or bucket) that cannot be reached or does not exist."""

    exit_code = 6


class MissingExtra(MrepoError):
    """An optional dependency group (``pip install mrepo[<extra>]``) is not installed."""

    exit_code = 10


def require_extra(module: str, extra: str, purpose: str) -> None:
    """Import ``module``; raise :class:`MissingExtra` naming ``pip install mrepo[extra]`` when it cannot be."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError:
        raise MissingExtra(f"{purpose} needs the optional package {module!r}: pip install 'mrepo[{extra}]' "
                           "(or 'mrepo[all]')") from None


class InvalidRecord(CorruptObject, InvalidInput):
    """A record whose bytes match its hash but that is malformed: not canonical JSON, an unknown
    kind, or a body that breaks its kind's schema (:mod:`mrepo.graph.schema`). Caught as
    CorruptObject by transfers and ``verify``, as InvalidInput by the server (HTTP 400)."""

    exit_code = 8
