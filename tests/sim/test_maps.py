"""Species models, maps and the analytic projection vs the 3D map."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from mrepo.kernels.rotations import euler_to_matrix
from mrepo.sim import PseudoAtomicModel, project_atoms, pseudo_atomic_species, render_map, soft_sphere_mask
from mrepo.sim.maps import density_mask

torch.set_num_threads(1)
PIX = 1.5


def _rotated(model: PseudoAtomicModel, r: np.ndarray) -> PseudoAtomicModel:
    return PseudoAtomicModel(model.centres @ r, model.sigmas, model.weights, model.diameter, model.symmetry)


def test_projection_equals_z_sum_of_map_at_random_pose() -> None:
    model = pseudo_atomic_species(40.0, "C1", 200, seed=1, sigma_angstrom=1.2)
    r = Rotation.from_euler("ZYZ", [30, 70, -110], degrees=True).as_matrix()
    proj = project_atoms(model, euler_to_matrix(torch.deg2rad(torch.tensor([[30.0, 70.0, -110.0]], dtype=torch.float64))),
                         torch.zeros(1, 2, dtype=torch.float64), 40, PIX)[0].numpy()
    # map of the atoms moved into the view frame (u = R^T c), summed along z
    zsum = render_map(_rotated(model, r), 40, PIX).sum(0)
    assert np.abs(proj - zsum).max() < 1e-3 * np.abs(proj).max()
    assert np.isclose(proj.sum(), model.weights.sum(), rtol=1e-3)


def test_projection_matches_exactly_rotated_map() -> None:
    # Ry(90): V'(x, y, z) = V(z, y, -x) is an exact voxel permutation for an odd box
    model = pseudo_atomic_species(36.0, "D2", 160, seed=2)
    n = 41
    vol = render_map(model, n, PIX)
    rotated = np.flip(vol, 0).transpose(2, 1, 0)
    proj = project_atoms(model, euler_to_matrix(torch.tensor([[0.0, np.pi / 2, 0.0]], dtype=torch.float64)),
                         torch.zeros(1, 2, dtype=torch.float64), n, PIX)[0].numpy()
    assert np.abs(proj - rotated.sum(0)).max() < 1e-3 * np.abs(proj).max()


def test_subpixel_offset_moves_the_centre_of_mass() -> None:
    model = pseudo_atomic_species(30.0, "C1", 60, seed=3)
    eye = torch.eye(3, dtype=torch.float64)[None].repeat(2, 1, 1)
    imgs = project_atoms(model, eye, torch.tensor([[0.0, 0.0], [0.6, -0.45]], dtype=torch.float64), 48, PIX).numpy()
    yy, xx = np.mgrid[0:48, 0:48]
    com = [np.array([(im * xx).sum(), (im * yy).sum()]) / im.sum() for im in imgs]
    # point sampling of sigma = 1 Å Gaussians at 1.5 Å aliases the centroid by < 0.01 px
    np.testing.assert_allclose((com[1] - com[0]) * PIX, [0.6, -0.45], atol=3e-3)


def test_symmetry_and_high_resolution_content() -> None:
    model = pseudo_atomic_species(40.0, "C4", 400, seed=4)
    assert len(model.centres) == 400
    vol = render_map(model, 41, PIX)
    np.testing.assert_allclose(np.rot90(vol, 1, axes=(1, 2)), vol, atol=1e-5 * vol.max())
    spec = np.abs(np.fft.fftn(vol)) ** 2
    k = np.sqrt(sum(g**2 for g in np.meshgrid(*[np.fft.fftfreq(41, PIX)] * 3, indexing="ij")))
    low = spec[(k > 0.02) & (k < 0.1)].mean()
    high = spec[(k > 0.25) & (k < 0.3)].mean()  # beyond 4 Å
    assert high > 1e-3 * low


def test_masks_and_errors() -> None:
    m = soft_sphere_mask(32, PIX, 15.0, 6.0)
    assert m[16, 16, 16] == 1.0 and m[0, 0, 0] == 0.0 and 0 < m[16, 16, 16 + 12] < 1
    model = pseudo_atomic_species(30.0, "C1", 80, seed=5)
    dm = density_mask(render_map(model, 32, PIX), PIX)
    assert dm[16, 16, 16] == 1.0 and dm[0, 0, 0] == 0.0
    with pytest.raises(ValueError, match="symmetry"):
        pseudo_atomic_species(30.0, "X5", 80, seed=0)
    with pytest.raises(ValueError, match="fewer"):
        pseudo_atomic_species(30.0, "D4", 4, seed=0)
