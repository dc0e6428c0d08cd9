"""Particle images of one item: extraction from the original frames/tilts, per-exposure
Fourier cropping, aliasing-free CTF premultiplication, exposure weights, masks, whitening.

Fourier layout: standard ``rfft2`` half-grids (..., m, m // 2 + 1), non-centred, particle
centre at pixel m // 2 (as :mod:`mrepo.kernels.extraction`, :mod:`mrepo.kernels.aliasing`).
Shapes: P particles, g exposures of one crop group. A species of box b (px) is extracted
at the aliasing-free box ``M = k * b``; exposure i is Fourier-cropped to ``b_i <= b``
(M paper, "Memory footprint": the frequencies it still contributes), i.e. to ``k * b_i``
at pixel size ``ps * b / b_i``; the premultiplied image is cropped in real space to b_i.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from mrepo.kernels.aliasing import aliasing_free_box_size, crop_center
from mrepo.kernels.ctf import ctf_2d, exposure_weights_2d, frequency_grid_2d
from mrepo.kernels.extraction import extract_patches_ft
from mrepo.kernels.fourier_crop import crop_size_for_resolution, exposure_resolution, fourier_crop
from mrepo.kernels.fsc import num_shells, shell_indices, shell_sum
from mrepo.kernels.shifts import phase_shift
from mrepo.workers.item_model import ItemModel
from mrepo.workers.optics import odd_phase, optics_ctf, optics_state

__all__ = ["PatchGroup", "PatchSource", "big_box", "exposure_sizes", "extract_groups", "premultiply",
           "premultiply_with_ctf2", "exposure_weight_grid", "circular_mask", "shell_average", "raw_crop"]


@dataclass
class PatchGroup:
    """Patches of P particles in the g exposures that share crop size ``size`` (b_g).

    ``ft`` (P, g, big, big // 2 + 1) complex64 at pixel ``pixel`` Å (Fourier-cropped from
    the box M extracted at ``centres`` (P, g, 2) px, integer, original pixels); ``exposures``
    (g,) stack indices; ``scale = size / box`` converts original pixels to this group's."""

    exposures: Tensor
    size: int
    big: int
    pixel: float
    scale: float
    ft: Tensor
    centres: Tensor


def big_box(model: ItemModel, box: int, diameter: float, resolution: float, max_defocus: float,
            min_box_factor: float) -> int:
    """Aliasing-free extraction box (multiple of ``box``) for ``resolution`` Å at ``max_defocus`` Å."""
    min_box = max(box, math.ceil(min_box_factor * diameter / model.pixel_size))
    m = aliasing_free_box_size(model.pixel_size, max(resolution, 2 * model.pixel_size), max_defocus,
                               model.voltage, model.cs, min_box=min_box)
    return box * math.ceil(m / box)


def exposure_sizes(model: ItemModel, box: int, resolution: float | None) -> np.ndarray:
    """Per-exposure crop sizes b_i (n,): the box reaching max(resolution, dose-weight-0.25 resolution);
    ``resolution=None`` keeps the full box (reconstruction)."""
    if resolution is None:
        return np.full(model.n, box)
    res = np.maximum(resolution, np.asarray(exposure_resolution(model.damage_exposure.clip(1e-6))))
    return np.array([crop_size_for_resolution(box, model.pixel_size, float(r)) for r in res])


class PatchSource(Protocol):
    """Exposures read on demand (:class:`mrepo.workers.raw_data.NormalisedExposures`): ``shape`` (n, H, W)
    and ``patches(exposures (g,), centres (g, P, 2) integer px (x, y), box)`` -> (g, P, box, box) float32
    crops with pixel box // 2 at the centres, zero outside the image."""

    @property
    def shape(self) -> tuple[int, int, int]: ...

    def patches(self, exposures: Tensor, centres: Tensor, box: int) -> Tensor: ...


