"""Fourier shell statistics: FSC, resolution, spectral whitening and M's per-shell NCC sums.

Fourier layout: non-centred ``rfftn`` half-grids over the last 2 (images,
(..., h, w // 2 + 1)) or 3 (volumes, (..., d, h, w // 2 + 1)) dims. Shell index
of a Fourier pixel is round(|f| * N) with f in cycles/pixel from ``fftfreq`` /
``rfftfreq`` and N = min(spatial shape); shells 0 .. N // 2 (Nyquist) are
reported, corners beyond Nyquist are ignored. Shell i has frequency
i / (N * pixel_size) 1/Å. Sums over the half-grid weight the columns that stand
for two Hermitian partners by 2, so every sum equals the full-FFT sum.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "shell_indices",
    "num_shells",
    "shell_filter",
    "hermitian_weights",
    "shell_sum",
    "shell_frequencies",
    "fsc",
    "resolution_at",
    "spectral_whitening",
    "ShellSums",
    "normalized_cross_correlation_per_shell",
]


def _check_shape(shape) -> tuple[int, ...]:
    s = tuple(int(n) for n in shape)
    if len(s) not in (2, 3) or min(s) < 2:
        raise ValueError(f"spatial shape must be 2D or 3D with sizes >= 2, got {tuple(shape)}")
    return s


def num_shells(shape: tuple[int, ...]) -> int:
    """Number of shells from 0 to Nyquist: min(shape) // 2 + 1."""
    return min(_check_shape(shape)) // 2 + 1


