"""Volume warp (tilt series) and doming (frame series) recovered from simulated data with the effect
injected by the simulator (analytic fields, not grids) and every other parameter at the truth."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mrepo.kernels.fsc import fsc
from mrepo.kernels.tilt_geometry import tilt_matrices
from mrepo.workers.api import ItemTask
from mrepo.workers.deformation import doming_defocus, volume_warp_displacement
from mrepo.workers.reconstruct import reconstruct_species
from mrepo.workers.refine_item import refine_item
from mrepo.workers.settings import RefineSettings
from tests.workers.simdata import build_repo, frames_sim, tilts_sim

torch.set_num_threads(1)


def _task(sr, settings: RefineSettings) -> ItemTask:
    pop = sr.repo.population()
    ih = sr.repo.source(pop.sources["sim"]).items[sr.item_key]
    return ItemTask(sr.repo.url, "sim", sr.item_key, ih, dict(pop.species), settings.to_json(), 1, 0)


def _fsc_vs_truth(sim, result) -> np.ndarray:
    """Mean over species of the FSC between the reconstruction and the true map, per shell."""
    curves = []
    for sp in sim.species:
        rec = reconstruct_species(result.sums[sp.spec.name], sp.spec.box, sim.truth.optics.pixel_size, sp.mask)
        avg = torch.from_numpy((rec.half1 + rec.half2) / 2)
        curves.append(fsc(avg, torch.from_numpy(sp.map), torch.from_numpy(sp.mask)).numpy())
    return np.mean(curves, 0)


def _volume_warp_residual_px(sim, result, sr) -> tuple[float, float]:
    """RMS over particles and tilts of the fitted minus true displacement: projected into each tilt's
    image (px), and in 3-D (px)."""
    t = sim.truth
    item = sr.repo.item(result.item_hash)
    nodes = torch.from_numpy(sr.repo.objects.get_array(item.models["volume_warp"]))
    coords = t.particles.coordinates[:, 0]
    time = t.pre_exposure / t.pre_exposure.max()
    n = len(time)
    fit = volume_warp_displacement(nodes, torch.from_numpy(np.repeat(coords[:, None], n, 1)),
                                   torch.from_numpy(t.volume_size_A), torch.from_numpy(time)).numpy()  # (P, n, 3)
    true = t.volume_deformation(coords, time).transpose(1, 0, 2)
    a = tilt_matrices(*(torch.from_numpy(np.deg2rad(x)) for x in (t.xtilt, t.ytilt, t.zrot))).numpy()
    err = np.einsum("iab,pib->pia", a, fit - true) / t.optics.pixel_size
    return float(np.sqrt((err[..., :2] ** 2).sum(-1).mean())), float(np.sqrt((err**2).sum(-1).mean()))


@pytest.mark.slow
def test_volume_warp_recovers_an_injected_deformation_and_improves_the_map():
    sim = tilts_sim(seed=3, n_particles=16, size=192, max_tilt=45.0, tilt_step=9.0, snr=2.0, warp_px=0.0, species_seed=7,
                    volume_warp_A=5.0)
    sr = build_repo(sim, truth=True, resolution=5.0)
    plain = refine_item(_task(sr, RefineSettings(refine_shifts=False)))
    settings = RefineSettings(refine_shifts=False, volume_warp=(3, 3, 2, 2), lbfgs_iterations=30)
    result = refine_item(_task(sr, settings))
    assert "volume_warp" not in sr.repo.item(plain.item_hash).models
    projected, full = _volume_warp_residual_px(sim, result, sr)
    true_px = np.abs(sim.truth.volume_deformation(sim.truth.particles.coordinates[:, 0], np.ones(1))).max() \
        / sim.truth.optics.pixel_size
    print(f"volume warp: true max {true_px:.2f} px; residual projected {projected:.3f} px, 3-D {full:.3f} px")
    assert true_px > 1.0
    assert projected <= 0.2
    f0, f1 = _fsc_vs_truth(sim, plain), _fsc_vs_truth(sim, result)
    assert f1[1:].mean() > f0[1:].mean()
    assert result.stats["target_after"] > result.stats["target_before"]


@pytest.mark.slow
def test_volume_warp_without_a_deformation_leaves_the_map_alone():
    sim = tilts_sim(seed=3, n_particles=16, size=192, max_tilt=45.0, tilt_step=9.0, snr=2.0, warp_px=0.0)
    sr = build_repo(sim, truth=True, resolution=5.0)
    plain = refine_item(_task(sr, RefineSettings(refine_shifts=False)))
    result = refine_item(_task(sr, RefineSettings(refine_shifts=False, volume_warp=(3, 3, 2, 2),
                                                  lbfgs_iterations=30)))
    projected, _ = _volume_warp_residual_px_zero(sr, result, sim)
    assert projected < 0.2
    f0, f1 = _fsc_vs_truth(sim, plain), _fsc_vs_truth(sim, result)
    assert np.abs(f1 - f0)[1:].max() < 0.02


def _volume_warp_residual_px_zero(sr, result, sim) -> tuple[float, float]:
    """RMS of the fitted displacement at the particles (the truth is zero), projected and 3-D, px."""
    t = sim.truth
    nodes = torch.from_numpy(sr.repo.objects.get_array(sr.repo.item(result.item_hash).models["volume_warp"]))
    coords = t.particles.coordinates[:, 0]
    time = t.pre_exposure / t.pre_exposure.max()
    fit = volume_warp_displacement(nodes, torch.from_numpy(np.repeat(coords[:, None], len(time), 1)),
                                   torch.from_numpy(t.volume_size_A), torch.from_numpy(time)).numpy()
    a = tilt_matrices(*(torch.from_numpy(np.deg2rad(x)) for x in (t.xtilt, t.ytilt, t.zrot))).numpy()
    err = np.einsum("iab,pib->pia", a, fit) / t.optics.pixel_size
    return float(np.sqrt((err[..., :2] ** 2).sum(-1).mean())), float(np.sqrt((err**2).sum(-1).mean()))


@pytest.mark.slow
def test_doming_recovers_the_injected_dome():
    """Frames with the simulator's dome (defocus grows at the centre during the exposure) and everything
    else at the truth except the per-frame height (the truth's reference height, frame 0): refining the
    doming grid brings each particle's per-frame defocus closer to the truth."""
    sim = frames_sim(seed=2, n_particles=16, n_frames=6, size=192, snr=2.0, doming_A=600.0, warp_px=0.0,
                     drift_px=0.0)
    sr = build_repo(sim, truth=True, resolution=5.0)
    settings = RefineSettings(refine_shifts=False, doming=(3, 3, 3), ctf_min_resolution=10.0, lbfgs_iterations=30)
    result = refine_item(_task(sr, settings))
    assert "doming" in result.stats["schedule"]["ctf"]
    t = sim.truth
    nodes = torch.from_numpy(sr.repo.objects.get_array(sr.repo.item(result.item_hash).models["doming"]))
    xy = t.particles.coordinates[:, :, :2] / t.optics.pixel_size  # (P, T, 2) px
    time = t.pre_exposure / t.pre_exposure.max()
    fit = doming_defocus(nodes, torch.from_numpy(xy), *t.image_size, torch.from_numpy(time)).numpy()
    true = t.particles.coordinates[:, :, 2] - t.particles.coordinates[:, :1, 2]  # dome change since frame 0
    err0 = np.sqrt(((true - true.mean()) ** 2).mean())
    err = np.sqrt((((fit - fit.mean()) - (true - true.mean())) ** 2).mean())
    print(f"doming: true rms {err0:.1f} Å, residual {err:.1f} Å")
    assert err < 0.5 * err0
