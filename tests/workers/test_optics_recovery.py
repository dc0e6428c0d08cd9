"""Optics refinement against simulator truth (issue 15): with magnification anisotropy, beam tilt and
trefoil injected by the simulator (its own rendering path, mrepo.sim.optics) and every other parameter
at the truth, M's target peaks at the injected values and refinement recovers them; without the effect
the refined optics stay at the identity / zero. Recovered values are written to the item's imaging
under RELION's keys."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mrepo.graph import Item
from mrepo.sim import FrameSeriesConfig, Optics, simulate_frame_series
from mrepo.sim.optics import SimAberrations
from mrepo.workers.geometry import Parameters
from mrepo.workers.references import load_references_from
from mrepo.workers.refine_item import _Context, refine_item
from mrepo.workers.settings import RefineSettings
from tests.workers.simdata import build_population, small_species
from tests.workers.test_recovery import _task

torch.set_num_threads(1)
INJECTED = SimAberrations(mag_matrix=((1.005, 0.002), (0.002, 0.995)), beam_tilt_mrad=(0.5, -0.3), trefoil=(20.0, 0.0))
#: INJECTED in the refined optics' units (mag ‰, beam tilt mrad, trefoil in units of 10)
MAG_TILT_TRUTH = {"mag": [5.0, 2.0], "beam_tilt": [0.5, -0.3], "trefoil": [2.0, 0.0]}


def _oracle_repo(ab: SimAberrations, n: int = 10, seed: int = 3):
    cfg = FrameSeriesConfig(image_size=(192, 192), n_frames=2, optics=Optics(pixel_size=1.5),
                            species=small_species(48, 1.5)[:1], box=48, n_particles=n, snr=1.0, pad=3,
                            defocus=10000.0, contrast="light", aberrations=ab)
    return build_population([simulate_frame_series(cfg, seed)], truth="oracle", resolution=3.5)


def _scorer(sr, settings: RefineSettings, task=None):  # noqa: ANN001, ANN202
    """(params, score): the item's parameters at zero and M's target at their current values (no gradients)."""
    task = task or _task(sr, settings)
    ctx = _Context(task, settings, sr.repo.objects, load_references_from(sr.repo.objects, task.species, settings))
    params = Parameters.zeros(ctx.model, ctx.particles, None)
    subsets = ctx.subsets(params)

    def score() -> float:
        with torch.no_grad():
            return float(ctx.sums(subsets, params, ctf_frozen=False).target())

    return params, score


def _mag_tilt_target(sr):  # noqa: ANN001, ANN202
    """target(group, index, value): M's target with every injected optics group at its truth but one value."""
    params, score = _scorer(sr, RefineSettings(refine_mag=True, ctf_zernike3=True, resolution_fraction=1.0))

    def target(group: str, index: int, value: float) -> float:
        for g, v in MAG_TILT_TRUTH.items():
            params.optics[g].copy_(torch.tensor(v, dtype=torch.float64))
        params.optics[group][index] = value
        return score()

    return target


def test_target_peaks_at_the_injected_magnification_and_beam_tilt():
    """Simulator and refiner agree on the conventions of M (frequencies), beam tilt (x, y) and their signs."""
    target = _mag_tilt_target(_oracle_repo(INJECTED))
    for group, index, grid in (("mag", 0, [0.0, 2.5, 5.0, 7.5, 10.0]), ("mag", 1, [-2.0, 0.0, 2.0, 4.0]),
                               ("beam_tilt", 0, [0.0, 0.25, 0.5, 0.75]),
                               ("beam_tilt", 1, [-0.6, -0.3, 0.0, 0.3]), ("trefoil", 0, [0.0, 2.0, 4.0])):
        scores = [target(group, index, v) for v in grid]
        assert grid[int(np.argmax(scores))] == MAG_TILT_TRUTH[group][index], (group, index, scores)


