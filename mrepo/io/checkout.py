"""Materialise a commit's maps and particles as files: ``<out>/<species>/{half1,half2,mask}.mrc``,
``particles.star`` (RELION layout) and ``fsc.star``, plus ``population.json`` naming every object.

MRC headers carry the species pixel size as voxel size and origin 0 (RELION's
convention: voxel 0 at the coordinate origin). No Fourier layout is involved in this module.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..graph import Repository
from .export_relion import population_items, write_species_files

__all__ = ["checkout"]


def checkout(repo: Repository, rev: str, out: str | Path) -> list[Path]:
    """Write the species files of ``rev`` under ``out``; returns the written paths."""
    out = Path(out)
    commit = repo.resolve(rev)
    pop = repo.population(commit)
    items = population_items(repo, pop)
    written: list[Path] = []
    summary = {"commit": commit, "population": pop.name, "sources": {}, "species": {}}
    for sname, sh in sorted(pop.sources.items()):
        summary["sources"][sname] = {"hash": sh, "items": sorted(items[k].name for k in repo.source(sh).items)}
    for name, h in sorted(pop.species.items()):
        sp = repo.species(h)
        written += write_species_files(repo, sp, items, out)
        summary["species"][name] = {"hash": h, "pixel_size": sp.pixel_size, "box": sp.box, "symmetry": sp.symmetry,
                                    "diameter": sp.diameter, "resolution": sp.resolution}
    out.mkdir(parents=True, exist_ok=True)
    path = out / "population.json"
    path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return [*written, path]
