"""Particle collisions, duplicates and reclassifications between species (pull-request checks).

Positions. A particle's position is the **mean over its T temporal samples** of its
coordinates (N, T, 3) in Å in its item's frame (for T = 1 that is the one sample).
In a tilt series (``Item.kind == "tilts"``) distances are 3D; in a frame series
(``"frames"``) z is a height that the projection does not resolve, so distances use
(x, y) only.

Rules (F = ``overlap_factor``, r = species diameter / 2, all lengths in Å). An id names one pick
(:mod:`mrepo.io.identity`): independent picks never share an id, a species derived from another's
particles inherits theirs. "Existing" species are the other species the target holds, in the version
the merge produces; "previous" ones are the target's versions of species the source changed or deleted.

- **collision**: an incoming particle a and a particle b of *another* existing species with a
  *different* id, in the same item, with distance d(a, b) < F · (r_a + r_b). An exact duplicate
  imported without its id (same position, new id) is a collision at d = 0;
- **duplicate**: two particles of one incoming species in the same item with
  d < F · diameter (the collision rule with both radii equal: two picks of one
  particle), or d < ``duplicate_tolerance`` Å when that is given;
- **shared**: the same id in an incoming and an existing species, in the same item, within
  ``reclass_tolerance`` Å (default: that pair's collision threshold F · (r_a + r_b)): one pick that
  would belong to two species after the merge (a subset copied rather than moved). It blocks like a
  collision but is never counted as one;
- **reclassification**: an id of an incoming species that a *previous* species held (same item, within
  the tolerance) and whose merged version no longer holds: the particle moved to a new state.
  Informative only;
- **id clash**: the same id in an incoming and an existing species but in different items or
  farther apart than the tolerance: two different particles under one id. Blocks.

When both species of a pair are incoming (the source changed a species the target holds and added or
changed another), the pair is compared once, the later name counting as incoming. Incoming species the
target does not hold are not compared with each other.

Neighbour search: one ``scipy.spatial.cKDTree`` per (species, item), built once and
reused for every species pair; pairs come from dual-tree ``sparse_distance_matrix``
(across species) and ``query_pairs`` (within a species), then exact distances are
recomputed and compared strictly (d < threshold).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..store import InvalidInput
from .model import ParticleTable, Species, check_symmetry

#: Largest accepted species diameter (Å): a sanity bound on input.
MAX_DIAMETER = 1.0e6
DEFAULT_OVERLAP_FACTOR = 0.5


# ----------------------------------------------------------------------------- report values


@dataclass(frozen=True)
class Collision:
    """An incoming particle closer than ``threshold`` Å to an existing particle of another species."""

    item: str
    incoming: str
    incoming_id: int
    existing: str
    existing_id: int
    distance: float
    threshold: float


@dataclass(frozen=True)
class Duplicate:
    """Two particles of one species in one item closer than ``threshold`` Å (``id_a < id_b``)."""

    item: str
    species: str
    id_a: int
    id_b: int
    distance: float
    threshold: float


@dataclass(frozen=True)
class Reclassification:
    """Particle ``id`` of existing species ``source`` appearing in incoming species ``target``."""

    id: int
    source: str
    target: str
    item: str
    distance: float


@dataclass(frozen=True)
class Shared:
    """Particle ``id`` in both existing species ``existing`` and incoming species ``incoming`` (one pick)."""

    id: int
    existing: str
    incoming: str
    item: str
    distance: float


@dataclass(frozen=True)
class IdClash:
    """The same id in an existing and an incoming species, but not the same particle.

    ``distance`` is None when the two particles lie in different items.
    """

    id: int
    existing: str
    incoming: str
    existing_item: str
    incoming_item: str
    distance: float | None


@dataclass
class CollisionReport:
    """Everything a pull-request check found; ``to_json`` is the stored record body."""

    overlap_factor: float = DEFAULT_OVERLAP_FACTOR
    reclass_tolerance: float | None = None
    duplicate_tolerance: float | None = None
    incoming: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    collisions: list[Collision] = field(default_factory=list)
    duplicates: list[Duplicate] = field(default_factory=list)
    reclassifications: list[Reclassification] = field(default_factory=list)
    id_clashes: list[IdClash] = field(default_factory=list)
    shared: list[Shared] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """True when nothing would block a merge with policy ``fail``."""
        return not (self.conflicts or self.collisions or self.duplicates or self.id_clashes or self.shared)

    def per_item(self) -> dict[str, dict[str, int]]:
        """item key -> {"collisions": n, "duplicates": n} (items with findings only)."""
        out: dict[str, dict[str, int]] = {}
        for c in self.collisions:
            out.setdefault(c.item, {"collisions": 0, "duplicates": 0})["collisions"] += 1
        for d in self.duplicates:
            out.setdefault(d.item, {"collisions": 0, "duplicates": 0})["duplicates"] += 1
        return dict(sorted(out.items()))

    def per_pair(self) -> dict[str, int]:
        """"incoming|existing" -> number of collisions; "species|species" -> duplicates."""
        counts = Counter(f"{c.incoming}|{c.existing}" for c in self.collisions)
        counts.update(f"{d.species}|{d.species}" for d in self.duplicates)
        return dict(sorted(counts.items()))

    def histogram(self, bins: int = 10) -> dict[str, list[float] | list[int]]:
        """Distances (Å) of colliding and duplicate pairs on common bin edges from 0 to the largest threshold."""
        thresholds = [c.threshold for c in self.collisions] + [d.threshold for d in self.duplicates]
        top = max(thresholds, default=1.0)
        edges = np.linspace(0.0, top, bins + 1)
        col = np.histogram([c.distance for c in self.collisions], edges)[0]
        dup = np.histogram([d.distance for d in self.duplicates], edges)[0]
        return {"edges": [float(e) for e in edges], "collisions": col.tolist(), "duplicates": dup.tolist()}

    def counts(self) -> dict[str, int]:
        return {"conflicts": len(self.conflicts), "collisions": len(self.collisions),
                "duplicates": len(self.duplicates), "shared": len(self.shared),
                "reclassifications": len(self.reclassifications), "id_clashes": len(self.id_clashes)}

    def summary(self) -> str:
        """One line: the counts that are not zero."""
        parts = [f"{n} {k.replace('_', ' ')}" for k, n in self.counts().items() if n]
        return ", ".join(parts) or "no findings"

    def blocking_summary(self) -> str:
        """One line: the counts that block a ``fail`` merge (conflicts, collisions, duplicates, id clashes)."""
        parts = [f"{n} {k.replace('_', ' ')}" for k, n in self.counts().items() if n and k != "reclassifications"]
        return ", ".join(parts) or "nothing blocking"

    def to_json(self) -> dict[str, Any]:
        return {
            "overlap_factor": self.overlap_factor, "reclass_tolerance": self.reclass_tolerance,
            "duplicate_tolerance": self.duplicate_tolerance,
            "incoming": list(self.incoming), "existing": list(self.existing), "counts": self.counts(),
            "per_item": self.per_item(), "per_pair": self.per_pair(), "histogram": self.histogram(),
            "conflicts": list(self.conflicts),
            "collisions": [dict(vars(c)) for c in self.collisions],  # vars: flat values, faster than asdict
            "duplicates": [dict(vars(d)) for d in self.duplicates],
            "reclassifications": [dict(vars(r)) for r in self.reclassifications],
            "id_clashes": [dict(vars(c)) for c in self.id_clashes],
            "shared": [dict(vars(c)) for c in self.shared],
        }

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> CollisionReport:
        return cls(
            overlap_factor=body["overlap_factor"], reclass_tolerance=body.get("reclass_tolerance"),
            duplicate_tolerance=body.get("duplicate_tolerance"),
            incoming=list(body["incoming"]), existing=list(body["existing"]), conflicts=list(body["conflicts"]),
            collisions=[Collision(**c) for c in body["collisions"]],
            duplicates=[Duplicate(**d) for d in body["duplicates"]],
            reclassifications=[Reclassification(**r) for r in body["reclassifications"]],
            id_clashes=[IdClash(**c) for c in body["id_clashes"]],
            shared=[Shared(**c) for c in body.get("shared", [])],
        )


# ----------------------------------------------------------------------------- validation


def check_species_particles(name: str, species: Species, table: ParticleTable, available: Mapping[str, str]) -> None:
    """Refuse a species that cannot be checked: unknown symmetry, bad diameter, no particles,
    or particles whose item (raw data hash) is not in ``available`` (item key -> kind)."""
    try:
        check_symmetry(species.symmetry)
    except InvalidInput:
        raise InvalidInput(f"species {name!r} has unknown symmetry {species.symmetry!r}: use C<n>, D<n>, T, O or I"
                           ) from None
    if not np.isfinite(species.diameter) or species.diameter <= 0 or species.diameter >= MAX_DIAMETER:
        raise InvalidInput(f"species {name!r} has an invalid diameter {species.diameter!r} Å")
    if len(table) == 0:
        raise InvalidInput(f"species {name!r} has no particles")
    missing = [k for k in table.items if k not in available]
    if missing:
        mask = np.isin(table.item_keys(), missing)
        ids = table.ids[mask]
        shown = ", ".join(str(i) for i in ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
        raise InvalidInput(f"species {name!r}: particle(s) {shown} refer to item {missing[0]} "
                           f"{'(and ' + str(len(missing) - 1) + ' more) ' if len(missing) > 1 else ''}"
                           "that is not in the target population")


# ----------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class Placed:
    """One species' particles ready for neighbour search.

    ``positions`` (N, 3) Å (z = 0 in frame series), ``item`` (N,) global item index,
    ``order`` (N,) rows sorted by item with item k's rows at ``order[bounds[k]:bounds[k + 1]]``;
    ``trees`` caches one KD-tree per item, built on first use.
    """

    name: str
    radius: float
    ids: np.ndarray
    positions: np.ndarray
    item: np.ndarray
    order: np.ndarray
    bounds: np.ndarray
    trees: dict[int, Any] = field(default_factory=dict, compare=False)  # scipy cKDTree per item

    def rows(self, k: int) -> np.ndarray:
        """Rows of the particles in global item ``k``."""
        return self.order[self.bounds[k]:self.bounds[k + 1]]

    def present(self) -> np.ndarray:
        """Global indices of the items holding at least one particle."""
        return np.flatnonzero(np.diff(self.bounds))

    def tree(self, k: int) -> Any:
        if k not in self.trees:
            from scipy.spatial import cKDTree  # imported on first use: keeps `mrepo` start-up fast

            self.trees[k] = cKDTree(self.positions[self.rows(k)], balanced_tree=False)
        return self.trees[k]


def place(name: str, species: Species, table: ParticleTable, item_index: Mapping[str, int],
          planar: np.ndarray) -> Placed:
    """Positions of ``table``'s particles; ``item_index`` maps item keys to global indices 0..M-1 and
    ``planar[i]`` is True when global item i is a frame series (2D distances)."""
    lookup = np.array([item_index[k] for k in table.items], dtype=np.int64)
    item = lookup[table.item_index] if len(table) else np.zeros(0, np.int64)
    pos = table.coordinates.mean(axis=1)
    pos[planar[item], 2] = 0.0
    order = np.argsort(item, kind="stable")
    bounds = np.searchsorted(item[order], np.arange(len(planar) + 1))
    return Placed(name, species.diameter / 2.0, table.ids, pos, item, order, bounds)


def _empty() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)


def cross_pairs(a: Placed, b: Placed, cutoff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows of a, rows of b, distances Å) of pairs in one item with distance < ``cutoff``."""
    ii, jj = [], []
    for k in np.intersect1d(a.present(), b.present()).tolist():
        m = a.tree(k).sparse_distance_matrix(b.tree(k), cutoff, output_type="ndarray")
        if len(m):
            ii.append(a.rows(k)[m["i"]])
            jj.append(b.rows(k)[m["j"]])
    if not ii:
        return _empty()
    i, j = np.concatenate(ii).astype(np.int64), np.concatenate(jj).astype(np.int64)
    d = np.linalg.norm(a.positions[i] - b.positions[j], axis=1)
    keep = d < cutoff
    return i[keep], j[keep], d[keep]


