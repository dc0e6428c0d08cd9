"""A read-only zarr-python store of named maps on any repository backend (local, S3, memory, HTTP).

    >>> import zarr
    >>> from mrepo.graph.zarr_store import NamedMapStore
    >>> half1 = zarr.open_array(NamedMapStore("s3://bucket/lab"), path="main/species/apo/half1", mode="r")
    >>> half1.attrs["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"]  # voxel size in Å

Keys are ``<rev>/species/<name>/<map>/zarr.json`` and chunk keys below it (see
:mod:`mrepo.graph.named`). Every write or delete is refused: a named map is a view of an
immutable, content-addressed array. Needs zarr-python (``pip install 'mrepo[zarr]'``; without it,
importing this module raises :class:`~mrepo.store.MissingExtra` saying so).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Any

from ..store import InvalidInput, ObjectNotFound, RefNotFound, require_extra

require_extra("zarr", "zarr", "reading maps by name with zarr-python")

from zarr.abc.store import (  # noqa: E402 - after the clear message when zarr is missing
    ByteRequest,
    OffsetByteRequest,
    RangeByteRequest,
    Store,
    SuffixByteRequest,
)
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype  # noqa: E402

from .named import MAPS, NamedMaps, split_named_path  # noqa: E402
from .repository import Repository  # noqa: E402


class ReadOnlyNamedPath(InvalidInput):
    """A write or delete through a named map path."""


class NamedMapStore(Store):
    """zarr ``Store`` over the named maps of one repository (``repo``: a Repository or a URL)."""

    supports_writes = False
    supports_deletes = False
    supports_partial_writes = False
    supports_listing = True

    def __init__(self, repo: Repository | str, options: dict[str, Any] | None = None):
        super().__init__(read_only=True)
        self.repo = repo if isinstance(repo, Repository) else Repository.open(repo, options)
        self.maps = NamedMaps(self.repo)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NamedMapStore) and other.repo.url == self.repo.url

    def __repr__(self) -> str:
        return f"NamedMapStore({self.repo.url!r})"

    def with_read_only(self, read_only: bool = False) -> NamedMapStore:
        if not read_only:
            raise ReadOnlyNamedPath("named map paths are read-only")
        return self

    def _read(self, key: str) -> bytes | None:
        try:
            return self.maps.read(key)
        except (ObjectNotFound, InvalidInput, RefNotFound):
            return None  # zarr probes keys (e.g. a group's zarr.json one level up): absent

    async def get(self, key: str, prototype: BufferPrototype | None = None,
                  byte_range: ByteRequest | None = None) -> Buffer | None:
        data = await asyncio.to_thread(self._read, key)
        if data is None:
            return None
        if isinstance(byte_range, RangeByteRequest):
            data = data[byte_range.start:byte_range.end]
        elif isinstance(byte_range, OffsetByteRequest):
            data = data[byte_range.offset:]
        elif isinstance(byte_range, SuffixByteRequest):
            data = data[-byte_range.suffix:]
        return (prototype or default_buffer_prototype()).buffer.from_bytes(data)

    async def get_partial_values(self, prototype: BufferPrototype,
                                 key_ranges: Iterable[tuple[str, ByteRequest | None]]) -> list[Buffer | None]:
        return [await self.get(k, prototype, r) for k, r in key_ranges]

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self._read, key) is not None

    async def set(self, key: str, value: Buffer) -> None:
        raise ReadOnlyNamedPath(f"cannot write {key!r}: named map paths are read-only (commit a new species "
                                "version instead)")

    async def delete(self, key: str) -> None:
        raise ReadOnlyNamedPath(f"cannot delete {key!r}: named map paths are read-only")

    async def set_partial_values(self, key_start_values: Iterable[tuple[str, int, Any]]) -> None:
        raise ReadOnlyNamedPath("named map paths are read-only")

    async def list(self) -> AsyncIterator[str]:
        for name in ():
            yield name

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        async for name in self.list_dir(prefix):
            yield prefix.rstrip("/") + "/" + name

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        """The maps of ``<rev>/species/<name>/``, or ``zarr.json`` of a map; nothing elsewhere."""
        path = prefix.strip("/")
        for m in MAPS:
            try:
                split_named_path(f"{path}/{m}")
            except InvalidInput:
                break
            if await asyncio.to_thread(self._read, f"{path}/{m}/zarr.json") is not None:
                yield m
        try:
            split_named_path(path)
        except InvalidInput:
            return
        if await asyncio.to_thread(self._read, f"{path}/zarr.json") is not None:
            yield "zarr.json"


def open_map(repo: Repository | str, path: str, options: dict[str, Any] | None = None) -> Any:
    """``zarr.Array`` (read-only) of the named map ``<rev>/species/<name>/<map>``."""
    import zarr

    store = NamedMapStore(repo, options)
    rev, species, map_name, _ = split_named_path(path)
    store.maps.resolve(rev, species, map_name)  # a clear error for a wrong revision, species or map
    return zarr.open_array(store, path=path.strip("/"), mode="r")
