"""Fourier cropping and padding of square images (change of sampling, same field
of view), and M's exposure-dependent cropping.

Fourier layout: the standard 2D layout, ``torch.fft.rfft2`` of real (n, n) images
(non-centred), shape (..., n, n//2+1), row frequencies ``fftfreq(n)``, column
frequencies ``rfftfreq(n)``.

Values are scaled by (new / old)² so that ``irfft2`` of the result keeps the
real-space values (and the mean). For even sizes the Nyquist coefficients are
split (pad) or folded (crop) between ±N/2, so that ``fourier_pad`` is exact
trigonometric interpolation of a real image and ``fourier_crop(fourier_pad(x))``
returns ``x``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _square_size(images_ft: Tensor) -> int:
    if images_ft.ndim < 2 or not images_ft.is_complex():
        raise ValueError(f"images_ft must be complex (..., n, n//2+1), got {tuple(images_ft.shape)}")
    n = images_ft.shape[-2]
    if images_ft.shape[-1] != n // 2 + 1:
        raise ValueError(f"images_ft must be (..., n, n//2+1) of a square image, got {tuple(images_ft.shape)}")
    return n


def _rows(n_small: int, n_big: int, device: torch.device) -> Tensor:
    """Row indices in the big grid of the small grid's frequencies fftfreq(n_small)."""
    k = torch.fft.fftfreq(n_small, d=1.0 / n_small, device=device).round().long()
    return k % n_big


def fourier_crop(images_ft: Tensor, new_size: int) -> Tensor:
    """Crop (..., n, n//2+1) transforms to (..., new_size, new_size//2+1), new_size <= n."""
    n = _square_size(images_ft)
    m = new_size
    if not 1 <= m <= n:
        raise ValueError(f"new_size must be in [1, {n}], got {new_size}")
    out = images_ft.index_select(-2, _rows(m, n, images_ft.device))[..., : m // 2 + 1]
    if m % 2 == 0 and m < n:
        out = out.clone()
        # fold +m/2 onto the single Nyquist row (-m/2) and Nyquist column
        out[..., m // 2, :] = out[..., m // 2, :] + images_ft[..., m // 2, : m // 2 + 1]
        mate_rows = (-torch.arange(m, device=images_ft.device)) % m
        col = out[..., :, m // 2]
        out[..., :, m // 2] = col + col[..., mate_rows].conj()
    return out * (m / n) ** 2


def fourier_pad(images_ft: Tensor, new_size: int) -> Tensor:
    """Zero-pad (..., n, n//2+1) transforms to (..., new_size, new_size//2+1), new_size >= n."""
    n = _square_size(images_ft)
    m = new_size
    if m < n:
        raise ValueError(f"new_size must be >= {n}, got {new_size}")
    src = images_ft
    if n % 2 == 0 and m > n:
        src = src.clone()
        src[..., n // 2, :] = src[..., n // 2, :] / 2  # Nyquist row, split between ±n/2
        src[..., :, n // 2] = src[..., :, n // 2] / 2  # Nyquist column, mate implied
    out = images_ft.new_zeros((*images_ft.shape[:-2], m, m // 2 + 1))
    out[..., :, : n // 2 + 1] = out[..., :, : n // 2 + 1].index_copy(-2, _rows(n, m, out.device), src)
    if n % 2 == 0 and m > n:
        out[..., n // 2, : n // 2 + 1] = src[..., n // 2, :]
    return out * (m / n) ** 2


def crop_size_for_resolution(size: int, pixel_size: float, resolution_angstrom: float) -> int:
    """Smallest even box (<= size) whose Nyquist frequency reaches 1 / resolution."""
    if pixel_size <= 0 or resolution_angstrom <= 0:
        raise ValueError(
            f"pixel_size and resolution must be positive, got {pixel_size}, {resolution_angstrom}"
        )
    m = 2 * math.ceil(size * pixel_size / resolution_angstrom - 1e-9)
    return int(min(size, max(m, 2)))


def crop_to_resolution(
    images_ft: Tensor, pixel_size: float, resolution_angstrom: float
) -> tuple[Tensor, float]:
    """Fourier-crop (..., n, n//2+1) transforms to the smallest box still containing
    1 / ``resolution_angstrom`` (Å); returns ``(cropped, new_pixel_size)`` in Å."""
    n = _square_size(images_ft)
    m = crop_size_for_resolution(n, pixel_size, resolution_angstrom)
    return fourier_crop(images_ft, m), pixel_size * n / m


def exposure_resolution(
    exposure: float | Tensor,
    bfactor_per_exposure: float = 4.0,
    weight_threshold: float = 0.25,
) -> float | Tensor:
    """Resolution (Å) where the dose weighting exp(-B k² / 4), B = bfactor_per_exposure
    · exposure (Å², exposure in e⁻/Å²), falls to ``weight_threshold`` (M: 1/f_max with
    f_max = sqrt(ln 4 / exposure)); infinite for zero exposure."""
    if not 0 < weight_threshold < 1:
        raise ValueError(f"weight_threshold must be in (0, 1), got {weight_threshold}")
    e = torch.as_tensor(exposure, dtype=torch.float64, device=exposure.device if isinstance(exposure, Tensor) else None)
    if bool((e < 0).any()):
        raise ValueError("exposure must be >= 0")
    f_max = torch.sqrt(-4 * math.log(weight_threshold) / (bfactor_per_exposure * e))
    res = 1.0 / f_max
    return float(res) if res.ndim == 0 and not isinstance(exposure, Tensor) else res


def crop_to_exposure(
    images_ft: Tensor,
    pixel_size: float,
    refine_resolution: float,
    exposure: float,
    bfactor_per_exposure: float = 4.0,
) -> tuple[Tensor, float]:
    """M's per-frame/tilt memory saving: crop to max(refinement resolution, the
    resolution where the dose weight falls below 0.25). Returns (cropped, pixel size Å)."""
    res = max(refine_resolution, float(exposure_resolution(exposure, bfactor_per_exposure)))
    return crop_to_resolution(images_ft, pixel_size, res)
