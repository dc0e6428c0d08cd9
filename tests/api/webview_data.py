"""A repository a scientist would browse: a simulated frame series imported (raw data stored),
two refinement-like commits of one species with FSC curves and a filtered map, and a pull
request whose check finds collisions (a second species picked on the same particles)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter
from typer.testing import CliRunner

from mrepo.graph import ParticleTable, Repository
from mrepo.graph.pulls import check_pull, open_pull
from mrepo.io.sim_import import import_sim
from mrepo.store import array_ref


def simulate(out: Path) -> Path:
    from mrepo.cli.sim import app

    res = CliRunner().invoke(app, ["frames", "--out", str(out), "--seed", "3", "--particles", "6", "--frames", "3",
                                   "--size", "160", "--box", "40", "--species", "1"])
    assert res.exit_code == 0, res.output
    return out


def fsc_like(box: int, pixel: float, resolution: float) -> np.ndarray:
    """A smooth FSC falling through 0.143 at ``resolution`` Å (shells 0 .. box // 2)."""
    f = np.arange(box // 2 + 1) / (box * pixel)
    f0 = 1.0 / resolution
    return (1.0 / (1.0 + np.exp((f - f0) / (0.08 * f0))) * 0.95 + 0.02).astype(np.float32)


def build(repo: Repository, sim_folder: Path) -> dict[str, str]:
    """Populate ``repo``; returns the names of what the page should show."""
    import_sim(repo, sim_folder, copy=True)
    pop = repo.population()
    name = sorted(pop.species)[0]
    sp = repo.species(pop.species[name])
    half1 = repo.objects.get_array(sp.half1)
    for iteration, res in ((1, 9.0), (2, 6.5)):
        pix = sp.pixel_size
        curve = fsc_like(sp.box, pix, res)
        unmasked = np.clip(curve - 0.1, -0.05, 1).astype(np.float32)
        filtered = gaussian_filter(half1, 1.0).astype(np.float32)
        sp = dataclasses.replace(sp, resolution=res, fsc=repo.objects.put_array(curve), metadata={
            **sp.metadata, "filtered": array_ref(repo.objects.put_array(filtered)),
            "fsc_curves": {"unmasked": array_ref(repo.objects.put_array(unmasked))}})
        pop = dataclasses.replace(pop, species={**pop.species, name: sp.save(repo.objects)})
        repo.commit(pop, message=f"refine iteration {iteration}", operation={"name": "refine", "iteration": iteration})
    # a second species picked on the same particles (new ids) on a branch, proposed by a pull request
    repo.create_branch("lab2")
    table = repo.particles(sp.particles)
    twin = ParticleTable.build(table.ids + 10 ** 9, table.item_keys(), table.coordinates, table.angles, table.half)
    other = dataclasses.replace(sp, name="state2", particles=twin.save(repo.objects))
    pop2 = dataclasses.replace(pop, species={**pop.species, "state2": other.save(repo.objects)})
    repo.commit(pop2, message="add state2", branch="lab2")
    pr = open_pull(repo, "lab2", "main", "state2 from lab 2")
    check_pull(repo, pr.number)
    return {"species": name, "second": "state2", "pull": str(pr.number)}
