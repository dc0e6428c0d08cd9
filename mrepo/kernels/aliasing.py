"""Aliasing-free CTF premultiplication (M paper, Methods: "Avoiding CTF aliasing").

Particles are extracted at a large, aliasing-free box M, premultiplied by the
CTF computed at M, and cropped in real space to the working box m; the matching
CTF^2 model is band-limited the same way.

Layouts: real-space patches are (..., M, M) with the particle centre at pixel
M // 2; CTF arrays are non-centred ``rfft2`` half-grids (..., M, M // 2 + 1)
as produced by :func:`mrepo.kernels.ctf.ctf_2d`. Real-space crops keep the
centre: pixel M // 2 of the big box becomes pixel m // 2 of the small box.
Fourier outputs are non-centred rfft2 half-grids (..., m, m // 2 + 1) with
torch's default ("backward") normalisation, so values of a localized signal
are the same at both box sizes.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .ctf import electron_wavelength

__all__ = [
    "ctf_phase_rate",
    "aliasing_free_box_size",
    "next_fft_size",
    "crop_center",
    "premultiply_ctf",
    "ctf_squared_band_limited",
    "band_limit_filter",
    "hermitian_part",
]


def ctf_phase_rate(k: Tensor, defocus: float, voltage_kv: float, cs_mm: float) -> Tensor:
    """d gamma / d k in radians * Å at spatial frequencies k (1/Å), defocus in Å (underfocus > 0).

    gamma = pi lambda dF k^2 - pi/2 Cs lambda^3 k^4 (+ constants), so
    d gamma / d k = 2 pi lambda dF k - 2 pi Cs lambda^3 k^3.
    """
    lam = electron_wavelength(voltage_kv)
    cs = cs_mm * 1e7
    return 2.0 * math.pi * lam * defocus * k - 2.0 * math.pi * cs * lam**3 * k**3


def next_fft_size(n: int, even: bool = True) -> int:
    """Smallest size >= n whose only prime factors are 2, 3, 5, 7 (and even if ``even``)."""
    m = max(int(n), 2 if even else 1)
    while True:
        if not (even and m % 2):
            r = m
            for p in (2, 3, 5, 7):
                while r % p == 0:
                    r //= p
            if r == 1:
                return m
        m += 1


def aliasing_free_box_size(
    pixel_size: float,
    resolution: float,
    max_defocus: float,
    voltage_kv: float,
    cs_mm: float,
    *,
    min_box: int = 0,
    n_samples: int = 4096,
) -> int:
    """Minimum FFT-friendly even box (pixels) at which the CTF is not aliased up to ``resolution`` (Å).

    Along one axis a Fourier pixel spans 1 / (m * pixel_size); the CTF phase must
    change by at most pi per pixel, i.e. m >= max|d gamma/dk| / (pi * pixel_size),
    the maximum taken numerically over 0 <= k <= 1/resolution (gamma is not
    monotonic for low defocus and high Cs). Diagonals need sqrt(2) more, so
    m = sqrt(2) * max|d gamma/dk| / (pi * pixel_size), rounded up to
    :func:`next_fft_size`, and at least ``min_box`` (e.g. twice the particle
    diameter in pixels). ``max_defocus`` in Å is the largest defocus expected
    (include astigmatism and particle z spread).
    """
    if not pixel_size > 0:
        raise ValueError(f"pixel_size must be positive, got {pixel_size}")
    if not resolution >= 2.0 * pixel_size:
        raise ValueError(f"resolution {resolution} Å is beyond Nyquist (2 * pixel_size = {2 * pixel_size} Å)")
    k = torch.linspace(0.0, 1.0 / resolution, n_samples, dtype=torch.float64)  # host
    rate = ctf_phase_rate(k, abs(float(max_defocus)), voltage_kv, cs_mm).abs().max().item()
    m = math.ceil(math.sqrt(2.0) * rate / (math.pi * pixel_size) - 1e-9)
    return next_fft_size(max(m, int(min_box), 2))


def crop_center(images: Tensor, box: int) -> Tensor:
    """Real-space crop (..., N, N) -> (..., box, box) keeping pixel N // 2 at box // 2."""
    n = images.shape[-1]
    if images.ndim < 2 or images.shape[-2] != n:
        raise ValueError(f"images must be square (..., N, N), got {tuple(images.shape)}")
    if not 1 <= box <= n:
        raise ValueError(f"crop box must be in [1, {n}], got {box}")
    start = n // 2 - box // 2
    return images[..., start : start + box, start : start + box]


