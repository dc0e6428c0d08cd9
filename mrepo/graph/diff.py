"""Differences between two populations: sources, items, species, particle counts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..store import ObjectStore, deref
from .model import DataSource, Population, Species


@dataclass
class ParticleChange:
    """Particles of one species matched by stable id."""

    added: int = 0
    removed: int = 0
    kept: int = 0


@dataclass
class PopulationDiff:
    """What changed from population ``a`` to population ``b``."""

    sources_added: list[str] = field(default_factory=list)
    sources_removed: list[str] = field(default_factory=list)
    items_added: list[tuple[str, str]] = field(default_factory=list)  # (source, item key)
    items_removed: list[tuple[str, str]] = field(default_factory=list)
    items_changed: list[tuple[str, str]] = field(default_factory=list)
    species_added: list[str] = field(default_factory=list)
    species_removed: list[str] = field(default_factory=list)
    species_changed: list[str] = field(default_factory=list)
    particles: dict[str, ParticleChange] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not any(v for k, v in asdict(self).items() if k != "particles") and all(
            p.added == 0 and p.removed == 0 for p in self.particles.values())

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def particle_ids(objects: ObjectStore, table_hash: str) -> np.ndarray:
    """The stable ids of a particle table, reading only its id column."""
    body = objects.get_record(table_hash, "particles")
    return objects.get_array(deref(body["columns"]["id"]))


def diff_populations(objects: ObjectStore, a: Population, b: Population) -> PopulationDiff:
    """Diff population ``a`` (old) against ``b`` (new)."""
    d = PopulationDiff()
    d.sources_added = sorted(set(b.sources) - set(a.sources))
    d.sources_removed = sorted(set(a.sources) - set(b.sources))
    for name in sorted(set(a.sources) | set(b.sources)):
        ha, hb = a.sources.get(name), b.sources.get(name)
        if ha == hb:
            continue
        ia = DataSource.load(objects, ha).items if ha else {}
        ib = DataSource.load(objects, hb).items if hb else {}
        d.items_added += [(name, k) for k in sorted(set(ib) - set(ia))]
        d.items_removed += [(name, k) for k in sorted(set(ia) - set(ib))]
        d.items_changed += [(name, k) for k in sorted(set(ia) & set(ib)) if ia[k] != ib[k]]
    d.species_added = sorted(set(b.species) - set(a.species))
    d.species_removed = sorted(set(a.species) - set(b.species))
    d.species_changed = sorted(k for k in set(a.species) & set(b.species) if a.species[k] != b.species[k])
    for name in sorted(set(a.species) | set(b.species)):
        ha, hb = a.species.get(name), b.species.get(name)
        if ha == hb:
            continue
        ids_a = particle_ids(objects, Species.load(objects, ha).particles) if ha else np.zeros(0, np.int64)
        ids_b = particle_ids(objects, Species.load(objects, hb).particles) if hb else np.zeros(0, np.int64)
        kept = int(np.intersect1d(ids_a, ids_b, assume_unique=True).size)
        d.particles[name] = ParticleChange(added=len(ids_b) - kept, removed=len(ids_a) - kept, kept=kept)
    return d
