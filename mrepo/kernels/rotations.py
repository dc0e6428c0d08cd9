"""Rotation matrices, RELION ZYZ Euler angles and rotation vectors.

Conventions (DESIGN.md): angles in radians; matrices act on column vectors
(x, y, z) and rotate central-slice coordinates into the volume, i.e.
``euler_to_matrix((rot, tilt, psi)) == Rz(rot) @ Ry(tilt) @ Rz(psi)``, equal to
``scipy.spatial.transform.Rotation.from_euler("ZYZ", [rot, tilt, psi]).as_matrix()``
and the transpose of RELION's ``Euler_angles2matrix``. All functions are
batched over leading dimensions and keep the input's device and dtype.
No Fourier layout is involved in this module.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "euler_to_matrix",
    "matrix_to_euler",
    "rotation_angle",
    "axis_angle_to_matrix",
    "matrix_to_axis_angle",
    "xyz_to_matrix",
]


def _check_last(x: Tensor, shape: tuple[int, ...], name: str) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if tuple(x.shape[x.ndim - len(shape) :]) != shape or x.ndim < len(shape):
        raise ValueError(f"{name} must have shape (..., {', '.join(map(str, shape))}), got {tuple(x.shape)}")


def euler_to_matrix(angles: Tensor) -> Tensor:
    """(..., 3) RELION ZYZ (rot, tilt, psi) in radians -> (..., 3, 3).

    The matrix rotates central-slice coordinates into the volume; it equals
    scipy ``Rotation.from_euler("ZYZ", [rot, tilt, psi]).as_matrix()`` (the
    transpose of RELION's ``Euler_angles2matrix``) and acts on column vectors
    (x, y, z). Differentiable everywhere.
    """
    _check_last(angles, (3,), "angles")
    ca, cb, cg = torch.cos(angles).unbind(-1)
    sa, sb, sg = torch.sin(angles).unbind(-1)
    rows = (
        (ca * cb * cg - sa * sg, -ca * cb * sg - sa * cg, ca * sb),
        (sa * cb * cg + ca * sg, -sa * cb * sg + ca * cg, sa * sb),
        (-sb * cg, sb * sg, cb),
    )
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


def matrix_to_euler(matrices: Tensor) -> Tensor:
    """(..., 3, 3) rotation matrices -> (..., 3) ZYZ (rot, tilt, psi) in radians.

    Inverse of :func:`euler_to_matrix`: tilt in [0, pi], rot and psi in (-pi, pi].
    At gimbal lock (sin(tilt) ~ 0, i.e. tilt 0 or pi) only rot + psi (tilt 0)
    or psi - rot (tilt pi) is defined; rot is then set to 0 and psi carries the
    in-plane rotation, so ``euler_to_matrix(matrix_to_euler(R)) == R`` always.
    """
    _check_last(matrices, (3, 3), "matrices")
    r = matrices
    eps = 16.0 * torch.finfo(r.dtype).eps if r.is_floating_point() else 1e-12
    sin_tilt = torch.sqrt(r[..., 2, 0] ** 2 + r[..., 2, 1] ** 2)
    tilt = torch.atan2(sin_tilt, r[..., 2, 2])
    rot = torch.atan2(r[..., 1, 2], r[..., 0, 2])
    psi = torch.atan2(r[..., 2, 1], -r[..., 2, 0])
    locked = sin_tilt < eps
    # tilt ~ 0: R = Rz(rot + psi); tilt ~ pi: R = diag(-1, 1, -1) @ Rz(psi - rot).
    psi_up = torch.atan2(r[..., 1, 0], r[..., 0, 0])
    psi_down = torch.atan2(r[..., 1, 0], r[..., 1, 1])
    psi_locked = torch.where(r[..., 2, 2] > 0, psi_up, psi_down)
    tilt_locked = torch.where(r[..., 2, 2] > 0, torch.zeros_like(tilt), torch.full_like(tilt, torch.pi))
    rot = torch.where(locked, torch.zeros_like(rot), rot)
    psi = torch.where(locked, psi_locked, psi)
    tilt = torch.where(locked, tilt_locked, tilt)
    return torch.stack([rot, tilt, psi], dim=-1)


def rotation_angle(a: Tensor, b: Tensor) -> Tensor:
    """Geodesic angle in radians, in [0, pi], between rotation matrices a and b, (...).

    Computed as atan2(|vee(D - D^T)| / 2, (trace(D) - 1) / 2) with D = a^T b,
    which stays accurate near 0 and pi (unlike acos of the trace).
    """
    _check_last(a, (3, 3), "a")
    _check_last(b, (3, 3), "b")
    d = a.transpose(-1, -2) @ b
    v = torch.stack([d[..., 2, 1] - d[..., 1, 2], d[..., 0, 2] - d[..., 2, 0], d[..., 1, 0] - d[..., 0, 1]], dim=-1)
    trace = d[..., 0, 0] + d[..., 1, 1] + d[..., 2, 2]
    return torch.atan2(torch.linalg.vector_norm(v, dim=-1), trace - 1.0)


def _skew(v: Tensor) -> Tensor:
    x, y, z = v.unbind(-1)
    zero = torch.zeros_like(x)
    return torch.stack(
        [
            torch.stack([zero, -z, y], dim=-1),
            torch.stack([z, zero, -x], dim=-1),
            torch.stack([-y, x, zero], dim=-1),
        ],
        dim=-2,
    )


def axis_angle_to_matrix(axis_angle: Tensor) -> Tensor:
    """(..., 3) rotation vector (unit axis times angle in radians) -> (..., 3, 3).

    Rodrigues' formula R = I + A K + B K^2 with K = skew(v), A = sin(t)/t,
    B = (1 - cos t)/t^2; Taylor series near t = 0 keep values and gradients
    finite (dR/dv at v = 0 is the skew generator).
    """
    _check_last(axis_angle, (3,), "axis_angle")
    v = axis_angle
    t2 = (v * v).sum(-1)
    small = t2 < 1e-4 if v.dtype == torch.float64 else t2 < 1e-2
    t2_safe = torch.where(small, torch.ones_like(t2), t2)
    t = torch.sqrt(t2_safe)
    a_big = torch.sin(t) / t
    b_big = (1.0 - torch.cos(t)) / t2_safe
    a_small = 1.0 - t2 / 6.0 + t2 * t2 / 120.0 - t2 * t2 * t2 / 5040.0
    b_small = 0.5 - t2 / 24.0 + t2 * t2 / 720.0 - t2 * t2 * t2 / 40320.0
    a = torch.where(small, a_small, a_big)[..., None, None]
    b = torch.where(small, b_small, b_big)[..., None, None]
    k = _skew(v)
    eye = torch.eye(3, dtype=v.dtype, device=v.device).expand(k.shape)
    return eye + a * k + b * (k @ k)


def matrix_to_axis_angle(matrices: Tensor) -> Tensor:
    """(..., 3, 3) rotation matrices -> (..., 3) rotation vectors (angle in [0, pi]).

    Inverse of :func:`axis_angle_to_matrix`; near pi the axis is taken from the
    symmetric part (R + I) / 2 = a a^T, so the result is accurate there too.
    """
    _check_last(matrices, (3, 3), "matrices")
    r = matrices
    v = torch.stack([r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0], r[..., 1, 0] - r[..., 0, 1]], -1)
    trace = r[..., 0, 0] + r[..., 1, 1] + r[..., 2, 2]
    sin2 = torch.linalg.vector_norm(v, dim=-1)  # 2 sin(t)
    angle = torch.atan2(sin2, trace - 1.0)
    small = sin2 < 1e-6
    generic = v * (angle / torch.where(small, torch.ones_like(sin2), sin2))[..., None]
    generic = torch.where(small[..., None] & (trace[..., None] > 0), 0.5 * v, generic)
    # near pi: (R + R^T)/2 - cos(t) I = (1 - cos t) a a^T; take its column with the largest diagonal
    cos_t = (0.5 * (trace - 1.0))[..., None, None]
    eye = torch.eye(3, dtype=r.dtype, device=r.device)
    sym = 0.5 * (r + r.transpose(-1, -2)) - cos_t * eye
    idx = torch.diagonal(sym, dim1=-2, dim2=-1).argmax(-1)
    col = torch.gather(sym, -1, idx[..., None, None].expand(*idx.shape, 3, 1))[..., 0]
    axis = col / torch.linalg.vector_norm(col, dim=-1, keepdim=True).clamp_min(1e-30)
    sign = torch.where((axis * v).sum(-1, keepdim=True) < 0, -1.0, 1.0).to(r.dtype)
    near_pi = (trace < -0.99)[..., None]
    return torch.where(near_pi, sign * axis * angle[..., None], generic)


def xyz_to_matrix(angles: Tensor) -> Tensor:
    """(..., 3) angles (ax, ay, az) in radians -> Rx(ax) @ Ry(ay) @ Rz(az), (..., 3, 3).

    The "xyz angles" R_xyz of M's tilt-series model (stage-angle corrections).
    """
    _check_last(angles, (3,), "angles")
    cx, cy, cz = torch.cos(angles).unbind(-1)
    sx, sy, sz = torch.sin(angles).unbind(-1)
    rows = (
        (cy * cz, -cy * sz, sy),
        (sx * sy * cz + cx * sz, -sx * sy * sz + cx * cz, -sx * cy),
        (-cx * sy * cz + sx * sz, cx * sy * sz + sx * cz, cx * cy),
    )
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)
