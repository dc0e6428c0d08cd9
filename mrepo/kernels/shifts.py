"""Fourier-domain translations of images.

Fourier layout: the standard 2D layout, ``torch.fft.rfft2`` of real images
(..., h, w) (non-centred), row frequencies ``fftfreq(h)``, column frequencies
``rfftfreq(w)``, in cycles per pixel. Shifts are in pixels as (x, y).

A shift by non-integer pixels is a circular, band-limited translation. For even
sizes the Nyquist row/column receives the phase of frequency -N/2, as
``torch.fft`` indexes it; ``irfft2`` keeps the real-valued part.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _check_shape(images_ft: Tensor, image_shape: tuple[int, int]) -> None:
    h, w = image_shape
    if images_ft.ndim < 2 or tuple(images_ft.shape[-2:]) != (h, w // 2 + 1):
        raise ValueError(
            f"images_ft must have shape (..., {h}, {w // 2 + 1}) for image_shape={image_shape}, "
            f"got {tuple(images_ft.shape)}"
        )


def phase_ramp(shifts: Tensor, image_shape: tuple[int, int]) -> Tensor:
    """exp(-2πi (kx sx + ky sy)) on the rfft grid: (..., h, w//2+1) complex for
    ``shifts`` (..., 2) in pixels (x, y)."""
    if shifts.shape[-1:] != (2,):
        raise ValueError(f"shifts must have shape (..., 2) as (x, y), got {tuple(shifts.shape)}")
    h, w = image_shape
    ky = torch.fft.fftfreq(h, device=shifts.device, dtype=shifts.dtype)
    kx = torch.fft.rfftfreq(w, device=shifts.device, dtype=shifts.dtype)
    angle = -2 * math.pi * (
        shifts[..., 0, None, None] * kx[None, :] + shifts[..., 1, None, None] * ky[:, None]
    )
    return torch.complex(torch.cos(angle), torch.sin(angle))


def phase_shift(images_ft: Tensor, shifts: Tensor, image_shape: tuple[int, int]) -> Tensor:
    """Translate images by +``shifts`` (..., 2) pixels (x, y) in Fourier space.

    ``images_ft`` (..., h, w//2+1) complex; leading dimensions broadcast with those of
    ``shifts``. Differentiable w.r.t. ``shifts`` and ``images_ft``.
    """
    _check_shape(images_ft, image_shape)
    if not images_ft.is_complex():
        raise ValueError(f"images_ft must be complex, got {images_ft.dtype}")
    return images_ft * phase_ramp(shifts.to(images_ft.real.dtype), image_shape)


def shift_images(images: Tensor, shifts: Tensor) -> Tensor:
    """Real images (..., h, w) translated by +``shifts`` (..., 2) pixels (x, y),
    circularly, with band-limited (Fourier) interpolation."""
    if images.ndim < 2 or images.is_complex():
        raise ValueError(f"images must be real (..., h, w), got {tuple(images.shape)} {images.dtype}")
    shape = (images.shape[-2], images.shape[-1])
    return torch.fft.irfft2(phase_shift(torch.fft.rfft2(images), shifts, shape), s=shape)
