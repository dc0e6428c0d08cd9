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
    #: The same changes by name: ``{"source", "name", "key", "change": added|removed|changed, "fields"}``
    #: per item (``fields``: what differs, e.g. ``models.defocus``, ``imaging.exposure``, ``raw``).
    items: list[dict[str, Any]] = field(default_factory=list)
    #: Per changed species: field -> [old, new] for scalars (units in the key: ``resolution_A``),
    #: field -> true for maps and particles that changed (``half1``, ``mask``, ``particles``...).
    species_changes: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Per changed source: fields of the source record (besides its items) that differ.
    source_changes: dict[str, list[str]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not any(v for k, v in asdict(self).items() if k not in ("particles", "items")) and all(
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
        d.items += _named_items(objects, name, ia, ib)
        if ha and hb:
            fields = _record_fields_changed(objects.get_record(ha, "source"), objects.get_record(hb, "source"),
                                            skip=("items",))
            if fields:
                d.source_changes[name] = fields
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
        if ha and hb:
            d.species_changes[name] = _species_changes(Species.load(objects, ha), Species.load(objects, hb))
    return d


#: Species scalars and the unit suffix of their diff key (docs/json.md).
_SPECIES_SCALARS = (("resolution", "resolution_A"), ("diameter", "diameter_A"), ("pixel_size", "pixel_size_A"),
                    ("box", "box_px"), ("symmetry", "symmetry"), ("temporal_samples", "temporal_samples"))
_SPECIES_OBJECTS = ("half1", "half2", "mask", "particles", "fsc", "denoiser", "contributors", "metadata")


def _species_changes(a: Species, b: Species) -> dict[str, Any]:
    """field -> [old, new] for scalars, field -> True for maps, particles and provenance that changed."""
    out: dict[str, Any] = {key: [getattr(a, f), getattr(b, f)] for f, key in _SPECIES_SCALARS
                           if getattr(a, f) != getattr(b, f)}
    out.update({f: True for f in _SPECIES_OBJECTS if getattr(a, f) != getattr(b, f)})
    return out


def _record_fields_changed(a: dict[str, Any], b: dict[str, Any], skip: tuple[str, ...] = ()) -> list[str]:
    """Dotted names of the (two-level) fields that differ between two record bodies."""
    changed: list[str] = []
    for k in sorted(set(a) | set(b)):
        if k in skip or a.get(k) == b.get(k):
            continue
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            changed += [f"{k}.{s}" for s in sorted(set(va) | set(vb)) if va.get(s) != vb.get(s)]
        else:
            changed.append(k)
    return changed


def _named_items(objects: ObjectStore, source: str, ia: dict[str, str], ib: dict[str, str]) -> list[dict[str, Any]]:
    """Added, removed and changed items of one source, by item name, with the fields that changed."""
    out: list[dict[str, Any]] = []
    for key in sorted(set(ia) | set(ib)):
        ha, hb = ia.get(key), ib.get(key)
        if ha == hb:
            continue
        body_a = objects.get_record(ha, "item") if ha else None
        body_b = objects.get_record(hb, "item") if hb else None
        name = (body_b or body_a or {}).get("name", key[:16])
        change = "added" if ha is None else "removed" if hb is None else "changed"
        fields = _record_fields_changed(body_a, body_b) if body_a and body_b else []
        out.append({"source": source, "name": name, "key": key, "change": change, "fields": fields})
    return sorted(out, key=lambda e: (e["source"], e["name"], e["key"]))
