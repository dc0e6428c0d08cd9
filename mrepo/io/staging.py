"""Validate-then-write: importers build every object in a scratch store, then flush.

An importer saves items, sources, particle tables and species into a
:class:`Staging` (an in-memory ObjectStore); raw files to copy (``--copy``) are
only remembered. Nothing touches the repository until :meth:`Staging.commit`,
which copies raw blobs, then arrays, then records into the repository, and
finally commits the new population (CAS on the branch). A failed import
therefore leaves the repository's file listing unchanged.

Also here: raw-data references (:func:`raw_data`) and name matching of particles to items
(particle ids: :mod:`mrepo.io.identity`).
No Fourier layout is involved in this module.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..graph import DataSource, Item, Population, RawData, Repository
from ..store import InvalidInput, MemoryBackend, ObjectStore, RefNotFound, hash_file
from .contrast import PolarityChoice, choose_polarity
from .star import check_path

__all__ = ["Staging", "ImportResult", "raw_data", "item_index_by_name",
           "match_items", "current_population"]

_counter = itertools.count()


@dataclass(frozen=True)
class ImportResult:
    """A finished import: the new commit, its population hash, and what was added by name."""

    commit: str
    population: str
    sources: dict[str, str] = field(default_factory=dict)
    species: dict[str, str] = field(default_factory=dict)


class Staging:
    """Scratch object store for one import; :meth:`commit` moves its content into a repository."""

    def __init__(self, repo: Repository):
        self.repo = repo
        self.url = f"memory://mrepo-staging-{uuid.uuid4().hex}-{next(_counter)}"
        self.objects = ObjectStore(MemoryBackend(self.url), max_workers=2)
        self.raw_files: dict[str, Path] = {}

    def add_raw_file(self, h: str, path: Path) -> None:
        self.raw_files[h] = path

    def close(self) -> None:
        backend = self.objects.backend
        for e in list(backend.list("")):
            backend.delete(e.key)
        self.objects.close()

    def flush(self) -> None:
        """Copy raw blobs, arrays, then records/blobs into the repository (skipping present ones)."""
        target = self.repo.objects
        for h, path in sorted(self.raw_files.items()):
            if hash_file(path) != h:
                raise InvalidInput(f"{path} changed while it was being imported")
            target.put_blob_file(path)
        src, dst = self.objects.backend, self.repo.storage.backend
        keys = [e.key for e in src.list("")]
        arrays = sorted(k for k in keys if k.startswith("arrays/"))
        arrays.sort(key=lambda k: k.endswith("zarr.json"))  # chunks before metadata
        objects = sorted(k for k in keys if k.startswith("objects/"))
        for key in arrays + objects:
            if not dst.exists(key):
                dst.put(key, src.get(key))

    def commit(self, *, population_name: str, sources: dict[str, DataSource] | None = None,
               species: dict[str, Any] | None = None, replace_species: bool = False, message: str,
               operation: dict[str, Any], branch: str | None = None,
               polarity: PolarityChoice | None = None) -> ImportResult:
        """Add sources/species (objects already valid) to the branch's population and commit.

        Every new source gets its contrast polarity from ``polarity`` (:mod:`mrepo.io.contrast`:
        ``--contrast``, else detection against the imported species, else dark)."""
        sources, species = sources or {}, species or {}
        if sources:
            chosen = {n: choose_polarity(polarity, self.objects, s, species) for n, s in sources.items()}
            sources = {n: replace(s, polarity=chosen[n][0]) for n, s in sources.items()}
            operation = {**operation, "polarity": {n: {"polarity": p, **facts} for n, (p, facts) in chosen.items()}}
        head_pop = current_population(self.repo, branch)
        base = head_pop or Population(population_name)
        for name in sources:
            if name in base.sources:
                raise InvalidInput(f"data source {name!r} already exists in population {base.name!r}")
        for name in species:
            if name in base.species and not replace_species:
                raise InvalidInput(f"species {name!r} already exists in population {base.name!r}")
        source_hashes = {n: s.save(self.objects) for n, s in sources.items()}
        species_hashes = {n: s.save(self.objects) for n, s in species.items()}
        pop = Population(base.name, {**base.sources, **source_hashes}, {**base.species, **species_hashes},
                         base.metadata)
        pop_hash = pop.save(self.objects)
        expected = self.repo.head(branch)
        self.flush()
        h = self.repo.commit(pop_hash, message=message, branch=branch, operation=operation, expected_head=expected)
        return ImportResult(h, pop_hash, source_hashes, species_hashes)


def current_population(repo: Repository, branch: str | None = None) -> Population | None:
    """The population at the head of ``branch``, or None for a branch without commits."""
    head = repo.head(branch)
    if head is None:
        return None
    try:
        return repo.population(head)
    except RefNotFound:
        return None


def raw_data(path: str | Path, *, copy: bool, staging: Staging, fmt: str = "mrc") -> RawData:
    """Reference a raw file by its whole-file BLAKE3 blob hash: in place (absolute uri) or copied."""
    p = check_path(path, "raw data file").resolve()
    h = hash_file(p)
    if copy:
        staging.add_raw_file(h, p)
    return RawData(h, p.stat().st_size, fmt, uri=p.as_uri(), stored=copy)


def raw_manifest(paths: list[Path], *, copy: bool, staging: Staging, sections: list[int | None] | None = None
                 ) -> RawData:
    """Raw data made of several files (one tilt image each, or sections of stacks): a small JSON
    manifest blob, always stored.

    The manifest lists each image's file uri, size and blob hash in stack order, plus ``section``
    (0-based image within the file) where ``sections`` gives one (RELION ``k@stack``); its hash is
    the item key. Each file is hashed once however many of its sections are listed.
    """
    import json

    files: dict[Path, dict] = {}
    entries = []
    for i, p in enumerate(paths):
        key = Path(p).resolve()
        if key not in files:
            files[key] = raw_data(p, copy=copy, staging=staging).to_body()
            files[key].pop("blob", None)
        entry = dict(files[key])
        if sections is not None and sections[i] is not None:
            entry["section"] = int(sections[i])
        entries.append(entry)
    data = json.dumps({"format": "mrepo-raw-manifest/1", "files": entries}, sort_keys=True).encode()
    h = staging.objects.put_blob(data)
    # copied files are referenced from the item (raw.parts), so gc keeps them and transfers copy them
    parts = tuple(dict.fromkeys(f["hash"] for f in files.values())) if copy else ()
    return RawData(h, len(data), "manifest", uri=None, stored=True, parts=parts)


def name_key(name: str) -> str:
    """How a RELION micrograph/tomogram name matches an item name: the file name without folders
    and without its extension (``MotionCorr/job002/mic_001.mrc`` -> ``mic_001``)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    if "@" in base:
        base = base.split("@", 1)[1]
    for ext in (".mrcs", ".mrc", ".tiff", ".tif", ".eer", ".st", ".xml"):
        if base.lower().endswith(ext):
            return base[: -len(ext)]
    return base


