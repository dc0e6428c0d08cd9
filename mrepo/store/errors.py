"""Exceptions of mrepo. Every message is one line that names what was wrong."""

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


class ObjectNotFound(MrepoError, KeyError):
    """A record, blob or array that is not in the store."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "object not found"


class CorruptObject(MrepoError):
    """A stored object whose content does not match its hash."""


class RefNotFound(MrepoError, KeyError):
    """A branch, tag or revision that does not exist."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "ref not found"


class RefConflict(MrepoError):
    """A compare-and-swap on a ref lost the race: the ref changed under the writer."""

    exit_code = 3


class MergeConflict(MrepoError):
    """A merge that could not be resolved by the chosen policy."""

    exit_code = 4
