"""One repository's storage: its backend, objects, refs and the ``mrepo.json`` format file."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .backends import Backend, open_backend
from .errors import InvalidInput, RepositoryNotFound
from .hashing import HASH_ALGORITHM
from .objects import ObjectStore
from .refs import RefStore

FORMAT_KEY = "mrepo.json"
FORMAT_VERSION = 1


@dataclass
class Storage:
    """Objects and refs of one repository root."""

    url: str
    backend: Backend
    objects: ObjectStore
    refs: RefStore

    @classmethod
    def create(cls, url: str, options: dict[str, Any] | None = None, *, exist_ok: bool = False) -> Storage:
        """Initialise an empty repository at ``url`` (refuses a non-empty one unless ``exist_ok``)."""
        backend = open_backend(url, options)
        data, _ = backend.read_versioned(FORMAT_KEY)
        if data is not None:
            if not exist_ok:
                raise InvalidInput(f"a repository already exists at {url}")
            return cls.open(url, options)
        doc = {"format": "mrepo", "version": FORMAT_VERSION, "hash": HASH_ALGORITHM}
        backend.cas(FORMAT_KEY, None, json.dumps(doc, sort_keys=True).encode() + b"\n")
        return cls(url, backend, ObjectStore(backend), RefStore(backend))

    @classmethod
    def open(cls, url: str, options: dict[str, Any] | None = None) -> Storage:
        """Open an existing repository; raises RepositoryNotFound."""
        backend = open_backend(url, options)
        try:
            data, _ = backend.read_versioned(FORMAT_KEY)
        except OSError as exc:
            raise RepositoryNotFound(f"cannot reach repository {url}: {exc}") from None
        if data is None:
            raise RepositoryNotFound(f"no mrepo repository at {url} (run 'mrepo init' there first)")
        try:
            doc = json.loads(data)
        except ValueError:
            raise RepositoryNotFound(f"{url}/{FORMAT_KEY} is not valid JSON") from None
        if doc.get("format") != "mrepo" or doc.get("hash") != HASH_ALGORITHM:
            raise RepositoryNotFound(f"{url}/{FORMAT_KEY} does not describe an mrepo repository")
        if int(doc.get("version", 0)) > FORMAT_VERSION:
            raise RepositoryNotFound(
                f"repository {url} has format version {doc['version']}; this mrepo reads up to {FORMAT_VERSION}"
            )
        return cls(url, backend, ObjectStore(backend), RefStore(backend))

    def close(self) -> None:
        self.objects.close()
