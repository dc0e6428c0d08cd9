"""Maps by name: ``<rev>/species/<name>/<map>`` → the Zarr v3 array of that map, read-only.

``<map>`` is ``half1``, ``half2``, ``mask`` or ``filtered`` (the FSC-weighted map a refinement
stores in the species' metadata). A named path resolves revision → commit → population →
species → array hash once per reader (:class:`NamedMaps`), so every chunk of one array comes
from one commit even while the branch moves.

The ``zarr.json`` served under a named path is the stored one with two additions to its
attributes: ``ome`` — OME-Zarr 0.5 ``multiscales`` metadata (axes z, y, x of type space in
``angstrom``; one dataset at path ``.`` with a ``scale`` transformation of the voxel size),
for readers that take scale from an array's attributes; OME-Zarr image readers take a group, served
as ``<map>.ome`` (see :data:`OME_SUFFIX`) — and ``mrepo.named`` (rev,
commit, species, map, voxel size in Å). Chunk keys are those of the stored array.

Front ends: :class:`mrepo.graph.zarr_store.NamedMapStore` (zarr-python, any backend) and the
server's ``/repo/named/...`` routes (HTTP).
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from typing import Any

from ..store import InvalidInput, ObjectNotFound, RefNotFound, deref
from ..store.objects import array_prefix
from .repository import Repository

MAPS = ("half1", "half2", "mask", "filtered")
OME_SUFFIX = ".ome"
"""``<map>.ome`` is the same map as an OME-Zarr 0.5 image: a group whose ``multiscales`` (scale in Å)
name its one level ``0``, the array. Viewers that read OME-Zarr images (napari-ome-zarr, neuroglancer)
take a group: the spec puts ``multiscales`` on a group, with datasets as child arrays."""
_ARRAY_FILE = re.compile(r"^(zarr\.json|c(/[0-9]{1,9}){0,32})$")
_OME_FILE = re.compile(r"^(zarr\.json|0(/zarr\.json|/c(/[0-9]{1,9}){0,32})?)$")


@dataclass(frozen=True)
class NamedMap:
    """A resolved named map: where it came from and the array that holds it."""

    rev: str
    commit: str
    species: str
    map: str
    array: str
    voxel_size: float  # Å

    def to_json(self) -> dict[str, Any]:
        return {"rev": self.rev, "commit": self.commit, "species": self.species, "map": self.map,
                "array": self.array, "voxel_size_angstrom": self.voxel_size}


def split_named_path(path: str) -> tuple[str, str, str, str]:
    """``(rev, species, map, file)`` of ``<rev>/species/<name>/<map>[/<file>]``; ``file`` is
    ``zarr.json``, a chunk key ``c/i/j/k`` or ``""``. The revision may itself contain ``/``."""
    parts = path.strip("/").split("/")
    for i in range(1, len(parts) - 2):
        ome = parts[i + 2].endswith(OME_SUFFIX) and parts[i + 2].removesuffix(OME_SUFFIX) in MAPS
        if parts[i] == "species" and (parts[i + 2] in MAPS or ome):
            rest = "/".join(parts[i + 3:])
            if rest == "" or (_OME_FILE if ome else _ARRAY_FILE).match(rest):
                return "/".join(parts[:i]), parts[i + 1], parts[i + 2], rest
    raise InvalidInput(f"not a named map path: {path[:120]!r} (expected <rev>/species/<name>/"
                       f"{'|'.join(MAPS)}[/zarr.json|/c/...])")


def ome_attributes(name: str, voxel_size: float, ndim: int = 3, path: str = ".") -> dict[str, Any]:
    """OME-Zarr 0.5 ``multiscales`` for one z, y, x volume with ``voxel_size`` Å per voxel; ``path``
    is the dataset (``0`` in an ``<map>.ome`` group, ``.`` on the array itself)."""
    axes = [{"name": a, "type": "space", "unit": "angstrom"} for a in "zyx"[3 - ndim:]]
    return {"version": "0.5", "multiscales": [{
        "name": name, "axes": axes,
        "datasets": [{"path": path, "coordinateTransformations": [{"type": "scale", "scale": [voxel_size] * ndim}]}],
    }]}


class NamedMaps:
    """Resolves named maps of one repository, remembering each revision's commit (pinned)."""

    def __init__(self, repo: Repository):
        self.repo = repo
        self._resolved: dict[tuple[str, str, str], NamedMap] = {}
        self._lock = threading.Lock()

    def resolve(self, rev: str, species: str, map_name: str) -> NamedMap:
        key = (rev, species, map_name)
        with self._lock:
            found = self._resolved.get(key)
        if found is not None:
            return found
        if map_name not in MAPS:
            raise InvalidInput(f"unknown map {map_name!r}: use one of {', '.join(MAPS)}")
        commit = self.repo.resolve(rev)
        pop = self.repo.population(commit)
        if species not in pop.species:
            raise RefNotFound(f"species {species!r} is not in the population at {rev} ({commit[:12]}); "
                              f"species there: {', '.join(sorted(pop.species)) or 'none'}")
        sp = self.repo.species(pop.species[species])
        if map_name == "filtered":
            ref = sp.metadata.get("filtered")
            if ref is None:
                raise ObjectNotFound(f"species {species!r} at {rev} has no filtered map (made by refinement)")
            array = deref(ref, "array")
        else:
            array = getattr(sp, map_name)
        found = NamedMap(rev, commit, species, map_name, array, float(sp.pixel_size))
        with self._lock:
            self._resolved[key] = found
        return found

    def zarr_json(self, named: NamedMap) -> bytes:
        """The array's ``zarr.json`` with OME multiscales and the named origin in its attributes."""
        doc = json.loads(self.repo.storage.backend.get(array_prefix(named.array) + "zarr.json"))
        attrs = doc.setdefault("attributes", {})
        attrs["ome"] = ome_attributes(f"{named.species}/{named.map}", named.voxel_size, len(doc.get("shape", [])))
        attrs.setdefault("mrepo", {})["named"] = named.to_json()
        return json.dumps(doc, indent=2).encode()

    def ome_group_json(self, named: NamedMap) -> bytes:
        """``zarr.json`` of the ``<map>.ome`` image group: multiscales with the one level ``0``."""
        doc = json.loads(self.repo.storage.backend.get(array_prefix(named.array) + "zarr.json"))
        ome = ome_attributes(f"{named.species}/{named.map}", named.voxel_size, len(doc.get("shape", [])), path="0")
        group = {"zarr_format": 3, "node_type": "group", "attributes": {"ome": ome, "mrepo": {"named": named.to_json()}}}
        return json.dumps(group, indent=2).encode()

    def read(self, path: str) -> bytes:
        """Bytes of ``<rev>/species/<name>/<map>/<file>`` or ``<map>.ome/zarr.json|0/<file>``;
        ObjectNotFound when absent."""
        rev, species, map_name, file = split_named_path(path)
        if map_name.endswith(OME_SUFFIX):
            named = self.resolve(rev, species, map_name.removesuffix(OME_SUFFIX))
            if file == "zarr.json":
                return self.ome_group_json(named)
            if not file.startswith("0/"):
                raise ObjectNotFound(f"{path}: an OME-Zarr image group holds zarr.json and its level 0/")
            file = file[2:]
        else:
            named = self.resolve(rev, species, map_name)
        if file == "zarr.json":
            return self.zarr_json(named)
        if not file:
            raise ObjectNotFound(f"{path} is an array; read its zarr.json or chunks")
        return self.repo.storage.backend.get(array_prefix(named.array) + file)
