"""Species maps and masks rendered from pseudo-atomic models.

Maps are (box, box, box) float32 arrays indexed (z, y, x); voxel ``(k, j, i)``
sits at ``((i, j, k) - box // 2) * pixel_size`` Å from the model origin. A
voxel holds the density sampled at its centre times ``pixel_size**3`` (mass
per voxel), so summing a map along z gives the projected mass per pixel that
:func:`mrepo.sim.render.project_atoms` renders analytically.
No Fourier layout is involved in this module.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from mrepo.sim.atoms import PseudoAtomicModel

__all__ = ["render_map", "soft_sphere_mask", "density_mask", "gaussian_factors"]


def gaussian_factors(
    centres_A: torch.Tensor, sigmas_A: torch.Tensor, n: int, pixel_size: float
) -> torch.Tensor:
    """Unnormalised 1D Gaussian factors exp(-(x_i - c_a)^2 / (2 s_a^2)): (..., a) -> (..., a, n).

    ``x_i = (i - n // 2) * pixel_size`` in Å.
    """
    grid = (torch.arange(n, dtype=centres_A.dtype, device=centres_A.device) - n // 2) * pixel_size
    return torch.exp(-((grid - centres_A[..., None]) ** 2) / (2 * sigmas_A[..., None] ** 2))


def render_map(atoms: PseudoAtomicModel, box: int, pixel_size: float) -> np.ndarray:
    """Render the model as a (box, box, box) float32 map, (z, y, x), mass per voxel."""
    if box < 2 or pixel_size <= 0:
        raise ValueError(f"need box >= 2 and pixel_size > 0, got box={box}, pixel_size={pixel_size}")
    c = torch.from_numpy(np.asarray(atoms.centres, dtype=np.float64))
    s = torch.from_numpy(np.asarray(atoms.sigmas, dtype=np.float64))
    w = torch.from_numpy(np.asarray(atoms.weights, dtype=np.float64))
    norm = w * (2 * np.pi * s**2) ** -1.5 * pixel_size**3
    gx, gy, gz = (gaussian_factors(c[:, k], s, box, pixel_size) for k in range(3))
    vol = torch.einsum("az,ay,ax->zyx", gz * norm[:, None], gy, gx)
    return vol.numpy().astype(np.float32)


def _radius_grid(box: int, pixel_size: float) -> np.ndarray:
    r = (np.arange(box) - box // 2) * pixel_size
    z, y, x = np.meshgrid(r, r, r, indexing="ij")
    return np.sqrt(x**2 + y**2 + z**2)


def soft_sphere_mask(box: int, pixel_size: float, radius_A: float, edge_A: float = 6.0) -> np.ndarray:
    """Spherical mask (box, box, box) float32: 1 inside ``radius_A``, raised-cosine edge of ``edge_A`` Å."""
    if radius_A <= 0 or edge_A < 0:
        raise ValueError(f"need radius_A > 0 and edge_A >= 0, got {radius_A}, {edge_A}")
    r = _radius_grid(box, pixel_size)
    t = np.clip((r - radius_A) / max(edge_A, 1e-9), 0.0, 1.0)
    return (0.5 * (1 + np.cos(np.pi * t))).astype(np.float32)


def density_mask(
    volume: np.ndarray,
    pixel_size: float,
    threshold: float = 0.05,
    lowpass_A: float = 8.0,
    dilate_A: float = 3.0,
    edge_A: float = 6.0,
) -> np.ndarray:
    """Soft mask from density: low-pass (Gaussian, sigma ``lowpass_A / 4`` Å), threshold at
    ``threshold`` x max, dilate by ``dilate_A`` Å, raised-cosine edge of ``edge_A`` Å."""
    if volume.ndim != 3:
        raise ValueError(f"volume must be 3D (z, y, x), got shape {volume.shape}")
    smooth = ndimage.gaussian_filter(volume.astype(np.float64), lowpass_A / 4 / pixel_size)
    core = smooth > threshold * smooth.max()
    dist = ndimage.distance_transform_edt(~core) * pixel_size
    t = np.clip((dist - dilate_A) / max(edge_A, 1e-9), 0.0, 1.0)
    return (0.5 * (1 + np.cos(np.pi * t))).astype(np.float32)
