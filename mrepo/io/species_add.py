"""Add a species from a RELION refinement to the population at a branch head.

Particles link to items by micrograph or tomogram name (M's rules, see
:func:`~mrepo.io.staging.match_items`): unmatched names are an error naming the first
ones unless ``ignore_unmatched``; a name matching two items is always an error.
Particle ids come from the file's ``rlnMrepoParticleId`` column when present (a species derived from
exported particles keeps their ids), else are new for this import (:mod:`mrepo.io.identity`).
No Fourier layout is involved in this module.
"""

from __future__ import annotations

from pathlib import Path

from ..graph import Repository
from ..store import InvalidInput
from .branches import branch_population
from .identity import import_context
from .relion_particles import read_relion_particles
from .relion_spa import SpeciesFiles
from .species_build import build_species, read_species_maps
from .staging import ImportResult, Staging, item_index_by_name

__all__ = ["add_species"]


def add_species(repo: Repository, species: SpeciesFiles, particles: str | Path, *, ignore_unmatched: bool = False,
                branch: str | None = None, message: str | None = None) -> ImportResult:
    """Create species ``species.name`` from maps and a particle STAR file; one new commit."""
    pop, _ = branch_population(repo, branch)
    if species.name in pop.species:
        raise InvalidInput(f"species {species.name!r} already exists in population {pop.name!r}")
    index = item_index_by_name(repo, pop)
    staging = Staging(repo)
    try:
        rows = read_relion_particles(particles, index, ignore_unmatched=ignore_unmatched, objects=repo.objects)
        maps = read_species_maps(species.half1, species.half2, species.mask)
        used = {it.key for it in rows.items}
        contributors = sorted({h for entries in index.values() for _, h, it in entries if it.key in used})
        sp = build_species(staging.objects, name=species.name, maps=maps, rows=rows, diameter=species.diameter,
                           symmetry=species.symmetry, temporal_samples=species.temporal_samples,
                           star_path=particles, contributors=contributors,
                           id_context=import_context(repo, pop, repo.head(branch), particles))
        op = {"name": "species-add", "species": species.name, "particles": str(particles),
              "half1": str(species.half1), "half2": str(species.half2), "mask": str(species.mask),
              "diameter": species.diameter, "symmetry": species.symmetry,
              "temporal_samples": species.temporal_samples, "ignore_unmatched": ignore_unmatched,
              "skipped": rows.skipped}
        return staging.commit(population_name=pop.name, species={species.name: sp}, operation=op, branch=branch,
                              message=message or f"Add species {species.name!r} ({len(rows.item_keys)} particles)")
    finally:
        staging.close()