def shell_indices(shape: tuple[int, ...], *, rfft: bool = True, device=None) -> Tensor:
    """Shell index (long) of every Fourier pixel of a real (h, w) or (d, h, w) array.

    Result has the rfftn half-grid shape if ``rfft`` else the full fftn shape;
    pixels beyond Nyquist get index :func:`num_shells` (a discard bin).
    """
    s = _check_shape(shape)
    n = min(s)
    freqs = [torch.fft.fftfreq(k, device=device, dtype=torch.float64) for k in s[:-1]]
    freqs.append((torch.fft.rfftfreq if rfft else torch.fft.fftfreq)(s[-1], device=device, dtype=torch.float64))
    grids = torch.meshgrid(*freqs, indexing="ij")
    r = torch.sqrt(sum(g * g for g in grids)) * n
    idx = torch.round(r).to(torch.long)
    return torch.clamp(idx, max=n // 2 + 1)


def shell_filter(volume: Tensor, weights: Tensor) -> Tensor:
    """``volume`` (z, y, x) with its transform multiplied by ``weights`` per integer shell (shells
    beyond the last use the last)."""
    ft = torch.fft.rfftn(volume)
    shells = shell_indices(tuple(volume.shape), device=volume.device).clamp(max=len(weights) - 1)
    return torch.fft.irfftn(ft * weights.to(ft.real.dtype)[shells], s=tuple(volume.shape))


def hermitian_weights(shape: tuple[int, ...], *, device=None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Weights (rfft half-grid shape) of 1 for self-paired columns (0 and even Nyquist) and 2 otherwise."""
    s = _check_shape(shape)
    w_last = s[-1] // 2 + 1
    col = torch.full((w_last,), 2.0, device=device, dtype=dtype)
    col[0] = 1.0
    if s[-1] % 2 == 0:
        col[-1] = 1.0
    return col.expand(*s[:-1], w_last)


def shell_sum(values: Tensor, shells: Tensor, n_shells: int) -> Tensor:
    """Sum values (..., *grid) into shells (grid-shaped long indices) -> (..., n_shells); differentiable."""
    grid_nd = shells.ndim
    batch = values.shape[: values.ndim - grid_nd]
    flat = values.reshape(-1, shells.numel())
    out = torch.zeros(flat.shape[0], n_shells + 2, dtype=values.dtype, device=values.device)
    out = out.index_add(1, shells.reshape(-1).clamp(max=n_shells + 1), flat)
    return out[:, :n_shells].reshape(*batch, n_shells)


def shell_frequencies(box: int, pixel_size: float, *, device=None, dtype: torch.dtype = torch.float64) -> Tensor:
    """Frequency of each shell in 1/Å: i / (box * pixel_size), i = 0 .. box // 2."""
    return torch.arange(box // 2 + 1, device=device, dtype=dtype) / (box * pixel_size)


def _spatial_ndim(x: Tensor, ndim: int | None) -> int:
    d = x.ndim if ndim is None else ndim
    if d not in (2, 3) or x.ndim < d:
        raise ValueError(f"need ndim 2 or 3 spatial dims (pass ndim= for batches), got shape {tuple(x.shape)}")
    return d


def fsc(a: Tensor, b: Tensor, mask: Tensor | None = None, *, ndim: int | None = None) -> Tensor:
    """Fourier shell correlation of real maps a, b (..., [d,] h, w) -> (..., n_shells), shells 0..Nyquist.

    ``ndim`` (2 or 3) is the number of spatial dims, default a.ndim. An optional
    real-space ``mask`` multiplies both maps first. Shells without power give 0.
    """
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    d = _spatial_ndim(a, ndim)
    if mask is not None:
        a, b = a * mask, b * mask
    shape = tuple(a.shape[-d:])
    dims = tuple(range(-d, 0))
    fa, fb = torch.fft.rfftn(a, dim=dims), torch.fft.rfftn(b, dim=dims)
    sums = normalized_cross_correlation_per_shell(fa, fb, image_shape=shape)
    return sums.correlation()


def resolution_at(fsc_curve: Tensor, pixel_size: float, box: int, threshold: float = 0.143) -> float:
    """Resolution in Å where the FSC first drops below ``threshold`` (linear interpolation between shells).

    Shell i has frequency i / (box * pixel_size). If the curve never drops below
    the threshold the Nyquist resolution (box * pixel_size) / (n_shells - 1) is
    returned; a crossing before shell 1 gives ``inf``.
    """
    c = torch.as_tensor(fsc_curve, dtype=torch.float64).detach().cpu().reshape(-1)  # host
    if c.numel() < 2:
        raise ValueError(f"fsc_curve needs at least 2 shells, got {c.numel()}")
    below = torch.nonzero(c[1:] < threshold).flatten()
    if below.numel() == 0:
        return box * pixel_size / (c.numel() - 1)
    i = int(below[0]) + 1
    hi, lo = c[i - 1].item(), c[i].item()
    x = (i - 1) + (hi - threshold) / (hi - lo) if hi > threshold else float(i - 1)
    return math.inf if x <= 0 else box * pixel_size / x


def spectral_whitening(
    images_ft: Tensor,
    image_shape: tuple[int, ...] | None = None,
    *,
    per_image: bool = False,
    eps: float = 1e-12,
) -> tuple[Tensor, Tensor]:
    """Divide rfft2 images (..., h, w // 2 + 1) by their rotationally averaged amplitude spectrum.

    The amplitude |F| is averaged per shell over all images (M's AS), or per image
    if ``per_image``. Returns (whitened images, spectrum) with the spectrum
    (n_shells,) or (..., n_shells). ``image_shape`` defaults to (h, 2 * (w' - 1)).
    Pixels beyond Nyquist use the last shell's value.
    """
    h, wr = images_ft.shape[-2:]
    shape = (h, 2 * (wr - 1)) if image_shape is None else _check_shape(image_shape)
    shells = shell_indices(shape, device=images_ft.device)
    ns = num_shells(shape)
    shells = shells.clamp(max=ns - 1)
    w = hermitian_weights(shape, device=images_ft.device, dtype=images_ft.real.dtype)
    amp = shell_sum(images_ft.abs() * w, shells, ns)
    cnt = shell_sum(w, shells, ns)
    if not per_image:
        amp = amp.reshape(-1, ns).sum(0)
        cnt = cnt * (images_ft.numel() // (h * wr))
    spectrum = amp / cnt.clamp_min(1.0)
    whitened = images_ft / (spectrum[..., shells] + eps)
    return whitened, spectrum


class ShellSums(NamedTuple):
    """Per-shell sums (..., n_shells): cross = sum Re(a conj b), power_a = sum |a|^2, power_b = sum |b|^2."""

    cross: Tensor
    power_a: Tensor
    power_b: Tensor

    def correlation(self, eps: float = 0.0) -> Tensor:
        """cross / sqrt(power_a * power_b) per shell; 0 where a power is 0."""
        den = torch.sqrt(self.power_a * self.power_b)
        ok = den > eps
        return torch.where(ok, self.cross / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(den))


def normalized_cross_correlation_per_shell(
    a_ft: Tensor,
    b_ft: Tensor,
    weights: Tensor | None = None,
    *,
    image_shape: tuple[int, ...] | None = None,
) -> ShellSums:
    """Per-shell sums of M's target function for rfft grids a_ft, b_ft (..., [d,] h, w // 2 + 1).

    Returns :class:`ShellSums` of shape (..., n_shells) (leading dims kept, so
    callers can accumulate over particles before dividing). ``weights`` (real,
    broadcastable to the grid) scale every pixel's contribution; Hermitian
    pairs are counted twice. ``image_shape`` is the real-space (h, w) or
    (d, h, w), default 2D (h, 2 * (w' - 1)).
    """
    if a_ft.shape != b_ft.shape:
        raise ValueError(f"a_ft and b_ft must have the same shape, got {tuple(a_ft.shape)} and {tuple(b_ft.shape)}")
    if image_shape is None:
        h, wr = a_ft.shape[-2:]
        image_shape = (h, 2 * (wr - 1))
    shape = _check_shape(image_shape)
    grid = shape[:-1] + (shape[-1] // 2 + 1,)
    if tuple(a_ft.shape[a_ft.ndim - len(shape) :]) != grid:
        raise ValueError(f"Fourier arrays must end with rfft grid {grid}, got {tuple(a_ft.shape)}")
    shells = shell_indices(shape, device=a_ft.device)
    ns = num_shells(shape)
    w = hermitian_weights(shape, device=a_ft.device, dtype=a_ft.real.dtype)
    if weights is not None:
        w = w * weights
    cross = shell_sum((a_ft.real * b_ft.real + a_ft.imag * b_ft.imag) * w, shells, ns)
    pa = shell_sum((a_ft.real**2 + a_ft.imag**2) * w, shells, ns)
    pb = shell_sum((b_ft.real**2 + b_ft.imag**2) * w, shells, ns)
    return ShellSums(cross, pa, pb)
