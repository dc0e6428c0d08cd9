"""RELION 5's two tomogram centres (odd sizes): projection about int(Size/2), depth from Size/2.0.

Reference: an independent numpy transcription of ``Tomogram::setProjectionMatrix`` and
``getDepthOffset`` (RELION 5 src/jaz/tomography/tomogram.cpp) and of the decentring with
``Tomogram::centre = (w0/2.0, h0/2.0, d0/2.0)`` (tomogram_set.cpp).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from mrepo.kernels.tilt_geometry import project_points, tilt_matrices

PIX = 2.5
IMG = (40, 30)


def _relion(centred_A: np.ndarray, size_px: np.ndarray, angles_deg: np.ndarray, shifts_A: np.ndarray):
    """(xy px (n, m, 2), depth Å (n, m)) following RELION's matrices step by step (pixels)."""
    p = centred_A / PIX + size_px / 2.0  # getParticleCoordDecenteredPixel with centre w0/2.0
    centre = size_px / 2.0
    spec = np.floor(size_px / 2).astype(float)  # (double)int(w0/2)
    img_c = np.array([IMG[0] // 2, IMG[1] // 2, 0.0])
    xy, depth = [], []
    for (xt, yt, zr), sh in zip(angles_deg, shifts_A):
        r = (Rotation.from_euler("z", zr, degrees=True) * Rotation.from_euler("y", yt, degrees=True)
             * Rotation.from_euler("x", xt, degrees=True)).as_matrix()
        offset = np.array([sh[0] / PIX, sh[1] / PIX, 0.0]) + img_c
        q = np.stack([r @ (v - spec) + offset for v in p])
        xy.append(q[:, :2])
        depth.append((q[:, 2] - (r @ (centre - spec) + offset)[2]) * PIX)
    return np.stack(xy), np.stack(depth)


@pytest.mark.parametrize("size_px", [(32, 24, 10), (33, 25, 11), (32, 25, 10)])
def test_project_points_matches_relion_centres(size_px):
    size = np.array(size_px, dtype=float)
    rng = np.random.default_rng(3)
    centred = rng.uniform(-20, 20, size=(5, 3))
    angles = np.array([[0.5, -30.0, 85.0], [0.0, 0.0, 84.0], [-0.3, 45.0, 86.0]])
    shifts = np.array([[1.5, -2.0], [0.0, 0.0], [-3.25, 0.75]])
    ref_xy, ref_depth = _relion(centred, size, angles, shifts)
    mats = tilt_matrices(*(torch.tensor(np.deg2rad(angles[:, i])) for i in range(3)))
    points = torch.tensor(centred + size * PIX / 2.0)  # mrepo frame: from voxel 0, centre Size/2 * pixel
    xy, depth = project_points(points, mats, torch.tensor(shifts), size * PIX, IMG, PIX)
    np.testing.assert_allclose(xy.numpy(), ref_xy, atol=1e-9)
    np.testing.assert_allclose(depth.numpy(), ref_depth, atol=1e-9)


def test_odd_size_differs_from_half_size_rotation():
    """With an odd size the rotation centre is half a pixel off Size/2: a tilted projection moves."""
    size = np.array([33.0, 24.0, 10.0])
    angles = np.array([[0.0, 0.0, 90.0]])
    ref_xy, _ = _relion(np.zeros((1, 3)), size, angles, np.zeros((1, 2)))
    mats = tilt_matrices(*(torch.tensor(np.deg2rad(angles[:, i])) for i in range(3)))
    xy, _ = project_points(torch.tensor(size[None] * PIX / 2), mats, torch.zeros(1, 2, dtype=torch.float64),
                           size * PIX, IMG, PIX)
    # the tomogram centre (16.5 px) rotated 90° about the rotation centre (16 px) lands at y + 0.5
    np.testing.assert_allclose(xy.numpy()[0, 0], [IMG[0] // 2, IMG[1] // 2 + 0.5], atol=1e-12)
    np.testing.assert_allclose(xy.numpy(), ref_xy, atol=1e-12)