def self_pairs(a: Placed, cutoff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows i, rows j, distances Å) of pairs of ``a``'s particles in one item closer than ``cutoff``,
    with ids[i] < ids[j], sorted by (ids[i], ids[j])."""
    ii, jj = [], []
    for k in a.present().tolist():
        rows = a.rows(k)
        if len(rows) > 1:
            pairs = a.tree(k).query_pairs(cutoff, output_type="ndarray")
            if len(pairs):
                ii.append(rows[pairs[:, 0]])
                jj.append(rows[pairs[:, 1]])
    if not ii:
        return _empty()
    i, j = np.concatenate(ii).astype(np.int64), np.concatenate(jj).astype(np.int64)
    d = np.linalg.norm(a.positions[i] - a.positions[j], axis=1)
    keep = d < cutoff
    i, j, d = i[keep], j[keep], d[keep]
    swap = a.ids[i] > a.ids[j]
    i, j = np.where(swap, j, i), np.where(swap, i, j)
    order = np.lexsort((a.ids[j], a.ids[i]))
    return i[order], j[order], d[order]


# ----------------------------------------------------------------------------- the check


SpeciesSet = Mapping[str, tuple[Species, ParticleTable]]


def check_collisions(incoming: SpeciesSet, existing: SpeciesSet, item_kinds: Mapping[str, str], *,
                     overlap_factor: float = DEFAULT_OVERLAP_FACTOR, reclass_tolerance: float | None = None,
                     duplicate_tolerance: float | None = None, previous: SpeciesSet | None = None) -> CollisionReport:
    """Collisions of ``incoming`` species against *other* ``existing`` species, duplicates inside each
    incoming species, shared particles, id clashes and reclassifications (rules in the module docstring).

    ``existing``: the target's species as merged (may repeat incoming names: a species the source
    changed); ``previous``: the target's versions of species the source changed or deleted.
    ``item_kinds``: item key (raw data hash) -> "frames" | "tilts"; every particle's item must be in it.
    Raises InvalidInput for bad parameters or species (see :func:`check_species_particles`).
    """
    factor = float(overlap_factor)
    if not np.isfinite(factor) or factor <= 0:
        raise InvalidInput(f"overlap factor must be a positive number, got {overlap_factor!r}")
    for what, tol in (("reclassification tolerance", reclass_tolerance), ("duplicate tolerance", duplicate_tolerance)):
        if tol is not None and (not np.isfinite(tol) or tol < 0):
            raise InvalidInput(f"{what} must be a non-negative number of Å, got {tol!r}")
    for name, (sp, table) in {**existing, **incoming}.items():
        check_species_particles(name, sp, table, item_kinds)
    keys = sorted(item_kinds)
    index = {k: i for i, k in enumerate(keys)}
    planar = np.array([item_kinds[k] != "tilts" for k in keys], dtype=bool)
    placed: dict[tuple[str, str], Placed] = {}

    def get(side: str, name: str, sp: Species, table: ParticleTable) -> Placed:
        if (side, name) not in placed:
            placed[(side, name)] = place(name, sp, table, index, planar)
        return placed[(side, name)]

    report = CollisionReport(overlap_factor=factor, reclass_tolerance=reclass_tolerance,
                             duplicate_tolerance=duplicate_tolerance,
                             incoming=sorted(incoming), existing=sorted(existing))
    for in_name in sorted(incoming):
        a = get("in", in_name, *incoming[in_name])
        cutoff = duplicate_tolerance if duplicate_tolerance is not None else factor * 2 * a.radius
        for i, j, d in zip(*self_pairs(a, cutoff)):
            report.duplicates.append(Duplicate(keys[a.item[i]], in_name, int(a.ids[i]), int(a.ids[j]), float(d),
                                               float(cutoff)))
        for ex_name in sorted(existing):
            if ex_name == in_name or (ex_name in incoming and ex_name > in_name):
                continue  # a pair of incoming species is compared once, the later name as incoming
            b = get("ex", ex_name, *existing[ex_name])
            _compare(a, b, factor, reclass_tolerance, keys, report)
        for old_name in sorted(previous or {}):
            if old_name != in_name:
                _moved(a, get("old", old_name, *previous[old_name]), existing.get(old_name), factor,
                       reclass_tolerance, keys, report)
    return report


def _moved(a: Placed, old: Placed, now: tuple[Species, ParticleTable] | None, factor: float,
           reclass_tolerance: float | None, keys: list[str], report: CollisionReport) -> None:
    """Reclassifications: ids of incoming ``a`` that ``old`` (a previous species) held and its merged
    version ``now`` no longer holds, in the same item within the tolerance."""
    tol = factor * (a.radius + old.radius) if reclass_tolerance is None else reclass_tolerance
    _, ra, rb = np.intersect1d(a.ids, old.ids, assume_unique=True, return_indices=True)
    still = np.isin(a.ids[ra], now[1].ids) if now is not None else np.zeros(len(ra), bool)
    for i, j in zip(ra[~still], rb[~still]):
        if a.item[i] == old.item[j]:
            d = float(np.linalg.norm(a.positions[i] - old.positions[j]))
            if d <= tol:
                report.reclassifications.append(Reclassification(int(a.ids[i]), old.name, a.name, keys[a.item[i]], d))


def _compare(a: Placed, b: Placed, factor: float, reclass_tolerance: float | None, keys: list[str],
             report: CollisionReport) -> None:
    """Collisions, shared particles and id clashes of incoming ``a`` against existing ``b``."""
    cutoff = factor * (a.radius + b.radius)
    tol = cutoff if reclass_tolerance is None else reclass_tolerance
    _, ra, rb = np.intersect1d(a.ids, b.ids, assume_unique=True, return_indices=True)
    for i, j in zip(ra, rb):
        same_item = a.item[i] == b.item[j]
        d = float(np.linalg.norm(a.positions[i] - b.positions[j])) if same_item else None
        if d is not None and d <= tol:
            report.shared.append(Shared(int(a.ids[i]), b.name, a.name, keys[a.item[i]], d))
        else:
            report.id_clashes.append(IdClash(int(a.ids[i]), b.name, a.name, keys[b.item[j]], keys[a.item[i]], d))
    pi, pj, pd = cross_pairs(a, b, cutoff)
    keep = a.ids[pi] != b.ids[pj]  # a shared id is a shared particle or an id clash, never a collision
    pi, pj, pd = pi[keep], pj[keep], pd[keep]
    order = np.lexsort((b.ids[pj], a.ids[pi]))
    for i, j, d in zip(pi[order].tolist(), pj[order].tolist(), pd[order].tolist()):
        report.collisions.append(Collision(keys[a.item[i]], a.name, int(a.ids[i]), b.name, int(b.ids[j]), d,
                                           float(cutoff)))


# ----------------------------------------------------------------------------- resolving


def greedy_keep(n: int, pairs_i: np.ndarray, pairs_j: np.ndarray, priority: np.ndarray) -> np.ndarray:
    """Non-maximum suppression over duplicate pairs of ``n`` rows: visit the rows that are in a pair by
    ascending ``priority`` and keep a row unless an already kept row is paired with it.
    Returns a (n,) bool mask of kept rows (rows in no pair are always kept)."""
    keep = np.ones(n, dtype=bool)
    if len(pairs_i) == 0:
        return keep
    neighbours: dict[int, list[int]] = {}
    for i, j in zip(np.asarray(pairs_i).tolist(), np.asarray(pairs_j).tolist()):
        neighbours.setdefault(i, []).append(j)
        neighbours.setdefault(j, []).append(i)
    involved = np.array(sorted(neighbours), dtype=np.int64)
    kept: set[int] = set()
    for r in involved[np.argsort(np.asarray(priority)[involved], kind="stable")].tolist():
        if any(m in kept for m in neighbours[r]):
            keep[r] = False
        else:
            kept.add(r)
    return keep
