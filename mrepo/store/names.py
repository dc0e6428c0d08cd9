"""Name rules for keys and refs, in one place: every backend, the client receiving a
remote's listings and the server accepting uploads call these functions.

- **Keys** (:func:`check_key`): relative, ``/``-separated, non-empty components of
  ``[A-Za-z0-9._+@=-]``, none equal to ``.``/``..`` or starting with ``.`` (temporary
  and lock files start with a dot), at most :data:`MAX_KEY_LENGTH` characters. A key
  that passes can never name a path outside a backend's root.
- **Object keys** (:func:`check_object_key`): ``objects/ab/<62 hex>`` (records and
  blobs) and ``arrays/<64 hex>/<file>`` where the file is ``zarr.json`` or a Zarr v3
  default chunk key ``c/i/j/...`` (decimal indices without leading zeros).
- **Ref names** (:func:`check_ref_name`, a subset of git's ``check-ref-format``):
  non-empty components of ASCII letters, digits and ``._-+@``, none starting with
  ``.`` or ending with ``.lock``, no ``..``, not ``HEAD``, at most
  :data:`MAX_NAME_LENGTH` characters in all.
- **Ref keys** (:func:`check_ref_key`): ``refs/heads/<name>``, ``refs/tags/<name>``,
  ``refs/pulls/<n>`` (n >= 1, no leading zero) and ``refs/remotes/<remote>/<name>``.
"""

from __future__ import annotations

import re

from .errors import InvalidName

MAX_KEY_LENGTH = 1024
MAX_NAME_LENGTH = 200
#: Ref namespaces a repository exchanges with a remote (``remotes/`` is local bookkeeping).
SHARED_NAMESPACES = ("heads", "tags", "pulls")

_KEY_PART = re.compile(r"^[A-Za-z0-9_+@=-][A-Za-z0-9._+@=-]*$")
_REF_PART = re.compile(r"^[A-Za-z0-9_+@-][A-Za-z0-9._+@-]*$")
_OBJECT_KEY = re.compile(r"^objects/[0-9a-f]{2}/[0-9a-f]{62}$")
_ARRAY_KEY = re.compile(r"^arrays/[0-9a-f]{64}/(.*)$")
_ARRAY_FILE = re.compile(r"^(zarr\.json|c(/(0|[1-9][0-9]{0,8})){0,32})$")
_PULL_NUMBER = re.compile(r"^[1-9][0-9]{0,17}$")


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 90 else text[:80] + "...'"


def check_key(key: object) -> str:
    """Return ``key`` if it is a safe backend key (see module docstring), else raise InvalidName."""
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidName(f"invalid key {_show(key)}: empty, not a string or longer than {MAX_KEY_LENGTH}")
    for part in key.split("/"):
        if not _KEY_PART.match(part):
            raise InvalidName(f"invalid key {_show(key)}: component {_show(part)} is empty, '.', '..', starts "
                              "with '.' or has characters other than letters, digits and ._+@=-")
    return key


def check_array_file(path: object) -> str:
    """``zarr.json`` or a chunk key ``c/i/j/...`` inside an array folder; raises InvalidName."""
    if not isinstance(path, str) or not _ARRAY_FILE.match(path):
        raise InvalidName(f"invalid array file {_show(path)}: expected zarr.json or a chunk key c/i/j/...")
    return path


def check_object_key(key: object) -> str:
    """``objects/ab/<62 hex>`` or ``arrays/<64 hex>/<zarr.json | c/...>``; raises InvalidName."""
    if isinstance(key, str):
        if _OBJECT_KEY.match(key):
            return key
        m = _ARRAY_KEY.match(key)
        if m:
            check_array_file(m.group(1))
            return key
    raise InvalidName(f"invalid object key {_show(key)}: expected objects/ab/<62 hex> or "
                      "arrays/<64 hex>/(zarr.json | c/i/j/...)")


def check_ref_name(name: object, what: str = "name") -> str:
    """Validate a branch/tag/remote name (may contain ``/``); raises InvalidName."""
    if not isinstance(name, str) or not name:
        raise InvalidName(f"invalid {what} {name!r}: empty")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidName(f"invalid {what} {name[:40]!r}...: longer than {MAX_NAME_LENGTH} characters")
    if name == "HEAD":
        raise InvalidName(f"invalid {what} 'HEAD': HEAD names the default branch")
    for part in name.split("/"):
        if not part or ".." in part or part.endswith(".lock") or not _REF_PART.match(part):
            raise InvalidName(
                f"invalid {what} {_show(name)}: use letters, digits and ._-+@ in /-separated parts, "
                "no '..', no leading '.'"
            )
    return name


def check_ref_key(key: object, *, namespaces: tuple[str, ...] = ("heads", "tags", "pulls", "remotes")) -> str:
    """A full ref key ``refs/<namespace>/<name>`` in one of ``namespaces``; raises InvalidName.

    ``refs/pulls/<n>`` needs a positive decimal number; ``refs/remotes/<remote>/<name>`` a
    remote name and a name below it.
    """
    if not isinstance(key, str) or not key.startswith("refs/"):
        raise InvalidName(f"invalid ref {_show(key)}: refs start with refs/")
    namespace, _, name = key[len("refs/"):].partition("/")
    if namespace not in namespaces:
        raise InvalidName(f"invalid ref {_show(key)}: namespace {namespace!r} is not one of "
                          f"{', '.join(n + '/' for n in namespaces)}")
    if namespace == "pulls":
        if not _PULL_NUMBER.match(name):
            raise InvalidName(f"invalid ref {_show(key)}: pull requests are refs/pulls/<n> with n >= 1")
        return key
    check_ref_name(name, "ref name")
    if namespace == "remotes" and "/" not in name:
        raise InvalidName(f"invalid ref {_show(key)}: expected refs/remotes/<remote>/<name>")
    return key


def check_shared_ref_key(key: object) -> str:
    """A ref key a repository may receive from (or send to) a remote: heads, tags, pulls."""
    return check_ref_key(key, namespaces=SHARED_NAMESPACES)
