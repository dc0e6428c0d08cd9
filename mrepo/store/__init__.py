"""mrepo.store: hashing, immutable objects by hash, refs with compare-and-swap, backends.

Imports nothing else of mrepo.
"""

from .backends import Backend, Entry, LocalBackend, MemoryBackend, S3Backend, open_backend, register_backend
from .errors import (
    AccessDenied,
    CorruptObject,
    InvalidInput,
    InvalidName,
    MergeConflict,
    MissingExtra,
    MrepoError,
    ObjectNotFound,
    RefConflict,
    RefNamespaceClash,
    RefNotFound,
    RepositoryNotFound,
    Unreachable,
    require_extra,
)
from .hashing import (
    canonical_json,
    check_hash,
    hash_array,
    hash_blob,
    hash_bytes,
    hash_file,
    hash_file_cached,
    hash_record,
    is_hash,
)
from .objects import ObjectStore, array_ref, blob_ref, deref, record_ref, references
from .refs import RefStore, branch_key, check_name, remote_key, tag_key
from .repo_store import Storage


def _http_backend(url: str, options: dict | None) -> Backend:
    """``http(s)://``: a repository served by ``mrepo serve`` (imported on first use)."""
    from .http_backend import HttpBackend

    return HttpBackend(url, options)


register_backend("http", _http_backend)
register_backend("https", _http_backend)

__all__ = [
    "AccessDenied", "Backend", "CorruptObject", "Entry", "InvalidInput", "InvalidName", "LocalBackend", "MemoryBackend",
    "MergeConflict", "MrepoError", "ObjectNotFound", "ObjectStore", "RefConflict", "RefNamespaceClash", "RefNotFound", "RefStore",
    "RepositoryNotFound", "S3Backend", "Storage", "array_ref", "blob_ref", "branch_key", "canonical_json",
    "check_hash", "check_name", "deref", "hash_array", "hash_blob", "hash_bytes", "hash_file", "hash_file_cached",
    "hash_record",
    "is_hash", "open_backend", "register_backend", "record_ref", "references", "remote_key", "tag_key",
    "MissingExtra", "Unreachable", "require_extra",
]