def extract_groups(stack: Tensor | PatchSource, centres: Tensor, box: int, big: int, sizes: np.ndarray,
                   pixel_size: float) -> list[PatchGroup]:
    """Extract (big x big) patches at integer ``centres`` (P, n, 2) px from ``stack`` (n, H, W) — a
    tensor, or a :class:`PatchSource` that reads only the patches' pixels (the same values) — and
    Fourier-crop each exposure group to its size (see module docstring)."""
    if big % box:
        raise ValueError(f"extraction box {big} must be a multiple of the species box {box}")
    k = big // box
    dev = centres.device  # patches are made where the centres are (a stack elsewhere is copied per group)
    groups = []
    for size in sorted(set(int(s) for s in sizes), reverse=True):
        idx = torch.from_numpy(np.flatnonzero(sizes == size)).to(device=dev)
        pos = centres[:, idx].permute(1, 0, 2)  # (g, P, 2)
        if isinstance(stack, Tensor):
            ft = extract_patches_ft(stack[idx.to(stack.device)].to(device=dev), pos, big)  # (g, P, big, big//2+1)
        else:  # the crops alone, each about its own centre pixel: their rfft2 (the shift by a zero
            # remainder that extract_patches_ft would apply multiplies by exactly 1)
            ft = torch.fft.rfft2(stack.patches(idx.cpu(), pos.cpu(), big).to(device=dev))  # (g, P, big, big//2+1)
        ft = ft.permute(1, 0, 2, 3)  # (P, g, big, big//2+1)
        ft = fourier_crop(ft, k * size) if size < box else ft
        groups.append(PatchGroup(idx, size, k * size, pixel_size * box / size, size / box,
                                 ft.to(torch.complex64).contiguous(), centres[:, idx]))
    return groups


def _ctf(model: ItemModel, size: int, pixel: float, du: Tensor, dv: Tensor, ang: Tensor,
         optics: dict[str, Tensor], phase: Tensor | None) -> Tensor:
    if not (optics.keys() & {"mag", "even", "cs"}) and phase is None:
        return ctf_2d((size, size), pixel, defocus_u=du, defocus_v=dv, astigmatism_angle=ang,
                      voltage_kv=model.voltage, cs_mm=model.cs, amplitude_contrast=model.amplitude_contrast)
    # RELION's optics model: CTF at magnified frequencies, even Zernike phase subtracted from γ
    return optics_ctf(frequency_grid_2d((size, size), pixel, device=du.device), model, optics, du, dv, ang, phase)


def _demodulate(f: Tensor, size: int, pixel: float, optics: dict[str, Tensor]) -> Tensor:
    """Remove the odd aberration phase (beam tilt, odd Zernike) from data: ``f · exp(-i φ_odd(Mk))``."""
    phase = odd_phase(frequency_grid_2d((size, size), pixel, device=f.device, dtype=torch.float64), optics)
    if phase is None:
        return f
    return f * torch.polar(torch.ones_like(phase), -phase).to(f.dtype)


def _optics(model: ItemModel, group: PatchGroup, du: Tensor,
            optics: dict[str, Tensor] | None) -> tuple[dict[str, Tensor], Tensor | None]:
    """Optics (the item's own when None) and the phase shift (P, g) rad of the group's exposures."""
    optics = optics_state(model, {}, du.device) if optics is None else optics
    phase = optics.get("phase")
    return optics, None if phase is None else phase[group.exposures.to(phase.device)][None, :].expand_as(du)


def premultiply(model: ItemModel, group: PatchGroup, residual: Tensor, du: Tensor, dv: Tensor,
                ang: Tensor, optics: dict[str, Tensor] | None = None) -> Tensor:
    """CTF-premultiplied, centred particle images (P, g, b_g, b_g // 2 + 1).

    ``residual`` (P, g, 2): particle position minus extraction centre (original px); du, dv
    (P, g) Å; ang (g,) rad; ``optics`` (:attr:`Geometry.optics`; the item's own when None).
    Shift, odd-phase demodulation and CTF at the big box, real-space crop to b_g."""
    return premultiply_with_ctf2(model, group, residual, du, dv, ang, optics, ctf2=False)[0]