@pytest.mark.slow
def test_refinement_recovers_injected_optics_and_leaves_clean_data_alone():
    settings = RefineSettings(refine_shifts=False, refine_mag=True, ctf_zernike3=True, resolution_fraction=1.0,
                              lbfgs_iterations=15)
    sr = _oracle_repo(INJECTED, n=12)
    r = refine_item(_task(sr, settings))
    im = Item.load(sr.repo.objects, r.item_hash).imaging
    assert np.abs(np.asarray(im["mag_matrix"]) - np.asarray(INJECTED.mag_matrix)).max() < 1e-3  # 0.1 %
    assert np.abs(np.asarray(im["beam_tilt"]) - np.asarray(INJECTED.beam_tilt_mrad)).max() < 0.05  # mrad
    assert abs(im["odd_zernike"][2] - 20.0) < 5.0 and len(im["odd_zernike"]) == 6
    clean = _oracle_repo(SimAberrations(), n=12)
    r = refine_item(_task(clean, settings))
    im = Item.load(clean.repo.objects, r.item_hash).imaging
    assert np.abs(np.asarray(im.get("mag_matrix", np.eye(2))) - np.eye(2)).max() < 1e-3
    assert np.abs(np.asarray(im.get("beam_tilt", [0.0, 0.0]))).max() < 0.05


def test_target_peaks_at_the_true_cs_and_phase_shift():
    """--ctf-cs and --ctf-phase: data simulated with Cs 2.9 mm and a 30° phase plate, the item told Cs 2.7 mm
    and no phase shift; the target peaks at ΔCs = +0.2 mm and +30°."""
    import dataclasses

    from mrepo.graph import Item

    cfg = FrameSeriesConfig(image_size=(192, 192), n_frames=2, optics=Optics(pixel_size=1.5, cs_mm=2.9),
                            species=small_species(48, 1.5)[:1], box=48, n_particles=10, snr=1.0, pad=3,
                            defocus=10000.0, contrast="light", aberrations=SimAberrations(phase_shift_deg=30.0))
    sr = build_population([simulate_frame_series(cfg, 5)], truth="oracle", resolution=3.5)
    settings = RefineSettings(ctf_cs=True, ctf_phase=True, resolution_fraction=1.0)
    task = _task(sr, settings)
    item = Item.load(sr.repo.objects, task.item_hash)
    told = dataclasses.replace(item, imaging={**item.imaging, "cs": 2.7}).save(sr.repo.objects)
    params, score = _scorer(sr, settings, dataclasses.replace(task, item_hash=told))

    def target(cs: float, phase: float) -> float:
        params.optics["cs"][0], params.optics["phase"][0] = cs, phase
        return score()

    cs_grid = [0.0, 1.0, 2.0, 3.0, 4.0]  # units of 0.1 mm
    assert cs_grid[int(np.argmax([target(c, 30.0) for c in cs_grid]))] == 2.0
    phase_grid = [0.0, 15.0, 30.0, 45.0]
    assert phase_grid[int(np.argmax([target(2.0, p) for p in phase_grid]))] == 30.0


@pytest.mark.slow
def test_tilt_series_target_peaks_at_the_injected_magnification_and_beam_tilt():
    """The tilt-series geometry (poses through the stage matrices) carries the magnification as frames do."""
    from mrepo.sim import TiltSeriesConfig, simulate_tilt_series

    cfg = TiltSeriesConfig(image_size=(160, 160), volume_depth_px=64, optics=Optics(pixel_size=1.5),
                           species=small_species(48, 1.5)[:1], box=48, n_particles=6, max_tilt=20.0, tilt_step=10.0,
                           snr=1.0, pad=3, slab_thickness=40.0, defocus=10000.0, contrast="light",
                           aberrations=INJECTED)
    target = _mag_tilt_target(build_population([simulate_tilt_series(cfg, 2)], truth="oracle", resolution=3.5))
    for group, index, grid in (("mag", 0, [-5.0, 5.0, 15.0]), ("mag", 1, [-8.0, 2.0, 12.0]),
                               ("beam_tilt", 0, [0.0, 0.5, 1.0]), ("beam_tilt", 1, [-0.8, -0.3, 0.2])):
        scores = [target(group, index, v) for v in grid]
        assert grid[int(np.argmax(scores))] == MAG_TILT_TRUTH[group][index], (group, index, scores)


