"""Tilt-series simulator: scheme, geometry composition, truth reproduces data, perturbations."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from mrepo.kernels.rotations import euler_to_matrix
from mrepo.kernels.tilt_geometry import tilt_matrices
from mrepo.sim import (
    PseudoAtomicModel,
    TiltSeriesConfig,
    dose_symmetric_scheme,
    project_atoms,
    render_tilts,
    simulate_tilt_series,
)

torch.set_num_threads(1)
SMALL = TiltSeriesConfig(image_size=(128, 128), n_particles=5, box=40, max_tilt=40.0, tilt_step=10.0, snr=0.5,
                         contrast="light")


def test_dose_symmetric_scheme() -> None:
    angles, order = dose_symmetric_scheme(9.0, 3.0, group_size=2)
    np.testing.assert_array_equal(angles, [-9, -6, -3, 0, 3, 6, 9])
    np.testing.assert_array_equal(angles[order], [0, 3, 6, -3, -6, 9, -9])
    assert sorted(order) == list(range(7))


def test_exposure_follows_acquisition_order_and_same_seed_is_identical() -> None:
    a, b = simulate_tilt_series(SMALL, 2), simulate_tilt_series(SMALL, 2)
    assert np.array_equal(a.data, b.data)
    assert not np.array_equal(a.data, simulate_tilt_series(SMALL, 3).data)
    t = a.truth
    np.testing.assert_allclose(t.pre_exposure[t.acquisition_order], np.arange(len(t.dose)) * SMALL.dose_per_tilt)
    np.testing.assert_allclose(a.truth.plan.scale, np.cos(np.deg2rad(t.ytilt)))


def test_truth_rerenders_data_and_particles_do_not_overlap() -> None:
    sim = simulate_tilt_series(SMALL, 4)
    clean = render_tilts(sim.truth, sim.species, SMALL.pad)
    assert np.abs(sim.data - clean - sim.noise).max() < 1e-5 * np.abs(sim.data).max()
    c = sim.truth.particles.coordinates[:, 0]
    r = np.array([sim.species[k].spec.diameter / 2 for k in sim.truth.particles.species])
    d = np.linalg.norm(c[:, None] - c[None], axis=-1) + np.eye(len(c)) * 1e9
    assert np.all(d >= r[:, None] + r[None] - 1e-9)
    vz = sim.truth.volume_size_A[2] / 2
    assert np.all(np.abs(c[:, 2] - vz) <= SMALL.slab_thickness / 2)


def test_particle_view_in_tilt_equals_projection_of_tilted_atoms() -> None:
    """Independent of Euler composition: move atoms into the tomogram, tilt them, sum along z."""
    sim = simulate_tilt_series(replace(SMALL, n_particles=2), 5)
    t, plan = sim.truth, sim.truth.plan
    mats = tilt_matrices(*(torch.from_numpy(np.deg2rad(a)) for a in (t.xtilt, t.ytilt, t.zrot))).numpy()
    p, i = 0, int(np.argmax(np.abs(t.ytilt)))
    atoms = sim.species[int(t.particles.species[p])].atoms
    pose = euler_to_matrix(torch.deg2rad(torch.from_numpy(t.particles.angles[p, 0]))).numpy()
    tilted = atoms.centres @ pose @ mats[i].T  # A_i R_p^T c for every atom
    moved = PseudoAtomicModel(tilted, atoms.sigmas, atoms.weights, atoms.diameter, atoms.symmetry)
    box, pix = sim.species[0].spec.box, t.optics.pixel_size
    direct = project_atoms(moved, torch.eye(3, dtype=torch.float64)[None], torch.zeros(1, 2, dtype=torch.float64), box, pix)
    seen = euler_to_matrix(torch.deg2rad(torch.from_numpy(plan.angles_deg[p, i][None])))
    via_pose = project_atoms(atoms, seen, torch.zeros(1, 2, dtype=torch.float64), box, pix)
    torch.testing.assert_close(via_pose, direct, atol=1e-9, rtol=1e-7)
    # defocus follows depth: particles above the centre (hand +1) get more defocus
    depth = (t.particles.coordinates[:, 0] - t.volume_size_A / 2) @ mats[i].T
    np.testing.assert_allclose(plan.defocus_u[:, i] - t.defocus_u[i], depth[:, 2], atol=1e-6)


def test_initial_is_nominal_and_perturbed_by_configured_magnitudes() -> None:
    cfg = replace(SMALL, max_tilt=60.0, tilt_step=2.0)
    sim = simulate_tilt_series(cfg, 6)
    t, i, pert = sim.truth, sim.initial, cfg.perturbation
    np.testing.assert_array_equal(i.ytilt, t.nominal_tilts)
    np.testing.assert_array_equal(i.zrot, cfg.tilt_axis)
    np.testing.assert_array_equal(i.xtilt, 0.0)
    assert 0.5 * cfg.stage_error_deg < np.std(t.ytilt - t.nominal_tilts) < 1.6 * cfg.stage_error_deg
    ds = (i.shifts_A - t.shifts_A).ravel() / t.optics.pixel_size
    assert 0.6 * pert.shift_px < ds.std() < 1.5 * pert.shift_px
    dd = (i.defocus_u + i.defocus_v - t.defocus_u - t.defocus_v) / 2
    assert 0.6 * pert.defocus_A < dd.std() < 1.5 * pert.defocus_A
