"""Injected optics of the simulator (issue 15 ground truth): anisotropic magnification rendered in real
space, beam tilt and trefoil as the simulator's own phase, checked against analytic moments and
against RELION's definitions (mrepo.kernels.aberrations); truth written to truth.json only."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from typer.testing import CliRunner

from mrepo.cli import app
from mrepo.kernels.aberrations import insert_beam_tilt, zernike_phase
from mrepo.kernels.ctf import ctf_at, ctf_phase, frequency_grid_2d
from mrepo.kernels.rotations import euler_to_matrix
from mrepo.sim.atoms import PseudoAtomicModel
from mrepo.sim.optics import SimAberrations
from mrepo.sim.render import Optics, apply_ctf, project_atoms

torch.set_num_threads(1)


def _moments(img: np.ndarray, pixel: float) -> np.ndarray:
    """Mass-weighted second-moment matrix (x, y) about the centroid (Å²)."""
    n = img.shape[0]
    g = (np.arange(n) - n // 2) * pixel
    yy, xx = np.meshgrid(g, g, indexing="ij")
    w = img / img.sum()
    cx, cy = (w * xx).sum(), (w * yy).sum()
    dx, dy = xx - cx, yy - cy
    return np.array([[(w * dx * dx).sum(), (w * dx * dy).sum()], [(w * dx * dy).sum(), (w * dy * dy).sum()]])


def test_magnification_scales_the_image_moments_as_m_transpose_sigma_m():
    """image(r) = p(M^-T r)  =>  Σ_image = M^T Σ_p M (exact for any density)."""
    rng = np.random.default_rng(0)
    atoms = PseudoAtomicModel(rng.normal(scale=6.0, size=(40, 3)), np.full(40, 1.5), rng.uniform(0.5, 1.5, 40),
                              30.0, "C1")
    rot = euler_to_matrix(torch.tensor([[0.3, 1.1, -0.4]], dtype=torch.float64))
    off = torch.tensor([[0.4, -0.3]], dtype=torch.float64)
    m = np.array([[1.03, 0.02], [-0.01, 0.97]])
    ab = SimAberrations(mag_matrix=tuple(map(tuple, m)))
    plain = project_atoms(atoms, rot, off, 96, 1.0)[0].numpy()
    distorted = project_atoms(atoms, rot, off, 96, 1.0, distortion=ab.distortion())[0].numpy()
    np.testing.assert_allclose(_moments(distorted, 1.0), m.T @ _moments(plain, 1.0) @ m, rtol=2e-3, atol=1e-3)
    # identity distortion renders exactly what the separable path renders
    same = project_atoms(atoms, rot, off, 96, 1.0, distortion=np.eye(2))[0].numpy()
    np.testing.assert_allclose(same, plain, rtol=1e-10, atol=1e-12)


def test_injected_phases_follow_relions_definitions():
    """CTF at M k times exp(iφ(M k)) with φ RELION's insertTilt + odd Zernike (all but the rfft Nyquist column)."""
    opt = Optics(pixel_size=1.5)
    img = torch.from_numpy(np.random.default_rng(1).normal(size=(1, 64, 64)))
    du, dv, ang = torch.tensor([10000.0]), torch.tensor([9800.0]), torch.tensor([0.3])
    ab = SimAberrations(mag_matrix=((1.01, 0.003), (-0.002, 0.995)), beam_tilt_mrad=(0.5, -0.3), trefoil=(20.0, -10.0),
                        four_fold=(300.0, -200.0))
    out = torch.fft.rfft2(apply_ctf(img, opt, du, dv, ang, torch.tensor([0.0]), torch.tensor([1.0]), ab))[0]
    k = frequency_grid_2d((64, 64), 1.5, dtype=torch.float64)
    mk = k @ torch.tensor(ab.mag_matrix, dtype=torch.float64).T
    phi = zernike_phase(mk, insert_beam_tilt([0, 0, 20.0, 0, 0, -10.0], 0.5, -0.3, opt.cs_mm, opt.voltage_kv), odd=True)
    even = zernike_phase(mk, [0, 0, 0, 0, 300.0, 0, 0, 0, -200.0], odd=False)
    gamma = ctf_phase(mk, defocus_u=du[0], defocus_v=dv[0], astigmatism_angle=ang[0], voltage_kv=opt.voltage_kv,
                      cs_mm=opt.cs_mm, amplitude_contrast=opt.amplitude_contrast)
    ctf = torch.sin(gamma - even)  # RELION: -sin(γ_R + offset) with γ_R = -γ
    want = torch.fft.rfft2(img)[0] * ctf * torch.polar(torch.ones_like(phi), phi)
    # the Nyquist row and column (|kx| or |ky| = 1/3 Å⁻¹) cannot hold an odd phase in the transform of a real image
    keep = torch.ones(64, 33, dtype=torch.bool)
    keep[32, :], keep[:, 32] = False, False
    torch.testing.assert_close(out[keep], want[keep], rtol=1e-9, atol=1e-9)
    # without aberrations the filter is the plain CTF x damage weight
    plain = torch.fft.rfft2(apply_ctf(img, opt, du, dv, ang, torch.tensor([2.0]), torch.tensor([0.9])))[0]
    ctf = ctf_at(k, defocus_u=du[0], defocus_v=dv[0], astigmatism_angle=ang[0], voltage_kv=opt.voltage_kv,
                 cs_mm=opt.cs_mm, amplitude_contrast=opt.amplitude_contrast, bfactor=8.0, scale=0.9)
    torch.testing.assert_close(plain[keep], (torch.fft.rfft2(img)[0] * ctf)[keep], rtol=1e-7, atol=1e-6)  # scale: float32