def test_target_peaks_at_the_injected_four_fold_astigmatism():
    """--ctf-zernike4: four-fold astigmatism Z(4,4) = 150 rad injected (even Zernike 8) is where the target peaks."""
    cfg = FrameSeriesConfig(image_size=(192, 192), n_frames=2, optics=Optics(pixel_size=1.5),
                            species=small_species(48, 1.5)[:1], box=48, n_particles=10, snr=1.0, pad=3,
                            defocus=10000.0, contrast="light", aberrations=SimAberrations(four_fold=(0.0, 150.0)))
    sr = build_population([simulate_frame_series(cfg, 6)], truth="oracle", resolution=3.5)
    params, score = _scorer(sr, RefineSettings(ctf_zernike4=True, resolution_fraction=1.0))

    def target(index: int, value: float) -> float:
        params.optics["zernike4"].zero_()
        params.optics["zernike4"][4] = 1.5
        params.optics["zernike4"][index] = value
        return score()

    grid = [0.0, 0.75, 1.5, 2.25, 3.0]  # units of 100 rad
    assert grid[int(np.argmax([target(4, v) for v in grid]))] == 1.5
    other = [-1.5, 0.0, 1.5]  # Z(-4,4) was not injected
    assert other[int(np.argmax([target(0, v) for v in other]))] == 0.0


@pytest.mark.slow
def test_refinement_recovers_injected_four_fold_astigmatism():
    """--ctf-zernike4 refinement (2 × 15 L-BFGS steps) recovers Z(4,4) = 150 rad (bench_optics.py's item 13)."""
    cfg = FrameSeriesConfig(image_size=(192, 192), n_frames=2, optics=Optics(pixel_size=1.5),
                            species=small_species(48, 1.5)[:1], box=48, n_particles=16, snr=1.0, pad=3,
                            defocus=10000.0, species_seed=7, contrast="light",
                            aberrations=SimAberrations(four_fold=(0.0, 150.0)))
    sr = build_population([simulate_frame_series(cfg, 13)], truth="oracle", resolution=3.5)
    settings = RefineSettings(refine_shifts=False, ctf_zernike4=True, resolution_fraction=1.0, lbfgs_iterations=15)
    even = Item.load(sr.repo.objects, refine_item(_task(sr, settings)).item_hash).imaging["even_zernike"]
    assert abs(even[8] - 150.0) < 15.0 and abs(even[4]) < 15.0, even


def test_even_zernike_units_make_the_target_equally_curved():
    """The zernike4 units (OPTICS_UNITS) bring M's target curvature along the five even coefficients within
    3× of each other (one unit of 100 rad for all five: 3 · 10⁴, and L-BFGS stalled along Z(±4,4))."""
    cfg = FrameSeriesConfig(image_size=(192, 192), n_frames=2, optics=Optics(pixel_size=1.5),
                            species=small_species(48, 1.5)[:1], box=48, n_particles=10, snr=1.0, pad=3,
                            defocus=10000.0, species_seed=7, contrast="light",
                            aberrations=SimAberrations(four_fold=(0.0, 150.0)))
    sr = build_population([simulate_frame_series(cfg, 13)], truth="oracle", resolution=3.5)
    params, score = _scorer(sr, RefineSettings(ctf_zernike4=True, resolution_fraction=1.0))

    def at(index: int, value: float) -> float:
        params.optics["zernike4"].zero_()
        params.optics["zernike4"][index] = value
        return score()

    centre = at(0, 0.0)
    curvature = np.array([-(at(j, -0.1) - 2 * centre + at(j, 0.1)) / 0.01 for j in range(5)])
    assert np.all(curvature > 0) and curvature.max() / curvature.min() < 3.0, curvature
