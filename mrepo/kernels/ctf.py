"""Contrast transfer function (RELION's formula) and exposure weighting.

Units: frequencies in 1/Å, defocus in Å (positive = underfocus), Cs in mm,
voltage in kV, angles (astigmatism angle, phase shift, tilt) in radians,
B-factors in Å², exposure in e-/Å².

Fourier layout: 2D grids are non-centred; with ``rfft=True`` they match
``torch.fft.rfft2`` of an (h, w) image, shape (h, w // 2 + 1); with
``rfft=False`` they match ``torch.fft.fft2``, shape (h, w). Row frequency
(ky) of index i is ``torch.fft.fftfreq(h)[i] / pixel_size``, column
frequency (kx) ``rfftfreq(w)`` (or ``fftfreq(w)``) ``/ pixel_size``.
Frequency vectors are stored as (kx, ky) in the last dimension.

Sign convention (identical to RELION's ``CTF::getCTF``)::

    gamma(k) = pi lambda dF(theta) k^2 - pi/2 Cs lambda^3 k^4 + phase_shift
               + atan(Q / sqrt(1 - Q^2))
    dF(theta) = (dU + dV)/2 + (dU - dV)/2 cos(2 (theta - astigmatism_angle))
    CTF(k) = scale * sin(gamma(k)) * exp(-B k^2 / 4)

RELION writes this as ``-sin(chi)`` with ``chi = -gamma`` (its internal
defocus is negative for underfocus); the value is the same: CTF(0) = +Q.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "electron_wavelength",
    "frequency_grid_2d",
    "ctf_phase",
    "ctf_at",
    "ctf_2d",
    "exposure_weights",
    "exposure_weights_2d",
]

ParamLike = Tensor | float


def electron_wavelength(voltage_kv: float) -> float:
    """Relativistic electron wavelength in Å for an acceleration voltage in kV.

    RELION: 12.2643247 / sqrt(V (1 + 0.978466e-6 V)) with V in volts.
    """
    if not voltage_kv > 0:
        raise ValueError(f"voltage_kv must be positive, got {voltage_kv}")
    v = float(voltage_kv) * 1e3
    return 12.2643247 / math.sqrt(v * (1.0 + 0.978466e-6 * v))


def frequency_grid_2d(
    image_shape: tuple[int, int],
    pixel_size: float,
    rfft: bool = True,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Non-centred Fourier grid of an (h, w) image -> (h, w', 2) as (kx, ky) in 1/Å.

    w' = w // 2 + 1 if ``rfft`` (torch.fft.rfft2 layout) else w (fft2 layout).
    """
    if len(image_shape) != 2 or min(image_shape) < 1:
        raise ValueError(f"image_shape must be (h, w) with positive sizes, got {image_shape}")
    if not pixel_size > 0:
        raise ValueError(f"pixel_size must be positive, got {pixel_size}")
    h, w = int(image_shape[0]), int(image_shape[1])
    ky = torch.fft.fftfreq(h, d=pixel_size, device=device, dtype=dtype)
    kx = (torch.fft.rfftfreq if rfft else torch.fft.fftfreq)(w, d=pixel_size, device=device, dtype=dtype)
    gy, gx = torch.meshgrid(ky, kx, indexing="ij")
    return torch.stack([gx, gy], dim=-1)


def _as_param(value: ParamLike, like: Tensor, n_point_dims: int, pointwise: bool) -> Tensor:
    """Tensor on like's device/dtype, reshaped so that it broadcasts as documented in ctf_at."""
    if isinstance(value, Tensor):
        t = value.to(device=like.device, dtype=like.dtype)
    else:
        t = torch.as_tensor(value, device=like.device, dtype=like.dtype)
    if pointwise or t.ndim == 0:
        return t
    return t.reshape(t.shape + (1,) * n_point_dims)


