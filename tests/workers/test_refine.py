"""Refinement of one item, reconstruction, weights and the population loop, against simulator truth."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mrepo.graph import Commit
from mrepo.kernels.fsc import fsc
from mrepo.workers.api import ItemTask
from mrepo.workers.driver import refine_population
from mrepo.workers.executors import LocalExecutor
from mrepo.workers.reconstruct import reconstruct_species
from mrepo.workers.refine_item import refine_item
from mrepo.workers.settings import RefineSettings
from mrepo.workers.weights import fit_exposure_weights
from tests.workers.simdata import build_repo, frames_sim, tilts_sim

torch.set_num_threads(1)
OFF = RefineSettings(refine_shifts=False)


def _task(sr, settings: RefineSettings) -> ItemTask:
    pop = sr.repo.population()
    ih = sr.repo.source(pop.sources["sim"]).items[sr.item_key]
    return ItemTask(sr.repo.url, "sim", sr.item_key, ih, dict(pop.species), settings.to_json(), 1, 0)


def test_settings_round_trip_and_errors():
    s = RefineSettings(image_warp="3x3x5", refine_poses=True, temporal_samples=2)
    assert s.image_warp == (3, 3, 5)
    assert RefineSettings.from_json(s.to_json()) == s
    with pytest.raises(ValueError, match="unknown"):
        RefineSettings.from_json({"bogus": 1})
    with pytest.raises(ValueError, match="resolution_fraction"):
        RefineSettings(resolution_fraction=0)


def test_backprojection_with_true_parameters_recovers_the_map():
    sim = tilts_sim(snr=100.0)
    sr = build_repo(sim, truth=True)
    result = refine_item(_task(sr, OFF))
    assert set(result.sums) == set(sr.species)
    item = sr.repo.item(result.item_hash)
    assert set(item.refined_with) == set(sr.repo.population().species.values())
    for sp in sim.species:
        sums = result.sums[sp.spec.name]
        assert sums.particles == int((sim.truth.particles.species == sim.species.index(sp)).sum())
        rec = reconstruct_species(sums, sp.spec.box, sim.truth.optics.pixel_size, sp.mask)
        avg = torch.from_numpy((rec.half1 + rec.half2) / 2)
        curve = fsc(avg, torch.from_numpy(sp.map), torch.from_numpy(sp.mask)).numpy()
        assert curve[1:7].min() > 0.8  # to ~10 Å at 2 Å/px, box 32 (true geometry, high SNR)


def test_global_shift_recovery_frames():
    sim = frames_sim(snr=0.5)
    sr = build_repo(sim)
    settings = RefineSettings(refine_shifts=True, lbfgs_iterations=20, rounds=2)
    result = refine_item(_task(sr, settings))
    item = sr.repo.item(result.item_hash)
    shifts = sr.repo.objects.get_array(item.models["global_shifts"]) / sim.truth.optics.pixel_size
    err = shifts - sim.truth.global_shifts_px
    err0 = sim.initial.global_shifts_px - sim.truth.global_shifts_px
    rms = lambda d: float(np.sqrt(((d - d.mean(0)) ** 2).sum(-1).mean()))  # noqa: E731 (gauge-free)
    assert rms(err0) > 0.6
    assert rms(err) < 0.25
    assert result.stats["target_after"] > result.stats["target_before"]


def test_fit_exposure_weights_recovers_bfactors():
    freqs = np.linspace(0, 0.25, 33)
    b_true = np.array([0.0, 20.0, 60.0, 120.0])
    s_true = np.array([1.0, 0.9, 0.7, 0.5])
    base = 0.8 * np.exp(-30 * freqs)
    nc = s_true[:, None] * np.exp(-0.25 * b_true[:, None] * freqs**2) * base
    w = fit_exposure_weights(nc, freqs)
    assert np.allclose(w[:, 0], b_true, atol=3.0)
    assert np.allclose(w[:, 1], s_true, atol=0.02)


def test_refine_population_commits_one_iteration():
    sr = build_repo(frames_sim(n_particles=8, n_frames=4), resolution=12.0)
    head0 = sr.repo.head("main")
    commits = refine_population(sr.repo, "main", 1, OFF, LocalExecutor(use_cache=False))
    c = Commit.load(sr.repo.objects, commits[0])
    assert c.parents == (head0,)
    assert c.operation["name"] == "refine" and c.operation["iteration"] == 1
    assert RefineSettings.from_json(c.operation["settings"]) == OFF
    pop = sr.repo.population()
    item_hash = sr.repo.source(pop.sources["sim"]).items[sr.item_key]
    for h in pop.species.values():
        sp = sr.repo.species(h)
        assert sp.contributors == (item_hash,)
        assert sp.resolution is not None and 4.0 <= sp.resolution < 60
        assert sr.repo.objects.get_array(sp.fsc).shape == (sp.box // 2 + 1,)


def test_refinement_resolution_ramps_from_the_first_iteration_fraction():
    from mrepo.graph import Species
    from mrepo.workers.references import refinement_resolution

    sp = Species("a", 100.0, "C1", 1.5, 48, "0" * 64, "0" * 64, "0" * 64, "0" * 64, resolution=6.0)
    s = RefineSettings(resolution_fraction=0.6, resolution_ramp=3)
    got = [refinement_resolution(sp, s, it) for it in (1, 2, 3, 4, 9)]
    # frequency fraction 0.6, 0.733, 0.867, 1, 1 of 1/6 Å⁻¹
    assert np.allclose(got, [6 / 0.6, 6 / (0.6 + 0.4 / 3), 6 / (0.6 + 0.8 / 3), 6.0, 6.0])
    assert refinement_resolution(Species("b", 100.0, "C1", 1.5, 48, "0" * 64, "0" * 64, "0" * 64, "0" * 64,
                                         resolution=2.0), s, 9) == 3.0  # never beyond Nyquist
