"""Subpixel extraction of square patches from images.

Real space: images (..., H, W) indexed (y, x); positions (..., n, 2) in pixels as
(x, y) of each patch centre; the patch's pixel (box//2, box//2) sits exactly at
the position. A patch is an integer crop around the rounded position followed by
a Fourier (circular, band-limited) shift by the subpixel remainder in [-0.5, 0.5].
Pixels outside the image are zero (``padding="zeros"``) or mirrored about the
edge pixels without repeating them (``padding="reflect"``, like numpy "reflect").

Fourier layout of :func:`extract_patches_ft`: the standard 2D layout,
``torch.fft.rfft2`` of the (box, box) patch (non-centred), shape
(..., n, box, box//2+1), row frequencies ``fftfreq(box)``, columns ``rfftfreq(box)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mrepo.kernels.shapes import broadcast_shapes
from mrepo.kernels.shifts import phase_shift

_PADDINGS = ("zeros", "reflect")


def _reflect(index: Tensor, size: int) -> Tensor:
    if size == 1:
        return torch.zeros_like(index)
    period = 2 * (size - 1)
    j = index % period
    return torch.where(j >= size, period - j, j)


def _integer_crops(
    images: Tensor, image_index: Tensor, centres: Tensor, box: int, padding: str
) -> Tensor:
    """Crops (B, n, box, box) with pixel box//2 at integer ``centres`` (B, n, 2) (x, y)
    from ``images[image_index]`` (``images`` (Bi, H, W), ``image_index`` (B,))."""
    h, w = images.shape[-2:]
    offs = torch.arange(box, device=images.device) - box // 2
    cols = centres[..., 0, None] + offs  # (B, n, box)
    rows = centres[..., 1, None] + offs
    if padding == "zeros":
        valid = ((rows >= 0) & (rows < h))[..., :, None] & ((cols >= 0) & (cols < w))[..., None, :]
        rows, cols = rows.clamp(0, h - 1), cols.clamp(0, w - 1)
    else:
        rows, cols = _reflect(rows, h), _reflect(cols, w)
    batch = image_index[:, None, None, None] * (h * w)
    flat = batch + rows[..., :, None] * w + cols[..., None, :]
    crops = images.reshape(-1).take(flat)
    if padding == "zeros":
        crops = crops * valid
    return crops


def extract_patches_ft(
    images: Tensor, positions: Tensor, box: int, padding: str = "zeros"
) -> Tensor:
    """rfft2 of (box, box) patches centred at subpixel ``positions``.

    ``images`` (..., H, W) real; ``positions`` (..., n, 2) pixels (x, y), leading
    dimensions broadcast with the images'. Returns (..., n, box, box//2+1) complex,
    differentiable w.r.t. ``positions`` and ``images``.
    """
    if images.ndim < 2 or images.is_complex():
        raise ValueError(f"images must be real (..., H, W), got {tuple(images.shape)} {images.dtype}")
    if positions.ndim < 2 or positions.shape[-1] != 2:
        raise ValueError(f"positions must have shape (..., n, 2) as (x, y), got {tuple(positions.shape)}")
    if not isinstance(box, int) or box < 1:
        raise ValueError(f"box must be a positive integer, got {box!r}")
    if padding not in _PADDINGS:
        raise ValueError(f"padding must be one of {_PADDINGS}, got {padding!r}")
    h, w = images.shape[-2:]
    lead = broadcast_shapes(images.shape[:-2], positions.shape[:-2])
    n = positions.shape[-2]
    img_lead = images.shape[:-2]
    img_index = torch.arange(math.prod(img_lead), device=images.device).reshape(img_lead)
    img_index = img_index.expand(lead).reshape(-1)
    pos = positions.to(images.dtype).expand(*lead, n, 2).reshape(-1, n, 2)
    centres = torch.round(pos.detach()).long()
    remainder = pos - centres.to(pos.dtype)
    flat_images = images.reshape(-1, h, w)
    crops = _integer_crops(flat_images, img_index, centres, box, padding)
    ft = phase_shift(torch.fft.rfft2(crops), -remainder, (box, box))
    return ft.reshape(*lead, n, box, box // 2 + 1)


def extract_patches(
    images: Tensor, positions: Tensor, box: int, padding: str = "zeros"
) -> Tensor:
    """Real (..., n, box, box) patches whose pixel box//2 sits at ``positions``
    (..., n, 2) pixels (x, y); see :func:`extract_patches_ft`."""
    return torch.fft.irfft2(extract_patches_ft(images, positions, box, padding), s=(box, box))
