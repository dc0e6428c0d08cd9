"""Frame-series simulator: determinism, truth reproduces data, CTF/exposure, perturbations."""

from __future__ import annotations

import hashlib
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from mrepo.sim import FrameSeriesConfig, Optics, SpeciesSpec, render_frames, simulate_frame_series, write_dataset

torch.set_num_threads(1)
SMALL = FrameSeriesConfig(image_size=(160, 128), n_frames=5, n_particles=8, box=40, snr=0.5, contrast="light")


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_different_seed_differs(tmp_path: Path) -> None:
    a = _digest(write_dataset(simulate_frame_series(SMALL, 7), tmp_path / "a").parent)
    b = _digest(write_dataset(simulate_frame_series(SMALL, 7), tmp_path / "b").parent)
    c = _digest(write_dataset(simulate_frame_series(SMALL, 8), tmp_path / "c").parent)
    assert a == b
    assert a["truth.json"] != c["truth.json"] and a["frames/fs0007.mrc"] != c.get("frames/fs0008.mrc")


def test_truth_rerenders_data_up_to_the_added_noise() -> None:
    sim = simulate_frame_series(SMALL, 3)
    clean = render_frames(sim.truth, sim.species, SMALL.pad)
    residual = sim.data.astype(np.float64) - clean
    assert np.abs(residual - sim.noise).max() < 1e-5 * np.abs(sim.data).max()
    assert np.isclose(sim.noise.std(), sim.truth.noise_sigma, rtol=0.02)
    assert np.abs(clean).max() > 0


def test_positions_do_not_overlap_and_motion_is_zero_at_frame_0() -> None:
    sim = simulate_frame_series(replace(SMALL, n_particles=12), 4)
    c = sim.truth.particles.coordinates[:, 0, :2]
    radii = np.array([sim.species[k].spec.diameter / 2 for k in sim.truth.particles.species])
    d = np.linalg.norm(c[:, None] - c[None], axis=-1)
    off = ~np.eye(len(c), dtype=bool)
    assert np.all(d[off] >= (radii[:, None] + radii[None])[off] - 1e-9)
    np.testing.assert_allclose(sim.truth.global_shifts_px[0], 0.0, atol=1e-12)
    z = sim.truth.particles.coordinates[..., 2]
    np.testing.assert_allclose(z[:, 0], sim.truth.ice_z_A)  # dome starts flat
    assert np.all(np.abs(sim.truth.ice_z_A) <= SMALL.ice_thickness / 2)


def _radial_power(img: np.ndarray, pix: float, nbins: int) -> tuple[np.ndarray, np.ndarray]:
    f = np.abs(np.fft.rfft2(img)) ** 2
    k = np.sqrt(np.add.outer(np.fft.fftfreq(img.shape[0], pix) ** 2, np.fft.rfftfreq(img.shape[1], pix) ** 2))
    edges = np.linspace(0, 0.5 / pix, nbins + 1)
    idx = np.digitize(k.ravel(), edges) - 1
    power = np.bincount(idx, f.ravel(), minlength=nbins + 1)[:nbins] / np.maximum(np.bincount(idx, minlength=nbins + 1)[:nbins], 1)
    return 0.5 * (edges[1:] + edges[:-1]), power


def _single_particle(seed: int) -> tuple:
    cfg = FrameSeriesConfig(
        image_size=(192, 192), n_frames=6, n_particles=1, box=48, astigmatism=0.0, ice_thickness=0.0,
        doming_A=0.0, warp_px=0.0, drift_px=0.0, defocus=12000.0, dose_per_frame=4.0,
        species=(SpeciesSpec("ball", 50.0, "C1", 900, 48),),
    )
    sim = simulate_frame_series(cfg, seed)
    return cfg, sim, render_frames(sim.truth, sim.species, cfg.pad)


def test_ctf_zeros_at_predicted_frequencies() -> None:
    cfg, sim, clean = _single_particle(11)
    o: Optics = cfg.optics
    lam = 12.2643247 / math.sqrt(o.voltage_kv * 1e3 * (1 + 0.978466e-6 * o.voltage_kv * 1e3))  # independent
    k, power = _radial_power(clean[0], o.pixel_size, 96)
    amp = math.atan(o.amplitude_contrast / math.sqrt(1 - o.amplitude_contrast**2))
    gamma = math.pi * lam * cfg.defocus * k**2 - 0.5 * math.pi * o.cs_mm * 1e7 * lam**3 * k**4 + amp
    checked = 0
    for n in range(1, 5):  # n-th zero and the maximum after it
        kz = k[np.argmin(np.abs(gamma - n * math.pi))]
        km = k[np.argmin(np.abs(gamma - (n + 0.5) * math.pi))]
        pz, pm = power[np.searchsorted(k, kz)], power[np.searchsorted(k, km)]
        assert pz < 0.1 * pm, (n, kz, pz, pm)
        checked += 1
    assert checked == 4


def test_exposure_weighting_decays_high_frequencies() -> None:
    cfg, sim, clean = _single_particle(12)
    k, p0 = _radial_power(clean[0], cfg.optics.pixel_size, 48)
    _, p5 = _radial_power(clean[5], cfg.optics.pixel_size, 48)
    exposure = sim.truth.pre_exposure + sim.truth.dose / 2
    expected = np.exp(-2 * (exposure[5] - exposure[0]) * k**2)
    sel = (k > 0.05) & (k < 0.25) & (p0 > 0.05 * p0[k > 0.05].max())
    np.testing.assert_allclose(p5[sel] / p0[sel], expected[sel], rtol=0.05)


def test_initial_parameters_differ_by_configured_magnitudes() -> None:
    sim = simulate_frame_series(replace(SMALL, image_size=(320, 320), n_particles=40, n_frames=10, box=32,
                                        species=(SpeciesSpec("s", 30.0, "C1", 120, 32),)), 5)
    t, i, pert = sim.truth, sim.initial, SMALL.perturbation
    ds = (i.global_shifts_px - t.global_shifts_px).ravel()
    assert 0.6 * pert.shift_px < ds.std() < 1.5 * pert.shift_px
    dxy = (i.particles.coordinates[:, 0, :2] - t.particles.coordinates[:, 0, :2]) / sim.truth.optics.pixel_size
    assert 0.6 * pert.position_px < dxy.std() < 1.5 * pert.position_px
    r_t = Rotation.from_euler("ZYZ", t.particles.angles[:, 0], degrees=True)
    r_i = Rotation.from_euler("ZYZ", i.particles.angles[:, 0], degrees=True)
    err = np.rad2deg((r_t.inv() * r_i).magnitude())
    assert np.all(err >= pert.pose_deg[0] - 1e-6) and np.all(err <= pert.pose_deg[1] + 1e-6)
    assert 0 < abs(i.defocus_u - t.defocus_u) < 5 * pert.defocus_A
    np.testing.assert_array_equal(i.particles.coordinates[:, 0, 2], 0.0)


def test_bad_config_raises() -> None:
    with pytest.raises(ValueError, match="n_frames"):
        simulate_frame_series(replace(SMALL, n_frames=1), 0)
    with pytest.raises(ValueError, match="snr"):
        simulate_frame_series(replace(SMALL, snr=0.0), 0)
    with pytest.raises(ValueError, match="non-overlapping"):
        simulate_frame_series(replace(SMALL, n_particles=200), 0)
