"""M's volume-space deformation models: the volume warp of tilt series and doming of frame series.

* **Volume warp** (tilt series; M ``TiltSeries.GridVolumeWarpX/Y/Z``, MCore ``--refine_volumewarp
  XxYxZxT``): a quadrilinear 4-D grid (:class:`mrepo.kernels.splines.LinearGrid`) of 3-D
  displacements (Å) over ``(x / Vx, y / Vy, z / Vz, t)``, t the tilt's accumulated exposure before it,
  normalised to [0, 1] (M: ``(Dose_i - MinDose) / (MaxDose - MinDose)``, i.e.
  :attr:`mrepo.workers.item_model.ItemModel.time`); node values (3, gx, gy, gz, gt) with component
  order (x, y, z). A particle's tomogram position c (Å from voxel 0) is displaced to
  ``c + d(c, t_i)`` before tilt i projects it (so it moves its image position *and* its depth,
  i.e. its defocus), as M adds the interpolated warp to the centred position before rotating.
* **Doming** (frame series; M ``Movie.GridCTFDoming``, MCore ``--refine_doming``): a natural cubic
  spline grid (:class:`mrepo.kernels.splines.CubicSplineGrid`) of defocus offsets (Å, positive =
  more underfocus) over ``(x / width, y / height, t)``, t the frame's normalised accumulated
  exposure; node values (gx, gy, gt). A particle's defocus in frame i gains ``dome(x_pi, y_pi, t_i)``
  at its image position, as M adds the doming grid to the defocus grid. M's paper also mentions
  orientation offsets for doming-like motion; those are not modelled here.

Neither model removes a gauge: a uniform volume displacement is interchangeable with per-tilt shifts
and particle positions, a uniform dome with per-particle defocus, exactly as in M. Positions enter the
grid weights detached (the gradient reaches the node values, not the positions). No Fourier layout here.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mrepo.kernels.splines import CubicSplineGrid, LinearGrid

__all__ = ["volume_warp_displacement", "doming_defocus", "check_volume_warp", "check_doming"]


def check_volume_warp(nodes_shape: tuple[int, ...]) -> None:
    """Raise ValueError unless the shape is (3, gx, gy, gz, gt) with positive sizes."""
    if len(nodes_shape) != 5 or nodes_shape[0] != 3 or min(nodes_shape) < 1:
        raise ValueError(f"volume warp nodes must be (3, gx, gy, gz, gt), got {tuple(nodes_shape)}")


def check_doming(nodes_shape: tuple[int, ...]) -> None:
    """Raise ValueError unless the shape is (gx, gy, gt) with positive sizes."""
    if len(nodes_shape) != 3 or min(nodes_shape) < 1:
        raise ValueError(f"doming nodes must be (gx, gy, gt), got {tuple(nodes_shape)}")


def volume_warp_displacement(nodes: Tensor, positions: Tensor, volume_size: Tensor, time: Tensor) -> Tensor:
    """Displacement (P, n, 3) Å of particles at ``positions`` (P, n, 3) Å (from voxel 0) in exposures
    at normalised times ``time`` (n,); ``nodes`` (3, gx, gy, gz, gt) Å, ``volume_size`` (3,) Å."""
    check_volume_warp(tuple(nodes.shape))
    grid = LinearGrid(tuple(nodes.shape[1:]))
    p, n = positions.shape[:2]
    t = time.to(positions.dtype)[None, :, None].expand(p, n, 1)
    pts = torch.cat([positions.detach() / volume_size.to(positions.dtype), t], dim=-1).reshape(-1, 4)
    out = grid.evaluate(nodes, grid.weights(pts.to(nodes.dtype)))  # (3, P*n)
    return out.reshape(3, p, n).movedim(0, -1)


def doming_defocus(nodes: Tensor, positions_px: Tensor, width: int, height: int, time: Tensor) -> Tensor:
    """Defocus offset (P, n) Å of particles at image positions ``positions_px`` (P, n, 2) (x, y) px in
    exposures at normalised times ``time`` (n,); ``nodes`` (gx, gy, gt) Å."""
    check_doming(tuple(nodes.shape))
    grid = CubicSplineGrid(tuple(nodes.shape))
    p, n = positions_px.shape[:2]
    size = torch.tensor([width, height], dtype=positions_px.dtype, device=positions_px.device)
    t = time.to(positions_px.dtype)[None, :, None].expand(p, n, 1)
    pts = torch.cat([positions_px.detach() / size, t], dim=-1).reshape(-1, 3)
    return grid.evaluate(nodes, grid.weights(pts.to(nodes.dtype))).reshape(p, n)
