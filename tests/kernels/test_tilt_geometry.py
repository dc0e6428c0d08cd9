"""Tests of mrepo.kernels.tilt_geometry against RELION 5's affine construction."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from mrepo.kernels.tilt_geometry import (
    depth_defocus,
    pose_in_tilt,
    project_points,
    tilt_matrices,
)

PIX = 2.0
VOL = torch.tensor([400.0, 300.0, 120.0], dtype=torch.float64)  # Å: 200 x 150 x 60 px
IMG = (128, 96)  # (width, height)


def _relion_affine(xtilt: float, ytilt: float, zrot: float, shift_a: np.ndarray) -> np.ndarray:
    """RELION's s2 @ s1 @ r2 @ r1 @ r0 @ s0 in pixels, built independently with scipy."""

    def translation(v: np.ndarray) -> np.ndarray:
        t = np.eye(4)
        t[:3, 3] = v
        return t

    def rotation(axis: str, a: float) -> np.ndarray:
        r = np.eye(4)
        r[:3, :3] = Rotation.from_euler(axis, a).as_matrix()
        return r

    size_px = VOL.numpy() / PIX
    s0 = translation(-np.floor(size_px / 2))
    s1 = translation(np.array([shift_a[0] / PIX, shift_a[1] / PIX, 0.0]))
    s2 = translation(np.array([IMG[0] // 2, IMG[1] // 2, 0.0]))
    return s2 @ s1 @ rotation("z", zrot) @ rotation("y", ytilt) @ rotation("x", xtilt) @ s0


def test_centre_lands_on_image_centre_plus_shift() -> None:
    mats = tilt_matrices(torch.tensor([0.01, -0.02]), torch.tensor([0.5, -1.0]), torch.tensor([1.4, 1.5]))
    shifts = torch.tensor([[10.0, -4.0], [0.0, 6.0]], dtype=torch.float64)
    xy, depth = project_points(VOL / 2, mats.double(), shifts, VOL, IMG, PIX)
    expected = torch.tensor([IMG[0] // 2, IMG[1] // 2], dtype=torch.float64) + shifts / PIX
    torch.testing.assert_close(xy, expected)
    torch.testing.assert_close(depth, torch.zeros(2, dtype=torch.float64))


def test_zrot_90_swaps_axes_and_ytilt_90_maps_z_to_x() -> None:
    zero = torch.zeros(1, dtype=torch.float64)
    half_pi = torch.full((1,), math.pi / 2, dtype=torch.float64)
    centre = torch.tensor([IMG[0] // 2, IMG[1] // 2], dtype=torch.float64)
    p = VOL / 2 + torch.tensor([20.0, 0.0, 0.0], dtype=torch.float64)
    xy, depth = project_points(p, tilt_matrices(zero, zero, half_pi), torch.zeros(1, 2, dtype=torch.float64), VOL, IMG, PIX)
    torch.testing.assert_close(xy[0], centre + torch.tensor([0.0, 10.0], dtype=torch.float64))
    q = VOL / 2 + torch.tensor([0.0, 0.0, 20.0], dtype=torch.float64)
    xy, depth = project_points(q, tilt_matrices(zero, half_pi, zero), torch.zeros(1, 2, dtype=torch.float64), VOL, IMG, PIX)
    torch.testing.assert_close(xy[0], centre + torch.tensor([10.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(depth[0], torch.tensor(0.0, dtype=torch.float64), atol=1e-12, rtol=0)


def test_matches_relion_affine_for_random_geometry() -> None:
    g = np.random.default_rng(0)
    n = 5
    angles = g.uniform(-1.2, 1.2, size=(n, 3))
    shifts = g.normal(0, 30, size=(n, 2))
    pts = g.uniform(0, 1, size=(7, 3)) * VOL.numpy()
    mats = tilt_matrices(*torch.from_numpy(angles).T)
    xy, depth = project_points(torch.from_numpy(pts), mats, torch.from_numpy(shifts), VOL, IMG, PIX)
    for f in range(n):
        a = _relion_affine(*angles[f], shifts[f])
        hom = np.c_[pts / PIX, np.ones(len(pts))] @ a.T
        cen = np.r_[np.floor(VOL.numpy() / PIX / 2), 1.0] @ a.T
        np.testing.assert_allclose(xy[f].numpy(), hom[:, :2], atol=1e-9)
        np.testing.assert_allclose(depth[f].numpy(), (hom[:, 2] - cen[2]) * PIX, atol=1e-9)


def test_batch_shape_and_gradcheck() -> None:
    pts = torch.rand(2, 3, 3, dtype=torch.float64) * VOL
    mats = tilt_matrices(torch.zeros(4), torch.linspace(-1, 1, 4), torch.ones(4)).double()
    xy, depth = project_points(pts, mats, torch.zeros(4, 2, dtype=torch.float64), VOL, IMG, PIX)
    assert xy.shape == (4, 2, 3, 2) and depth.shape == (4, 2, 3)

    def f(xt: torch.Tensor, yt: torch.Tensor, zr: torch.Tensor, sh: torch.Tensor, p: torch.Tensor):
        return project_points(p, tilt_matrices(xt, yt, zr), sh, VOL, IMG, PIX)

    args = (
        torch.randn(3, dtype=torch.float64) * 0.1,
        torch.randn(3, dtype=torch.float64),
        torch.randn(3, dtype=torch.float64),
        torch.randn(3, 2, dtype=torch.float64),
        torch.rand(4, 3, dtype=torch.float64) * VOL,
    )
    for a in args:
        a.requires_grad_(True)
    assert torch.autograd.gradcheck(f, args)


def test_pose_in_tilt_composes_view_of_map_points() -> None:
    g = torch.Generator().manual_seed(1)
    pose = torch.from_numpy(Rotation.random(2, random_state=3).as_matrix())
    mats = tilt_matrices(torch.randn(3, generator=g, dtype=torch.float64) * 0.1,
                         torch.randn(3, generator=g, dtype=torch.float64),
                         torch.randn(3, generator=g, dtype=torch.float64))
    m = torch.randn(2, 3, dtype=torch.float64, generator=g)  # one map point per particle
    r_f = pose_in_tilt(pose, mats)  # (3, 2, 3, 3)
    seen = torch.einsum("npji,pj->npi", r_f, m)  # R_f^T m
    direct = torch.einsum("nij,pkj,pk->npi", mats, pose, m)  # A_f R_p^T m
    torch.testing.assert_close(seen, direct)


def test_depth_defocus_and_errors() -> None:
    d = depth_defocus(torch.tensor([20000.0]), torch.tensor([100.0, -50.0]), handedness=-1.0)
    torch.testing.assert_close(d, torch.tensor([19900.0, 20050.0]))
    with pytest.raises(ValueError, match="handedness"):
        depth_defocus(torch.tensor([1.0]), torch.tensor([1.0]), handedness=0.5)
    mats = tilt_matrices(torch.zeros(2), torch.zeros(2), torch.zeros(2))
    with pytest.raises(ValueError, match="shifts_A"):
        project_points(torch.zeros(3), mats, torch.zeros(3, 2), VOL, IMG, PIX)
    with pytest.raises(ValueError, match="points_A"):
        project_points(torch.zeros(2), mats, torch.zeros(2, 2), VOL, IMG, PIX)