def item_index_by_name(repo: Repository, population: Population) -> dict[str, list[tuple[str, str, Item]]]:
    """name_key(item name) -> [(source name, item hash, item)] over every source of a population."""
    index: dict[str, list[tuple[str, str, Item]]] = {}
    for sname, sh in sorted(population.sources.items()):
        for ih in repo.source(sh).items.values():
            item = repo.item(ih)
            index.setdefault(name_key(item.name), []).append((sname, ih, item))
    return index


def match_items(names: list[str], index: dict[str, list[tuple[str, str, Item]]], *, where: str,
                ignore_unmatched: bool) -> tuple[np.ndarray, list[Item | None]]:
    """Match each particle's micrograph/tomogram name to one item (M's rules).

    Returns (keep mask, item per row). Unmatched names are an error naming the first few
    unless ``ignore_unmatched``; a name matching two items is always an error.
    """
    items: list[Item | None] = []
    unmatched: list[str] = []
    for n in names:
        found = index.get(name_key(n), [])
        if len(found) > 1:
            raise InvalidInput(f"{where}: name {n!r} is ambiguous: it matches items in sources "
                               f"{', '.join(s for s, _, _ in found)}")
        if not found:
            if n not in unmatched:
                unmatched.append(n)
            items.append(None)
        else:
            items.append(found[0][2])
    if unmatched and not ignore_unmatched:
        raise InvalidInput(f"{where}: {len(unmatched)} name(s) match no item in the population, first: "
                           f"{', '.join(repr(u) for u in unmatched[:3])} (use --ignore-unmatched to skip them)")
    keep = np.array([i is not None for i in items], dtype=bool)
    return keep, items
