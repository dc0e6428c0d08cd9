"""A piece of a request body that is a whole local file, for the kernel to send.

A batch upload from a local folder sends array chunk files as they are stored. Read into memory
first, each byte was copied twice by the client (page cache to ``bytes``, ``bytes`` to the socket)
and the pages of the ``bytes`` faulted in; as a :class:`FileBody` it goes from the page cache to the
socket by ``sendfile(2)`` (:mod:`mrepo.store.http_wire`), which on loopback copies nothing on the
sending side. Where the kernel cannot send it (a TLS connection, a small piece), it is read.

The receiver verifies what arrives, as for any upload: a file changed on disk under the sender is
refused there; one that shrank while being sent is an error here (the connection is dropped, never
left with a chunk shorter than its framing declares).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import InvalidInput

if TYPE_CHECKING:
    from .backends import Backend

__all__ = ["FILE_BODY_BYTES", "FileBody", "stored_body"]

#: Stored files from this size on are sent as :class:`FileBody` (smaller ones are read: a
#: ``sendfile`` call and its framing cost more than copying a few KiB).
FILE_BODY_BYTES = 64 << 10


@dataclass(frozen=True)
class FileBody:
    """The whole of the file at ``path``, ``size`` bytes long (its size when it was listed)."""

    path: Path
    size: int

    @classmethod
    def of(cls, path: Path) -> FileBody:
        """The file at ``path`` with its current size."""
        return cls(path, os.stat(path).st_size)

    def __len__(self) -> int:
        return self.size

    def _short(self, got: int) -> InvalidInput:
        held = f"more than {self.size} bytes" if got > self.size else f"{got} bytes, {self.size} expected"
        return InvalidInput(f"{self.path}: {held} (the file changed while it was sent)")

    def read(self) -> bytes:
        """The file's bytes; InvalidInput when it no longer holds ``size`` bytes."""
        with open(self.path, "rb") as f:
            data = f.read(self.size + 1)
        if len(data) != self.size:
            raise self._short(len(data))
        return data

    def send(self, sock: socket.socket) -> None:
        """Write the file to ``sock`` (blocking, or with the socket's timeout) by ``sendfile(2)``;
        InvalidInput when fewer than ``size`` bytes could be read from it."""
        with open(self.path, "rb") as f:
            sent = sock.sendfile(f, 0, self.size) if self.size else 0
        if sent != self.size:
            raise self._short(sent)


def stored_body(backend: Backend, key: str, min_size: int = FILE_BODY_BYTES) -> bytes | FileBody:
    """The file at ``key`` as a :class:`FileBody` where ``backend`` keeps it in a local file of at
    least ``min_size`` bytes, else its bytes (ObjectNotFound when absent, as ``backend.get``)."""
    path = backend.local_file(key)
    try:
        body = FileBody.of(path) if path is not None else None
    except OSError:  # gone since: reported by get below
        body = None
    return body if body is not None and len(body) >= min_size else backend.get(key)
