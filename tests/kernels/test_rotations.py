"""Rotations against scipy and analytic identities."""

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from mrepo.kernels.rotations import (
    axis_angle_to_matrix,
    euler_to_matrix,
    matrix_to_axis_angle,
    matrix_to_euler,
    rotation_angle,
    xyz_to_matrix,
)

RNG = np.random.default_rng(0)


def _random_eulers(n: int) -> np.ndarray:
    return np.stack(
        [RNG.uniform(-np.pi, np.pi, n), np.arccos(RNG.uniform(-1, 1, n)), RNG.uniform(-np.pi, np.pi, n)], -1
    )


def test_euler_to_matrix_matches_scipy():
    e = _random_eulers(50)
    ours = euler_to_matrix(torch.from_numpy(e)).numpy()
    ref = Rotation.from_euler("ZYZ", e).as_matrix()
    np.testing.assert_allclose(ours, ref, atol=1e-12)


def test_euler_to_matrix_is_transpose_of_relion_convention():
    # RELION Euler_angles2matrix (rot, tilt, psi) written out from its published source formula
    rot, tilt, psi = 0.3, 1.1, -2.0
    ca, sa, cb, sb, cg, sg = (
        math.cos(rot),
        math.sin(rot),
        math.cos(tilt),
        math.sin(tilt),
        math.cos(psi),
        math.sin(psi),
    )
    cc, cs, sc, ss = cb * ca, cb * sa, sb * ca, sb * sa
    relion = np.array(
        [
            [cg * cc - sg * sa, cg * cs + sg * ca, -cg * sb],
            [-sg * cc - cg * sa, -sg * cs + cg * ca, sg * sb],
            [sc, ss, cb],
        ]
    )
    ours = euler_to_matrix(torch.tensor([rot, tilt, psi], dtype=torch.float64)).numpy()
    np.testing.assert_allclose(ours, relion.T, atol=1e-12)


def test_batched_shapes_and_dtype():
    e = torch.zeros(4, 5, 3, dtype=torch.float32)
    m = euler_to_matrix(e)
    assert m.shape == (4, 5, 3, 3) and m.dtype == torch.float32
    assert torch.allclose(m, torch.eye(3).expand(4, 5, 3, 3))


def test_matrix_to_euler_round_trip_and_scipy():
    e = _random_eulers(100)
    m = torch.from_numpy(Rotation.from_euler("ZYZ", e).as_matrix())
    back = matrix_to_euler(m)
    np.testing.assert_allclose(back.numpy(), e, atol=1e-9)


@pytest.mark.parametrize("tilt", [0.0, math.pi])
def test_matrix_to_euler_gimbal_lock(tilt):
    e = torch.tensor([[0.7, tilt, -0.4], [-2.5, tilt, 2.9]], dtype=torch.float64)
    m = euler_to_matrix(e)
    back = matrix_to_euler(m)
    assert torch.isfinite(back).all()
    np.testing.assert_allclose(back[:, 1].numpy(), [tilt, tilt], atol=1e-12)
    np.testing.assert_allclose(euler_to_matrix(back).numpy(), m.numpy(), atol=1e-12)
    m32 = m.float()
    np.testing.assert_allclose(euler_to_matrix(matrix_to_euler(m32)).numpy(), m32.numpy(), atol=1e-6)


def test_rotation_angle_matches_scipy():
    a = Rotation.random(40, random_state=1)
    b = Rotation.random(40, random_state=2)
    ref = (a.inv() * b).magnitude()
    ours = rotation_angle(torch.from_numpy(a.as_matrix()), torch.from_numpy(b.as_matrix()))
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-10)


def test_rotation_angle_small_and_pi():
    eye = torch.eye(3, dtype=torch.float64)
    for angle in [1e-9, 1e-4, math.pi - 1e-7, math.pi]:
        r = torch.from_numpy(Rotation.from_rotvec([0.0, angle, 0.0]).as_matrix())
        assert abs(rotation_angle(eye, r).item() - angle) < 1e-9


def test_axis_angle_matches_scipy_and_inverse():
    rv = Rotation.random(60, random_state=3).as_rotvec()
    ours = axis_angle_to_matrix(torch.from_numpy(rv))
    np.testing.assert_allclose(ours.numpy(), Rotation.from_rotvec(rv).as_matrix(), atol=1e-12)
    np.testing.assert_allclose(matrix_to_axis_angle(ours).numpy(), rv, atol=1e-9)


def test_matrix_to_axis_angle_near_pi_and_zero():
    for rv in (
        [0.0, 0.0, 0.0],
        [1e-8, 0.0, 0.0],
        [0.0, math.pi - 1e-6, 0.0],
        list(math.pi / math.sqrt(3) * np.array([1.0, 1.0, 1.0]) * (1 - 1e-9)),
    ):
        m = torch.from_numpy(Rotation.from_rotvec(rv).as_matrix())
        back = matrix_to_axis_angle(m).numpy()
        np.testing.assert_allclose(Rotation.from_rotvec(back).as_matrix(), m.numpy(), atol=1e-9)


def test_axis_angle_gradcheck_including_zero():
    for v in ([0.0, 0.0, 0.0], [1e-5, -2e-5, 3e-6], [0.3, -1.2, 0.8]):
        x = torch.tensor(v, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(axis_angle_to_matrix, (x,))
    # analytic derivative at zero: dR/dv_i = skew(e_i)
    jac = torch.autograd.functional.jacobian(axis_angle_to_matrix, torch.zeros(3, dtype=torch.float64))
    ex = torch.tensor([[0.0, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=torch.float64)
    assert torch.allclose(jac[..., 0], ex)


def test_euler_gradcheck():
    x = torch.tensor([[0.4, 1.0, -0.3]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(euler_to_matrix, (x,))


def test_xyz_to_matrix_matches_scipy():
    a = RNG.uniform(-np.pi, np.pi, (20, 3))
    ref = Rotation.from_euler("XYZ", a).as_matrix()
    np.testing.assert_allclose(xyz_to_matrix(torch.from_numpy(a)).numpy(), ref, atol=1e-12)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="angles"):
        euler_to_matrix(torch.zeros(4))
    with pytest.raises(ValueError, match="matrices"):
        matrix_to_euler(torch.zeros(3, 4))
