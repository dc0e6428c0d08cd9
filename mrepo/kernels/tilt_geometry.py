"""Tilt-series projection geometry in RELION 5's tomography convention.

Source of the convention: RELION 5 ``src/jaz/tomography/tomogram.cpp``
(``Tomogram::setProjectionMatrix``, ``getDepthOffset``, ``getCtf``) and
``tomogram_set.cpp`` (``loadTomogram``), read from the public source; the
rotation sign comes from libgravis ``t3Matrix::rotation(axis, degrees)``
(right-handed Rodrigues formula, row-major constructor). Per tilt ``f`` RELION
builds, in tilt-series pixels, the affine map

    P_f = S(image_centre) @ S(shift / pixel) @ Rz(zrot) @ Ry(ytilt) @ Rx(xtilt) @ S(-volume_centre)

from the per-tilt STAR columns rlnTomoXTilt, rlnTomoYTilt, rlnTomoZRot
(degrees), rlnTomoXShiftAngst, rlnTomoYShiftAngst, with ``volume_centre =
(int(SizeX/2), int(SizeY/2), int(SizeZ/2))`` from rlnTomoSizeX/Y/Z (pixels) and
``image_centre = (int(width/2), int(height/2))``. The projected point is the
(x, y) of ``P_f @ p``; its depth is ``(P_f @ p).z - (P_f @ centre).z`` and RELION
adds ``hand * pixel * slope * depth`` to both defoci (rlnTomoHand,
rlnTomoDefocusSlope, default slope 1).

Here everything is in Å except image positions (pixels) and angles
(radians): points are in the tomogram frame measured from voxel 0 of the
tomogram, ``volume_size_A = (SizeX, SizeY, SizeZ) * pixel``. RELION uses two
centres: the projection rotates about ``int(Size/2)`` pixels (``setProjectionMatrix``),
while particle coordinates are decentred with and depth is measured from
``Tomogram::centre = Size/2.0`` (tomogram_set.cpp ``loadTomogram``, ``getDepthOffset``).
Both are followed here; for even sizes they coincide (``volume_size_A / 2``). Rx, Ry, Rz are the standard right-handed
rotations acting on column vectors (x, y, z), e.g.
``Rz(a) = [[cos a, -sin a, 0], [sin a, cos a, 0], [0, 0, 1]]``.

Particle orientation in a tilt (mrepo's definition, used by the simulator):
a pose ``R_p = euler_to_matrix(angles)`` maps particle-view coordinates into
the map, so a map point ``m`` sits at ``R_p^T m`` in the tomogram frame and at
``A_f R_p^T m`` in tilt ``f`` (``A_f = tilt_matrices(...)[f]``). The pose seen
in tilt ``f`` is therefore ``R_f = R_p @ A_f^T`` (see :func:`pose_in_tilt`).

No Fourier layout is involved in this module. All functions are torch,
batched and differentiable.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "rotation_x",
    "rotation_y",
    "rotation_z",
    "tilt_matrices",
    "project_points",
    "depth_defocus",
    "pose_in_tilt",
]


def _rot(angle: Tensor, i: int, j: int) -> Tensor:
    """Right-handed rotation in the (i, j) plane of (x, y, z): (...,) -> (..., 3, 3)."""
    c, s = torch.cos(angle), torch.sin(angle)
    one, zero = torch.ones_like(angle), torch.zeros_like(angle)
    m = [[one, zero, zero], [zero, one, zero], [zero, zero, one]]
    m[i][i], m[i][j], m[j][i], m[j][j] = c, -s, s, c
    return torch.stack([torch.stack(r, dim=-1) for r in m], dim=-2)


def rotation_x(angle: Tensor) -> Tensor:
    """Rotation about x by ``angle`` radians (right-handed): (...,) -> (..., 3, 3)."""
    return _rot(angle, 1, 2)


def rotation_y(angle: Tensor) -> Tensor:
    """Rotation about y by ``angle`` radians (right-handed): (...,) -> (..., 3, 3)."""
    return _rot(angle, 2, 0)


def rotation_z(angle: Tensor) -> Tensor:
    """Rotation about z by ``angle`` radians (right-handed): (...,) -> (..., 3, 3)."""
    return _rot(angle, 0, 1)


def _as_tensor(x: Tensor | Sequence[float] | float, like: Tensor | None = None) -> Tensor:
    if isinstance(x, Tensor):
        return x
    dtype = like.dtype if like is not None else torch.float64
    device = like.device if like is not None else None
    return torch.as_tensor(x, dtype=dtype, device=device)


def tilt_matrices(xtilt: Tensor, ytilt: Tensor, zrot: Tensor) -> Tensor:
    """Per-tilt rotations ``Rz(zrot) @ Ry(ytilt) @ Rx(xtilt)`` (radians): (n,) x3 -> (n, 3, 3).

    ``xtilt``, ``ytilt``, ``zrot`` are rlnTomoXTilt, rlnTomoYTilt (the stage
    tilt) and rlnTomoZRot (the in-plane tilt-axis rotation) in radians; they
    broadcast against each other. The matrix rotates tomogram-frame vectors
    (x, y, z) into the tilt-image frame (x, y, depth).
    """
    xtilt, ytilt, zrot = torch.broadcast_tensors(
        _as_tensor(xtilt), _as_tensor(ytilt), _as_tensor(zrot)
    )
    if not (xtilt.is_floating_point()):
        raise ValueError(f"tilt angles must be floating point tensors, got {xtilt.dtype}")
    return rotation_z(zrot) @ rotation_y(ytilt) @ rotation_x(xtilt)


def project_points(
    points_A: Tensor,
    matrices: Tensor,
    shifts_A: Tensor,
    volume_size_A: Tensor | Sequence[float],
    image_size_px: Sequence[int],
    pixel_size: float,
) -> tuple[Tensor, Tensor]:
    """Project tomogram points into every tilt image (RELION 5 convention).

    points_A: (..., 3) (x, y, z) in Å from the tomogram's voxel 0.
    matrices: (n, 3, 3) from :func:`tilt_matrices`.
    shifts_A: (n, 2) rlnTomoXShiftAngst, rlnTomoYShiftAngst.
    volume_size_A: (3,) tomogram extent (x, y, z) in Å; rotation centre ``int(Size/2)`` px, depth
        measured from ``Size/2`` (Size = volume_size_A / pixel_size, rounded).
    image_size_px: (width, height) of the tilt images in pixels; centre (w // 2, h // 2).
    pixel_size: Å per pixel of the tilt images.

    Returns ``(positions, depth)``: positions (n, ..., 2) image pixel (x, y)
    and depth (n, ...) in Å along the beam in the tilted frame relative to
    the volume centre (RELION's ``getDepthOffset`` times the pixel size).
    """
    if points_A.shape[-1:] != (3,):
        raise ValueError(f"points_A must have shape (..., 3), got {tuple(points_A.shape)}")
    if matrices.ndim != 3 or matrices.shape[-2:] != (3, 3):
        raise ValueError(f"matrices must have shape (n, 3, 3), got {tuple(matrices.shape)}")
    n = matrices.shape[0]
    if shifts_A.shape != (n, 2):
        raise ValueError(f"shifts_A must have shape ({n}, 2), got {tuple(shifts_A.shape)}")
    if len(image_size_px) != 2:
        raise ValueError(f"image_size_px must be (width, height), got {image_size_px}")
    if pixel_size <= 0:
        raise ValueError(f"pixel_size must be positive, got {pixel_size}")
    size = _as_tensor(volume_size_A, points_A)
    if size.shape != (3,):
        raise ValueError(f"volume_size_A must have shape (3,), got {tuple(size.shape)}")
    odd = torch.remainder(torch.round(size / pixel_size), 2)
    rot_centre = size / 2 - odd * (pixel_size / 2)  # int(Size/2) px in Å; exactly size / 2 when even
    centred = points_A - rot_centre  # (..., 3)
    batch = centred.shape[:-1]
    flat = centred.reshape(-1, 3)  # (m, 3)
    rotated = torch.einsum("nij,mj->nmi", matrices.to(flat.dtype), flat)  # (n, m, 3)
    if bool(odd.any()):  # depth from Size/2, not from the rotation centre
        offset = torch.einsum("nij,j->ni", matrices.to(flat.dtype), size / 2 - rot_centre)  # (n, 3)
        rotated = torch.cat([rotated[..., :2], rotated[..., 2:] - offset[:, None, 2:]], dim=-1)
    image_centre = torch.tensor(
        [image_size_px[0] // 2, image_size_px[1] // 2], dtype=flat.dtype, device=flat.device
    )
    xy = (rotated[..., :2] + shifts_A.to(flat.dtype)[:, None, :]) / pixel_size + image_centre
    depth = rotated[..., 2]
    return xy.reshape(n, *batch, 2), depth.reshape(n, *batch)


def depth_defocus(
    defocus_A: Tensor, depth_A: Tensor, handedness: float = 1.0, slope: float = 1.0
) -> Tensor:
    """Defocus at a depth, as RELION's ``Tomogram::getCtf``: ``defocus + hand * slope * depth`` (Å).

    ``defocus_A`` is the tilt's defocus at the volume centre (n, 1...) and
    ``depth_A`` from :func:`project_points`; they broadcast.
    """
    if handedness not in (1.0, -1.0):
        raise ValueError(f"handedness must be +1 or -1, got {handedness}")
    return defocus_A + handedness * slope * depth_A


def pose_in_tilt(pose_matrices: Tensor, matrices: Tensor) -> Tensor:
    """Pose seen in each tilt: ``R_f = R_p @ A_f^T``.

    pose_matrices: (..., 3, 3) particle poses in the tomogram frame
    (``euler_to_matrix`` convention: view -> map). matrices: (n, 3, 3) tilt
    rotations. Returns (n, ..., 3, 3).
    """
    if pose_matrices.shape[-2:] != (3, 3) or matrices.ndim != 3 or matrices.shape[-2:] != (3, 3):
        raise ValueError(
            f"need pose_matrices (..., 3, 3) and matrices (n, 3, 3), got "
            f"{tuple(pose_matrices.shape)} and {tuple(matrices.shape)}"
        )
    n = matrices.shape[0]
    extra = pose_matrices.ndim - 2
    a_t = matrices.transpose(-1, -2).reshape(n, *([1] * extra), 3, 3)
    return pose_matrices.unsqueeze(0) @ a_t.to(pose_matrices.dtype)
