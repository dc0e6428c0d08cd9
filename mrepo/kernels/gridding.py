"""The centred 3D half-transform layout, trilinear stencils for insertion and the
gridding corrections (real-space transforms of the interpolation kernels).
Extraction samples this layout with :mod:`mrepo.kernels.interpolation`.

Fourier layout ("centred half-transform with duplicated Nyquist"): for a padded
real-space box of size ``D`` and ``h = D // 2``, a grid of shape
``(2h + 1, 2h + 1, h + 1)`` holds at ``[iz, iy, ix]`` the 3D DFT coefficient of
frequency ``(kz, ky, kx) = (iz - h, iy - h, ix)`` (cycles per ``D`` voxels),
computed with the real-space origin at voxel ``D // 2``. For even ``D`` the
Nyquist planes ``kz = ±h`` (and ``ky = ±h``) are the same frequency, stored
twice so that every trilinear neighbourhood inside the sphere ``|k| <= h`` is
in range without wrapping. Only ``kx >= 0`` is stored; ``kx < 0`` comes from
Friedel symmetry ``F(-k) = conj(F(k))``.

Coordinates are given as ``(x, y, z)`` in the same units (padded frequency
index), shape ``(..., 3)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def half_grid_shape(padded_size: int) -> tuple[int, int, int]:
    """Shape ``(2h+1, 2h+1, h+1)`` of the centred half-transform for box ``padded_size``."""
    h = padded_size // 2
    return (2 * h + 1, 2 * h + 1, h + 1)


@dataclass
class Stencil:
    """Trilinear stencil of points on the centred half-transform.

    ``index``: (M, 8) int64 flat indices of the 8 neighbours, ordered (z, y, x)
    bits with x fastest; ``weight``: (M, 8) trilinear weights (differentiable
    w.r.t. the coordinates); ``sign``: (M,) +1, or -1 where the point was
    mirrored through the origin (its value is the complex conjugate).
    """

    index: Tensor
    weight: Tensor
    sign: Tensor


def _neighbour_offsets(grid_shape: tuple[int, int, int], device: torch.device) -> Tensor:
    _, ny, nx = grid_shape
    dz = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1], device=device) * (ny * nx)
    dy = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1], device=device) * nx
    dx = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1], device=device)
    return dz + dy + dx


def trilinear_stencil(coords: Tensor, grid_shape: tuple[int, int, int]) -> Stencil:
    """Stencil for ``coords`` (M, 3) as (x, y, z) frequency indices with ``|k| <= h``.

    Points with ``x < 0`` are mirrored (``sign = -1``). Lower corners are clamped
    so that the upper corner stays in the grid (the fraction then reaches 1), so
    points exactly on the outer planes are exact.
    """
    nz, ny, nx = grid_shape
    h = nx - 1
    sign = torch.where(coords[:, 0] < 0, -1.0, 1.0).to(coords.dtype)
    c = coords * sign[:, None]
    x = c[:, 0]
    y = c[:, 1] + h
    z = c[:, 2] + h
    with torch.no_grad():
        x0 = torch.floor(x).clamp_(0, nx - 2)
        y0 = torch.floor(y).clamp_(0, ny - 2)
        z0 = torch.floor(z).clamp_(0, nz - 2)
    fx, fy, fz = x - x0, y - y0, z - z0
    base = ((z0 * ny + y0) * nx + x0).long()
    index = base[:, None] + _neighbour_offsets(grid_shape, coords.device)[None, :]
    wz = torch.stack((1 - fz, fz), dim=-1)
    wy = torch.stack((1 - fy, fy), dim=-1)
    wx = torch.stack((1 - fx, fx), dim=-1)
    weight = (wz[:, :, None, None] * wy[:, None, :, None] * wx[:, None, None, :]).reshape(-1, 8)
    return Stencil(index=index, weight=weight, sign=sign)


def gather(grid: Tensor, stencil: Stencil) -> Tensor:
    """Interpolate the complex ``grid`` at the stencil points: (M,) complex."""
    flat = torch.view_as_real(grid).reshape(-1, 2)
    m = stencil.index.shape[0]
    vals = flat.index_select(0, stencil.index.reshape(-1)).view(m, 8, 2)
    out = (vals * stencil.weight[:, :, None]).sum(dim=1)
    out = out * torch.stack((torch.ones_like(stencil.sign), stencil.sign), dim=-1)
    return torch.view_as_complex(out.contiguous())


def scatter(
    values: Tensor, weights: Tensor, stencil: Stencil, data: Tensor, weight: Tensor
) -> None:
    """Add ``values`` (M,) complex and ``weights`` (M,) real into ``data`` / ``weight``
    (in place) with the stencil's trilinear weights, conjugating mirrored points.

    ``data`` is a complex grid, or a real ``(2, *grid)`` pair of planes (real part, imaginary
    part; the layout of :class:`mrepo.workers.api.HalfSums`): every element receives the same
    additions in the same order either way, so both give bit-identical sums."""
    w = stencil.weight
    vr = torch.view_as_real(values) * torch.stack(
        (torch.ones_like(stencil.sign), stencil.sign), dim=-1
    )
    planar = not data.is_complex()
    contrib = (w[:, :, None] * vr[:, None, :]).reshape(-1, 2).to(data.dtype if planar else data.real.dtype)
    idx = stencil.index.reshape(-1)
    if planar:
        data[0].view(-1).index_add_(0, idx, contrib[:, 0])
        data[1].view(-1).index_add_(0, idx, contrib[:, 1])
    else:
        torch.view_as_real(data).view(-1, 2).index_add_(0, idx, contrib)
    weight.view(-1).index_add_(0, idx, (w * weights[:, None]).reshape(-1).to(weight.dtype))


def gridding_correction(
    padded_size: int, size: int, power: int, device: torch.device, dtype: torch.dtype
) -> Tensor:
    """Separable ``sinc^power(r / padded_size)``, the real-space transform of a
    B-spline kernel of degree ``power - 1`` on a ``padded_size`` Fourier grid (2:
    trilinear, 4: cubic B-spline), on the central ``size``³ voxels (offsets
    ``i - size // 2`` from the centre, voxels): (size, size, size)."""
    r = torch.arange(size, device=device, dtype=dtype) - size // 2
    s = torch.sinc(r / padded_size) ** power
    return s[:, None, None] * s[None, :, None] * s[None, None, :]


def sinc2(padded_size: int, size: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Separable sinc² of a unit trilinear kernel (:func:`gridding_correction`, power 2)."""
    return gridding_correction(padded_size, size, 2, device, dtype)