def premultiply_ctf(patches: Tensor, ctf_big: Tensor, out_box: int, *, fourier: bool = False) -> Tensor:
    """CTF-premultiply particle patches at the big box and crop them.

    patches: (..., M, M) real images centred at M // 2; ctf_big: CTF at the big
    box, rfft2 layout (..., M, M // 2 + 1), broadcastable against the patches.
    Returns the real-space crop (..., out_box, out_box), or its rfft2
    (..., out_box, out_box // 2 + 1) if ``fourier``.
    """
    m = patches.shape[-1]
    if patches.ndim < 2 or patches.shape[-2] != m:
        raise ValueError(f"patches must be square (..., M, M), got {tuple(patches.shape)}")
    if ctf_big.shape[-2:] != (m, m // 2 + 1):
        raise ValueError(f"ctf_big must have rfft layout (..., {m}, {m // 2 + 1}), got {tuple(ctf_big.shape)}")
    filtered = torch.fft.irfft2(torch.fft.rfft2(patches) * ctf_big, s=(m, m))
    out = crop_center(filtered, out_box)
    return torch.fft.rfft2(out) if fourier else out


def hermitian_part(filter_big: Tensor) -> Tensor:
    """``rfft2(irfft2(f)).real`` of a real rfft half-grid f (..., M, M // 2 + 1), M even, without FFTs:
    f with its self-conjugate columns (kx = 0 and kx = M / 2) averaged with their ky -> -ky mirror
    (the only part of f that irfft2 does not represent); equal up to float rounding."""
    half = filter_big.shape[-2] // 2
    out = filter_big.clone()
    for c in (slice(0, 1), slice(half, half + 1)):
        col = filter_big[..., c]
        out[..., c] = 0.5 * (col + torch.cat([col[..., :1, :], col[..., 1:, :].flip(-2)], dim=-2))
    return out


def band_limit_filter(filter_big: Tensor, out_box: int) -> Tensor:
    """Band-limit a real, even Fourier filter from box M to box m by cropping its real-space kernel.

    filter_big (..., M, M // 2 + 1) rfft layout -> (..., m, m // 2 + 1): inverse FFT,
    crop the kernel around the origin to m x m, FFT, keep the real part. For m = M the crop is
    the whole kernel, and a real filter is returned as :func:`hermitian_part` (no FFTs).
    """
    m = 2 * (filter_big.shape[-1] - 1)
    if filter_big.ndim < 2 or filter_big.shape[-2] != m:
        raise ValueError(
            f"filter_big must have rfft layout (..., M, M // 2 + 1) with even M, got {tuple(filter_big.shape)}"
        )
    if not 1 <= out_box <= m:
        raise ValueError(f"crop box must be in [1, {m}], got {out_box}")
    if out_box == m and not filter_big.is_complex():
        return hermitian_part(filter_big)
    kernel = torch.fft.irfft2(filter_big, s=(m, m))
    # ifftshift(crop_center(fftshift(kernel))) without the two full-size rolls: the kernel's
    # first ceil(out_box / 2) and last out_box // 2 rows and columns (the same values, copied once)
    head, tail = out_box - out_box // 2, out_box // 2
    rows = torch.cat([kernel[..., :head, :], kernel[..., m - tail:, :]], dim=-2)
    small = torch.cat([rows[..., :head], rows[..., m - tail:]], dim=-1)
    return torch.fft.rfft2(small).real


def ctf_squared_band_limited(ctf_big: Tensor, out_box: int) -> Tensor:
    """CTF^2 model matching :func:`premultiply_ctf`: (..., M, M // 2 + 1) -> (..., m, m // 2 + 1).

    CTF^2 at the big box, inverse FFT, real-space crop to out_box around the
    origin, FFT, real part (M paper). Fast oscillations average to ~0.5 instead
    of aliasing.
    """
    return band_limit_filter(ctf_big * ctf_big, out_box)