def ctf_phase(
    frequencies: Tensor,
    *,
    defocus_u: ParamLike,
    defocus_v: ParamLike,
    astigmatism_angle: ParamLike,
    voltage_kv: float,
    cs_mm: float,
    amplitude_contrast: float,
    phase_shift: ParamLike = 0.0,
    pointwise: bool = False,
) -> Tensor:
    """The CTF phase gamma (radians) at frequencies (..., 2) (kx, ky) in 1/Å.

    Same arguments and broadcasting as :func:`ctf_at`; CTF = sin(gamma) * envelope.
    The astigmatic term is expanded as dF(theta) k^2 = mean k^2 + dev ((kx^2 - ky^2)
    cos 2a + 2 kx ky sin 2a), so no atan2 is taken and gradients are finite at k = 0.
    """
    if not isinstance(frequencies, Tensor) or frequencies.ndim < 1 or frequencies.shape[-1] != 2:
        shape = tuple(frequencies.shape) if isinstance(frequencies, Tensor) else type(frequencies).__name__
        raise ValueError(f"frequencies must be a tensor of shape (..., 2) (kx, ky), got {shape}")
    if not 0.0 <= amplitude_contrast < 1.0:
        raise ValueError(f"amplitude_contrast must be in [0, 1), got {amplitude_contrast}")
    if cs_mm < 0:
        raise ValueError(f"cs_mm must be non-negative, got {cs_mm}")
    lam = electron_wavelength(voltage_kv)
    nd = frequencies.ndim - 1
    du = _as_param(defocus_u, frequencies, nd, pointwise)
    dv = _as_param(defocus_v, frequencies, nd, pointwise)
    ang = _as_param(astigmatism_angle, frequencies, nd, pointwise)
    ps = _as_param(phase_shift, frequencies, nd, pointwise)
    kx, ky = frequencies[..., 0], frequencies[..., 1]
    k2 = kx * kx + ky * ky
    mean = 0.5 * (du + dv)
    dev = 0.5 * (du - dv)
    df_k2 = mean * k2 + dev * ((kx * kx - ky * ky) * torch.cos(2 * ang) + 2 * kx * ky * torch.sin(2 * ang))
    cs = cs_mm * 1e7
    amp = math.atan(amplitude_contrast / math.sqrt(1.0 - amplitude_contrast**2))
    return math.pi * lam * df_k2 - 0.5 * math.pi * cs * lam**3 * k2 * k2 + ps + amp


def ctf_at(
    frequencies: Tensor,
    *,
    defocus_u: ParamLike,
    defocus_v: ParamLike,
    astigmatism_angle: ParamLike,
    voltage_kv: float,
    cs_mm: float,
    amplitude_contrast: float,
    phase_shift: ParamLike = 0.0,
    bfactor: ParamLike = 0.0,
    scale: ParamLike = 1.0,
    pointwise: bool = False,
) -> Tensor:
    """RELION CTF at frequencies (..., 2) as (kx, ky) in 1/Å.

    Per-image parameters (defocus_u/v in Å, astigmatism_angle and phase_shift in
    radians, bfactor in Å², scale) of shape P broadcast against the leading dims
    F of ``frequencies``: the result has shape broadcast(P, ()) + F, e.g. a
    parameter of shape (n,) with frequencies (h, w, 2) gives (n, h, w). With
    ``pointwise=True`` parameters broadcast directly against F instead (e.g.
    frequencies (n, m, 2) and defocus (n, 1) give (n, m)).
    CTF = scale * sin(gamma) * exp(-B k^2 / 4), gamma as in the module docstring
    (equal to RELION's ``-sin(chi)``). Gradients are finite everywhere, including
    defocus_u == defocus_v and k = 0.
    """
    gamma = ctf_phase(
        frequencies,
        defocus_u=defocus_u,
        defocus_v=defocus_v,
        astigmatism_angle=astigmatism_angle,
        voltage_kv=voltage_kv,
        cs_mm=cs_mm,
        amplitude_contrast=amplitude_contrast,
        phase_shift=phase_shift,
        pointwise=pointwise,
    )
    nd = frequencies.ndim - 1
    out = torch.sin(gamma)
    # scale 1 and B 0 (plain numbers) leave the values as they are: no full-size products by 1
    if isinstance(scale, Tensor) or scale != 1.0:
        out = _as_param(scale, frequencies, nd, pointwise) * out
    if isinstance(bfactor, Tensor) or bfactor != 0.0:
        b = _as_param(bfactor, frequencies, nd, pointwise)
        k2 = (frequencies * frequencies).sum(-1)
        out = out * torch.exp(-0.25 * b * k2)
    return out


