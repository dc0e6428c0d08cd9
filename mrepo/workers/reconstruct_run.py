"""Reconstruct species from the current parameters of a branch, checked, in one commit.

Every item holding particles of the chosen species is back-projected by the workers
(:func:`mrepo.workers.refine_item.refine_item` with nothing to refine, on any
:class:`~mrepo.workers.api.Executor`) with its source's contrast polarity; the driver adds the
half-set sums, reconstructs each species (half-maps, masked FSC, resolution, filtered map) and
refuses the result if it anti-correlates with the species' current map or its half-maps agree
only through a shared artefact (:func:`mrepo.workers.reconstruct.check_reconstruction`).
Items and particles are unchanged; the new species versions list the current item versions as
``contributors``. The commit's operation is ``{"name": "reconstruct", ...}`` with the checks.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from mrepo.graph import Population, Repository
from mrepo.store import InvalidInput
from mrepo.workers.api import Executor
from mrepo.workers.driver import build_tasks
from mrepo.workers.reconstruct import (
    Reconstruction,
    ReconstructionCheck,
    check_reconstruction,
    reconstruct_species,
    species_average,
    species_metadata,
)
from mrepo.workers.settings import RefineSettings

__all__ = ["ReconstructResult", "reconstruct_population", "reconstruction_settings"]


@dataclass(frozen=True)
class ReconstructResult:
    """The new commit, and per species its reconstruction and checks."""

    commit: str
    reconstructions: dict[str, Reconstruction]
    checks: dict[str, ReconstructionCheck]
    particles: dict[str, int]


def reconstruction_settings(threads: int = 1, **changes: Any) -> RefineSettings:
    """Settings that refine nothing (the workers only back-project)."""
    return RefineSettings(refine_shifts=False, threads=threads).replace(**changes)


def _names(pop: Population, wanted: list[str] | None, kind: str, have: dict[str, str]) -> list[str]:
    names = sorted(wanted or have)
    for n in names:
        if n not in have:
            raise InvalidInput(f"{kind} {n!r} is not in the population (have {sorted(have)})")
    return names


def reconstruct_population(repo: Repository, branch: str, executor: Executor, *, settings: RefineSettings | None = None,
                           sources: list[str] | None = None, species: list[str] | None = None, progress: Any = None,
                           author: str | None = None, message: str | None = None) -> ReconstructResult:
    """Reconstruct ``species`` (default all) from the items of ``sources`` (default all); one commit."""
    settings = settings or reconstruction_settings()
    if settings.refines_anything:
        raise InvalidInput("reconstruction settings must not refine anything")
    head = repo.head(branch)
    if head is None:
        raise InvalidInput(f"branch {branch!r} has no commits")
    pop = repo.population(head)
    names = _names(pop, species, "species", pop.species)
    src_names = _names(pop, sources, "data source", pop.sources)
    sp_hashes = {n: pop.species[n] for n in names}
    tasks = build_tasks(repo, pop, sp_hashes, settings, 1, src_names)
    if not tasks:
        raise InvalidInput("no item holds particles of the selected species")
    out = executor.run(tasks, progress=progress)
    torch.set_num_threads(settings.threads)  # bit-identical maps whatever the executor (see driver)
    recs, checks, counts, olds = {}, {}, {}, {}
    for n in names:
        sp = repo.species(sp_hashes[n])
        mask = repo.objects.get_array(sp.mask)
        rec = reconstruct_species(out.sums[n], sp.box, sp.pixel_size, mask, pad=settings.reconstruction_pad,
                                  wiener_fraction=settings.wiener_fraction)
        checks[n] = check_reconstruction(rec, mask, sp.pixel_size, name=n, reference=species_average(repo.objects, sp))
        recs[n], olds[n], counts[n] = rec, sp, out.sums[n].particles
    put = repo.objects.put_array
    new_species = dict(pop.species)
    for n in names:
        sp, rec = olds[n], recs[n]
        contributors = tuple(sorted({r.task.item_hash for r in out.results if n in r.particles}))
        resolution = float(rec.resolution) if np.isfinite(rec.resolution) else None
        new = replace(sp, half1=put(rec.half1), half2=put(rec.half2), fsc=put(rec.fsc), resolution=resolution,
                      contributors=contributors, metadata=species_metadata(sp.metadata, rec, put))
        new_species[n] = new.save(repo.objects)
    new_pop = replace(pop, species=new_species)
    op = {"name": "reconstruct", "species": names, "sources": src_names, "settings": settings.to_json(),
          "particles": counts, "checks": {n: c.to_json() for n, c in checks.items()}}
    res = ", ".join(f"{n} {recs[n].resolution:.2f} Å" for n in names)
    h = repo.commit(new_pop, message=message or f"reconstruct from current parameters: {res}", branch=branch,
                    operation=op, author=author, expected_head=head)
    return ReconstructResult(h, recs, checks, counts)