def premultiply_with_ctf2(model: ItemModel, group: PatchGroup, residual: Tensor, du: Tensor, dv: Tensor,
                          ang: Tensor, optics: dict[str, Tensor] | None = None, *,
                          ctf2: bool = True, ctf2_box: int | None = None,
                          fourier: bool = True) -> tuple[Tensor, Tensor | None]:
    """:func:`premultiply` and (``ctf2``) :func:`ctf_squared` from one evaluation of the big-box CTF:
    (images (P, g, b_g, b_g // 2 + 1) complex, band-limited CTF² (P, g, n, n // 2 + 1) real or None),
    n = ``ctf2_box`` (b_g ≤ n ≤ big; default b_g). ``fourier=False``: the images as the real-space
    crops (P, g, b_g, b_g) instead (their rfft2 is the default output)."""
    from mrepo.kernels.aliasing import ctf_squared_band_limited

    pixel = group.pixel
    optics, phase = _optics(model, group, du, optics)
    f = _demodulate(phase_shift(group.ft, -(residual * group.scale), (group.big, group.big)), group.big, pixel,
                    optics)
    ctf = _ctf(model, group.big, pixel, du, dv, ang[None, :].expand_as(du), optics, phase)
    img = torch.fft.irfft2(f * ctf, s=(group.big, group.big))
    box = group.size if ctf2_box is None else ctf2_box
    crop = crop_center(img, group.size)
    return torch.fft.rfft2(crop) if fourier else crop, ctf_squared_band_limited(ctf, box) if ctf2 else None


def raw_crop(group: PatchGroup) -> Tensor:
    """Uncorrected images (no CTF, no shift) cropped to b_g: (P, g, b_g, b_g // 2 + 1)."""
    img = torch.fft.irfft2(group.ft, s=(group.big, group.big))
    return torch.fft.rfft2(crop_center(img, group.size))


def ctf_squared(model: ItemModel, group: PatchGroup, du: Tensor, dv: Tensor, ang: Tensor,
                optics: dict[str, Tensor] | None = None) -> Tensor:
    """Band-limited CTF² at b_g matching :func:`premultiply` (aliasing kernel)."""
    from mrepo.kernels.aliasing import ctf_squared_band_limited

    pixel = model.pixel_size / group.scale
    optics, phase = _optics(model, group, du, optics)
    return ctf_squared_band_limited(_ctf(model, group.big, pixel, du, dv, ang[None, :].expand_as(du), optics, phase),
                                    group.size)


def exposure_weight_grid(model: ItemModel, exposures: Tensor, size: int, pixel: float, use_weights: bool) -> Tensor:
    """Amplitude weights (g, size, size // 2 + 1): data-driven ``scale * exp(-B k² / 4)`` when
    ``use_weights`` and the item has a ``weights`` model, else ``exp(-E k²) cos(tilt)``; on ``exposures``' device."""
    idx, dev = exposures.cpu().numpy(), exposures.device
    if use_weights and model.weights is not None:
        freqs = frequency_grid_2d((size, size), pixel, dtype=torch.float64, device=dev)
        k2 = (freqs * freqs).sum(-1)
        w = torch.from_numpy(model.weights[idx]).to(device=dev)
        return (w[:, 1, None, None] * torch.exp(-0.25 * w[:, 0, None, None] * k2)).float()
    e = torch.from_numpy(model.damage_exposure[idx]).to(device=dev)
    grid = exposure_weights_2d((size, size), pixel, e, dtype=torch.float64)
    return (grid * torch.from_numpy(model.tilt_scale()[idx]).to(device=dev)[:, None, None]).float()


def circular_mask(size: int, pixel: float, diameter: float, edge: float = 6.0, *,
                  device: torch.device | None = None) -> Tensor:
    """Soft circular mask (size, size) on ``device`` (default CPU), 1 inside ``diameter / 2`` Å,
    raised-cosine edge ``edge`` Å."""
    r = (torch.arange(size, dtype=torch.float64, device=device) - size // 2) * pixel
    rr = torch.sqrt(r[:, None] ** 2 + r[None, :] ** 2)
    t = ((rr - diameter / 2) / edge).clamp(0, 1)
    return (0.5 * (1 + torch.cos(math.pi * t))).float()


def shell_average(images_ft: Tensor, size: int) -> Tensor:
    """Mean amplitude per shell and exposure over particles: (P, g, size, w) -> (g, size, w)
    expanded back onto the grid (M's AS_i for whitening); shells beyond Nyquist use the last."""
    dev = images_ft.device
    shells = shell_indices((size, size), device=dev).clamp(max=num_shells((size, size)) - 1)
    ns = num_shells((size, size))
    amp = shell_sum(images_ft.abs().sum(0), shells, ns)
    cnt = shell_sum(torch.ones(size, size // 2 + 1, device=dev), shells, ns) * images_ft.shape[0]
    avg = amp / cnt.clamp_min(1)
    avg = torch.where(avg > 0, avg, avg[avg > 0].min() if (avg > 0).any() else torch.ones_like(avg))
    return avg[..., shells]
