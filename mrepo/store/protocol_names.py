"""Names of the HTTP remote protocol, defined once for the client and the server.

The client (:mod:`mrepo.store.http_backend`) and the server (:mod:`mrepo.api`) both import
these; the store is the bottom layer, so both may. Paths are relative to the served
repository's URL (``http://host:port/repo``); :data:`MOUNT` is where the server mounts it.
"""

from __future__ import annotations

#: Where the server mounts the repository (the client's URL ends with it).
MOUNT = "/repo"

# ----------------------------------------------------------------------------- paths (relative to MOUNT)
FORMAT_PATH = "mrepo.json"
HEAD_PATH = "HEAD"
OBJECTS_PATH = "objects"  # objects/<hash>
ARRAYS_PATH = "arrays"  # arrays/<hash>/<zarr file>
REFS_PATH = "refs"  # refs/<namespace>/<name>
LOGS_PATH = "logs"  # logs/refs/<namespace>/<name>/<entry>: reflog entries (read-only)
NAMED_PATH = "named"  # named/<rev>/species/<name>/<map>/<zarr file>: maps by name (read-only)
LIST_PATH = "list"
PULLS_PATH = "pulls"  # pulls, pulls/<n>, pulls/<n>/check|merge|close
BATCH_HAVE_PATH = "batch/have"
BATCH_UPLOAD_PATH = "batch/upload"
BATCH_DOWNLOAD_PATH = "batch/download"
BATCH_SIZES_PATH = "batch/sizes"
BATCH_CLOSURE_PATH = "batch/closure"

# ----------------------------------------------------------------------------- headers
#: Upload session id: the server stages one client's array chunks under it.
UPLOAD_HEADER = "X-Mrepo-Upload"
#: Operation name recorded in the server's reflog for a ref swap.
OPERATION_HEADER = "X-Mrepo-Operation"
#: Media type of a batch stream (see :mod:`mrepo.store.pack`).
PACK_MEDIA_TYPE = "application/x-mrepo-pack"

# ----------------------------------------------------------------------------- JSON fields
#: Request of ``batch/have`` and ``batch/download``: object hashes (records, blobs) and array hashes.
F_OBJECTS = "objects"
F_ARRAYS = "arrays"
#: Answer of ``batch/have``: what the server lacks.
F_MISSING_OBJECTS = "missing_objects"
F_MISSING_ARRAYS = "missing_arrays"
#: Answer of ``batch/sizes``: array hash -> bytes its ``zarr.json`` declares (arrays the server holds).
F_SIZES = "sizes"
#: Answer of ``batch/upload``: frames stored, already present (skipped), bytes received.
F_STORED = "stored"
F_PRESENT = "present"
F_BYTES = "bytes"
#: Listings.
F_ENTRIES = "entries"
F_NEXT = "next"
#: Fields of the ref listing with values (``GET refs?prefix=``): a list of {name, hash}.
F_REFS = "refs"
F_REF_NAME = "name"
F_REF_HASH = "hash"
#: Error bodies: ``{"error": <code>, "detail": <message>}``.
F_ERROR = "error"
F_DETAIL = "detail"
#: Error code of a 409 answer to a new ref that clashes with an existing one (a ref is not a folder).
E_REF_NAMESPACE = "ref-namespace"
#: Pull-request endpoints.
F_PULL = "pull"
F_PULLS = "pulls"

#: Most hashes in one ``batch/have``, ``batch/download``, ``batch/sizes`` or ``batch/closure`` request.
MAX_BATCH_HASHES = 10000
#: Most records a ``batch/closure`` answer holds (the first levels of the closure, breadth first): a
#: pull that lacks more asks for the rest level by level, and one that lacks fewer receives at most
#: this many records it did not need.
CLOSURE_RECORDS = 512
