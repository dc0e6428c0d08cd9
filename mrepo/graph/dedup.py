"""Deduplicate one species: drop the extra picks of a physical particle and commit a new version.

Two particles of a species in one item are duplicates when their positions (mean over
temporal samples; (x, y) only in frame series, 3D in tilt series; see
:mod:`mrepo.graph.collisions`) are closer than ``tolerance`` Å, by default
``overlap_factor × diameter`` (0.5 × diameter), the pull-request duplicate rule.
Of each group, particles are kept by non-maximum suppression in the order of ``keep``:

- ``first``: lowest id first (the default), ``last``: highest id first;
- ``max:<column>`` / ``min:<column>``: highest / lowest value of an extra particle
  column (e.g. a score) first, ties by id.

A particle is removed only if a kept particle lies within the tolerance, so a chain
a–b–c with a and c far apart keeps a and c.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..store import InvalidInput, RefNotFound
from .collisions import DEFAULT_OVERLAP_FACTOR, check_species_particles, greedy_keep, place, self_pairs
from .model import ParticleTable, Population, Species
from .pulls import item_kinds
from .repository import Repository


@dataclass(frozen=True)
class DedupResult:
    """Outcome of :func:`dedup_species`: removed ids, the new species hash and the commit (None: nothing to do)."""

    species: str
    tolerance: float
    removed: list[int]
    kept: int
    species_hash: str
    commit: str | None


def priority(table: ParticleTable, keep: str) -> np.ndarray:
    """(N,) visiting order key (ascending = kept first) for a ``keep`` rule."""
    if keep == "first":
        return table.ids.astype(np.float64)
    if keep == "last":
        return -table.ids.astype(np.float64)
    rule, _, column = keep.partition(":")
    if rule in ("max", "min") and column:
        if column not in table.extra:
            raise InvalidInput(f"keep rule {keep!r}: no particle column {column!r} "
                               f"(columns: {', '.join(sorted(table.extra)) or 'none'})")
        values = np.asarray(table.extra[column], dtype=np.float64)
        if values.ndim != 1:
            raise InvalidInput(f"keep rule {keep!r}: column {column!r} is not one value per particle")
        values = -values if rule == "max" else values
        order = np.lexsort((table.ids, values))  # ties by id
        rank = np.empty(len(table), np.float64)
        rank[order] = np.arange(len(table))
        return rank
    raise InvalidInput(f"unknown keep rule {keep!r}: use first, last, max:<column> or min:<column>")


def dedup_table(name: str, species: Species, table: ParticleTable, kinds: dict[str, str], *,
                tolerance: float | None = None, keep: str = "first",
                overlap_factor: float = DEFAULT_OVERLAP_FACTOR) -> tuple[np.ndarray, float]:
    """(ids to remove sorted, tolerance used in Å) for one species' particles; ``kinds``: item key -> kind."""
    check_species_particles(name, species, table, kinds)
    tol = overlap_factor * species.diameter if tolerance is None else float(tolerance)
    if not np.isfinite(tol) or tol <= 0:
        raise InvalidInput(f"dedup tolerance must be a positive number of Å, got {tolerance!r}")
    order = priority(table, keep)
    keys = sorted(kinds)
    planar = np.array([kinds[k] != "tilts" for k in keys], dtype=bool)
    placed = place(name, species, table, {k: i for i, k in enumerate(keys)}, planar)
    i, j, _ = self_pairs(placed, tol)
    kept = greedy_keep(len(table), i, j, order)
    return np.sort(table.ids[~kept]), tol


def dedup_species(repo: Repository, name: str, *, branch: str | None = None, tolerance: float | None = None,
                  keep: str = "first", overlap_factor: float = DEFAULT_OVERLAP_FACTOR, message: str | None = None,
                  author: str | None = None, time: str | None = None) -> DedupResult:
    """Remove duplicate picks from species ``name`` on ``branch`` and commit the new species version.

    The new version is marked ``needs_refinement`` (its maps still hold the removed particles).
    Nothing is written when there are no duplicates.
    """
    branch = branch or repo.default_branch
    head = repo.head(branch)
    if head is None:
        raise RefNotFound(f"branch {branch!r} has no commits")
    pop = repo.population(head)
    if name not in pop.species:
        raise InvalidInput(f"no species {name!r} on {branch!r} (species: {', '.join(sorted(pop.species)) or 'none'})")
    sp = repo.species(pop.species[name])
    table = repo.particles(sp.particles)
    kinds = item_kinds(repo, pop, set(table.items))
    removed, tol = dedup_table(name, sp, table, kinds, tolerance=tolerance, keep=keep, overlap_factor=overlap_factor)
    if len(removed) == 0:
        return DedupResult(name, tol, [], len(table), pop.species[name], None)
    new_table = table.select(~np.isin(table.ids, removed))
    meta: dict[str, Any] = {**sp.metadata, "needs_refinement": True,
                            "needs_refinement_reason": f"dedup removed {len(removed)} duplicate particle(s) "
                                                       f"closer than {tol:g} Å"}
    new_sp = sp.evolve(particles=new_table.save(repo.objects), metadata=meta)
    sh = new_sp.save(repo.objects)
    new_pop = Population(pop.name, pop.sources, {**pop.species, name: sh}, pop.metadata)
    op = {"name": "species-dedup", "species": name, "tolerance": tol, "keep": keep, "removed": len(removed)}
    commit = repo.commit(new_pop, message=message or f"Deduplicate {name}: {len(removed)} particle(s) removed",
                         branch=branch, operation=op, author=author, time=time, expected_head=head)
    return DedupResult(name, tol, [int(i) for i in removed], len(new_table), sh, commit)


__all__ = ["DedupResult", "dedup_species", "dedup_table", "priority"]