def test_sim_frames_cli_writes_injected_optics_to_the_truth_only(tmp_path: Path):
    out = tmp_path / "f"
    res = CliRunner().invoke(app, ["sim", "frames", "--out", str(out), "--seed", "2", "--particles", "3",
                                   "--frames", "2", "--size", "96", "--box", "32", "--mag-matrix", "1.01,0,0,0.995",
                                   "--beam-tilt", "0.5,-0.3", "--trefoil", "20,0"])
    assert res.exit_code == 0, res.output
    truth = json.loads((out / "truth.json").read_text())["items"][0]["aberrations"]
    assert truth["mag_matrix"] == [[1.01, 0.0], [0.0, 0.995]] and truth["beam_tilt"] == [0.5, -0.3]
    assert truth["odd_zernike"] == [0.0, 0.0, 20.0, 0.0, 0.0, 0.0]
    assert "aberrations" not in (out / "initial.json").read_text()
    # without the options the truth has no aberrations entry
    plain = tmp_path / "p"
    res = CliRunner().invoke(app, ["sim", "frames", "--out", str(plain), "--seed", "2", "--particles", "3",
                                   "--frames", "2", "--size", "96", "--box", "32"])
    assert res.exit_code == 0 and "aberrations" not in json.loads((plain / "truth.json").read_text())["items"][0]


def test_sim_frames_cli_refuses_bad_optics_in_one_line(tmp_path: Path):
    for args, needle in ((["--mag-matrix", "1.01,0,0"], "--mag-matrix '1.01,0,0': need 4"),
                         (["--beam-tilt", "0.5,x"], "--beam-tilt '0.5,x': need 2"),
                         (["--mag-matrix", "3,0,0,3"], "--mag-matrix '3,0,0,3'")):
        out = tmp_path / "bad"
        res = CliRunner().invoke(app, ["sim", "frames", "--out", str(out), "--particles", "3", "--frames", "2",
                                       "--size", "96", "--box", "32", *args])
        assert res.exit_code == 2, res.output
        assert needle in res.output and not out.exists()


def test_tilt_series_carry_injected_optics_in_their_truth():
    from mrepo.sim import TiltSeriesConfig, simulate_tilt_series
    from mrepo.sim.species import SpeciesSpec
    from mrepo.sim.writer import initial_record, truth_record

    ab = SimAberrations(mag_matrix=((1.01, 0.0), (0.0, 0.995)), beam_tilt_mrad=(0.5, -0.3))
    cfg = TiltSeriesConfig(image_size=(96, 96), volume_depth_px=32, optics=Optics(pixel_size=2.0),
                           species=(SpeciesSpec("a", 30.0, "C1", 100, 24),), box=24, n_particles=2, max_tilt=10.0,
                           tilt_step=10.0, snr=1.0, pad=2, slab_thickness=20.0, contrast="light")
    plain = simulate_tilt_series(cfg, 1)
    sim = simulate_tilt_series(replace(cfg, aberrations=ab), 1)
    assert truth_record(sim)["items"][0]["aberrations"]["beam_tilt"] == [0.5, -0.3]
    assert "aberrations" not in truth_record(plain)["items"][0] and "aberrations" not in json.dumps(initial_record(sim))
    # same particles and noise draw: the images differ only by the optics
    assert sim.truth.particles.coordinates.tolist() == plain.truth.particles.coordinates.tolist()
    assert not np.allclose(sim.data, plain.data)
