"""Injected volume deformation (tilt series) and damage model (frames and tilts): ground truth written to
truth.json only, rendered analytically and independently of the refinement's grids (issue 15)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
from typer.testing import CliRunner

from mrepo.cli.sim import app
from mrepo.kernels.tilt_geometry import tilt_matrices
from mrepo.sim import FrameSeriesConfig, TiltSeriesConfig, simulate_frame_series, simulate_tilt_series
from mrepo.sim.deformation import VolumeDeformation, measured_damage
from mrepo.sim.tilts import render_tilts

torch.set_num_threads(1)
SMALL = TiltSeriesConfig(image_size=(128, 128), n_particles=5, box=40, max_tilt=40.0, tilt_step=10.0, snr=0.5,
                         contrast="light")


def test_volume_deformation_is_zero_mean_grows_with_exposure_and_matches_its_formula():
    vol = np.array([300.0, 240.0, 150.0])
    d = VolumeDeformation(np.diag([3.0, -2.0, 1.0]), 4.0, vol)
    pts = np.array([[150.0, 120.0, 75.0], [300.0, 120.0, 75.0]])
    out = d(pts, np.array([0.0, 0.5, 1.0]))
    assert out.shape == (3, 2, 3) and np.all(out[0] == 0)
    np.testing.assert_allclose(out[2, 0], [0.0, 0.0, -4.0 / 6.0])  # centre: only the bend's offset
    np.testing.assert_allclose(out[2, 1], [1.5, 0.0, 4.0 * (0.25 - 1.0 / 6.0)])
    np.testing.assert_allclose(out[1], out[2] / 2)
    rng = np.random.default_rng(0)
    grid = rng.uniform(0, 1, (20000, 3)) * vol
    assert np.abs(d(grid, np.ones(1))[0].mean(0)).max() < 0.05  # no rigid shift of the tomogram


def test_injected_volume_warp_moves_each_tilts_particles_by_the_projected_displacement():
    """Same seed with and without the effect: positions differ by (A_i d(c, t_i))_xy / pixel and the
    defocus by hand * (A_i d)_z, t_i = pre-exposure over its largest (no image warp); nothing else changes."""
    cfg = dataclasses.replace(SMALL, warp_px=0.0)  # image warps are evaluated where particles land
    plain = simulate_tilt_series(cfg, 4)
    warped = simulate_tilt_series(dataclasses.replace(cfg, volume_warp_A=4.0), 4)
    tp, tw = plain.truth, warped.truth
    assert tp.volume_deformation is None and tw.volume_deformation is not None
    np.testing.assert_array_equal(tp.shifts_A, tw.shifts_A)
    t = tw.pre_exposure / tw.pre_exposure.max()
    disp = tw.volume_deformation(tw.particles.coordinates[:, 0], t)  # (I, N, 3)
    a = tilt_matrices(*(torch.from_numpy(np.deg2rad(x)) for x in (tw.xtilt, tw.ytilt, tw.zrot))).numpy()
    moved = np.einsum("iab,inb->ina", a, disp)  # (I, N, 3)
    pix = tw.optics.pixel_size
    np.testing.assert_allclose(tw.plan.positions_px - tp.plan.positions_px, moved[..., :2].transpose(1, 0, 2) / pix,
                               atol=1e-9)
    np.testing.assert_allclose(tw.plan.defocus_u - tp.plan.defocus_u, tw.handedness * moved[..., 2].T, atol=1e-9)
    assert np.abs(disp).max() > 1.0
    assert not np.allclose(warped.data, plain.data)
    np.testing.assert_allclose(render_tilts(tw, warped.species, cfg.pad), warped.data - warped.noise, atol=1e-4)


def test_measured_damage_differs_from_the_dose_rule_and_is_rendered():
    pre, dose = np.arange(20) * 3.0, np.full(20, 3.0)
    dmg = measured_damage(pre, dose)
    assert dmg.bfactors_A2[0] - 4 * (pre[0] + 1.5) > 50 and dmg.scales[-1] < dmg.scales[0] <= 1.0
    assert dmg.bfactors_A2[1] < dmg.bfactors_A2[0]  # the blurred first exposure is worse than the next
    assert 4 * (pre[-1] + 1.5) - dmg.bfactors_A2[-1] > 80  # saturating, not linear in exposure
    plain = simulate_tilt_series(SMALL, 5)
    damaged = simulate_tilt_series(dataclasses.replace(SMALL, damage="measured"), 5)
    np.testing.assert_allclose(damaged.truth.plan.exposure, damaged.truth.damage.bfactors_A2 / 4)
    np.testing.assert_allclose(damaged.truth.plan.scale,
                               np.cos(np.deg2rad(damaged.truth.ytilt)) * damaged.truth.damage.scales)
    assert not np.allclose(damaged.data, plain.data)
    fr = simulate_frame_series(FrameSeriesConfig(image_size=(96, 96), n_frames=3, n_particles=3, box=32,
                                                 contrast="light", damage="measured"), 1)
    assert fr.truth.damage is not None and len(fr.truth.damage.scales) == 3


def test_cli_writes_volume_deformation_and_damage_to_truth_only(tmp_path: Path):
    out = tmp_path / "t"
    res = CliRunner().invoke(app, ["tilts", "--out", str(out), "--seed", "2", "--particles", "3", "--size", "96",
                                   "--box", "32", "--max-tilt", "20", "--step", "10", "--volume-warp", "3",
                                   "--damage", "measured", "--contrast", "light"])
    assert res.exit_code == 0, res.output
    item = json.loads((out / "truth.json").read_text())["items"][0]
    assert np.array(item["volume_deformation"]["matrix_A"]).shape == (3, 3)
    assert len(item["damage"]["bfactor_A2"]) == 5 and len(item["damage"]["scale"]) == 5
    initial = (out / "initial.json").read_text()
    assert "volume_deformation" not in initial and "bfactor_A2" not in initial
    bad = CliRunner().invoke(app, ["tilts", "--out", str(tmp_path / "x"), "--damage", "strong"])
    assert bad.exit_code == 2 and "--damage must be 'dose' or 'measured'" in bad.output
    assert not (tmp_path / "x").exists()