def ctf_2d(
    image_shape: tuple[int, int],
    pixel_size: float,
    *,
    defocus_u: ParamLike,
    defocus_v: ParamLike,
    astigmatism_angle: ParamLike,
    voltage_kv: float,
    cs_mm: float,
    amplitude_contrast: float,
    phase_shift: ParamLike = 0.0,
    bfactor: ParamLike = 0.0,
    scale: ParamLike = 1.0,
    rfft: bool = True,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """CTF on the non-centred Fourier grid of (h, w) images -> (..., h, w // 2 + 1) or (..., h, w).

    Leading dims come from the parameters' shape (see :func:`ctf_at`). If
    ``device`` is None it is taken from the first tensor parameter, if any.
    """
    if device is None:
        for p in (defocus_u, defocus_v, astigmatism_angle, phase_shift, bfactor, scale):
            if isinstance(p, Tensor):
                device = p.device
                break
    freqs = frequency_grid_2d(image_shape, pixel_size, rfft=rfft, device=device, dtype=dtype)
    return ctf_at(
        freqs,
        defocus_u=defocus_u,
        defocus_v=defocus_v,
        astigmatism_angle=astigmatism_angle,
        voltage_kv=voltage_kv,
        cs_mm=cs_mm,
        amplitude_contrast=amplitude_contrast,
        phase_shift=phase_shift,
        bfactor=bfactor,
        scale=scale,
    )


def exposure_weights(
    frequencies: Tensor,
    accumulated_exposure: ParamLike,
    *,
    tilt_angles: ParamLike | None = None,
    bfactor_per_exposure: float = 4.0,
    pointwise: bool = False,
) -> Tensor:
    """M's dose weighting at frequencies (..., d) in 1/Å (any d; only |k| is used).

    w = exp(-B k^2 / 4) with B = bfactor_per_exposure * accumulated_exposure
    (4 Å² per e-/Å², i.e. w = exp(-exposure k^2); M/Warp write this as a B-factor
    of -4 Å² per e-/Å² with the opposite sign convention), times cos(tilt) when
    ``tilt_angles`` (radians) is given. Exposure and tilts of shape P broadcast
    as in :func:`ctf_at`: result P + F, e.g. exposure (n,) with frequencies
    (h, w, 2) gives (n, h, w); ``pointwise=True`` broadcasts against F directly.
    """
    if not isinstance(frequencies, Tensor) or frequencies.ndim < 1:
        raise ValueError("frequencies must be a tensor of shape (..., d) in 1/Å")
    nd = frequencies.ndim - 1
    e = _as_param(accumulated_exposure, frequencies, nd, pointwise)
    k2 = (frequencies * frequencies).sum(-1)
    w = torch.exp(-0.25 * bfactor_per_exposure * e * k2)
    if tilt_angles is not None:
        w = w * torch.cos(_as_param(tilt_angles, frequencies, nd, pointwise))
    return w


def exposure_weights_2d(
    image_shape: tuple[int, int],
    pixel_size: float,
    accumulated_exposure: ParamLike,
    *,
    tilt_angles: ParamLike | None = None,
    bfactor_per_exposure: float = 4.0,
    rfft: bool = True,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """:func:`exposure_weights` on the 2D grid of :func:`frequency_grid_2d` -> (..., h, w')."""
    if device is None and isinstance(accumulated_exposure, Tensor):
        device = accumulated_exposure.device
    freqs = frequency_grid_2d(image_shape, pixel_size, rfft=rfft, device=device, dtype=dtype)
    return exposure_weights(
        freqs, accumulated_exposure, tilt_angles=tilt_angles, bfactor_per_exposure=bfactor_per_exposure
    )
