"""Higher-order aberrations and anisotropic magnification of an optics group (RELION 3.1+ / CtfRefine).

Conventions are RELION's (src/jaz/math/Zernike.cpp, src/jaz/single_particle/obs_model.cpp,
ctf/tilt_helper.cpp):

* Zernike polynomials ``Z(m, n)(x, y)`` are evaluated at *unnormalised* spatial frequency (kx, ky) in
  1/Å after the magnification matrix: ``(x, y) = M @ (kx, ky)``;
  ``Z(m, n) = R(|m|, n, ρ) cos(m φ)`` for m >= 0, ``R(-m, n, ρ) sin(-m φ)`` for m < 0;
* rlnEvenZernike index i -> (m, n): ``k = floor(sqrt(i))``, ``m = 2 (i - k² - k)``, ``n = 2k``;
  rlnOddZernike index i: ``k = floor((sqrt(1 + 4i) - 1) / 2)``, ``n = 2k + 1``, ``m = 2 (i - k² - k) - n``;
* even phase: RELION adds it to its CTF argument (``-sin(γ_R + offset)``), i.e. mrepo's phase
  (:mod:`mrepo.kernels.ctf`, γ = -γ_R) becomes ``γ - offset``;
* odd phase φ: the predicted image is multiplied by ``exp(i φ)``; data are demodulated by ``exp(-i φ)``;
* beam tilt (rlnBeamTiltX/Y, mrad) enters the odd coefficients as RELION's ``TiltHelper::insertTilt``:
  ``Z3 = -π · 20000 · Cs λ² · tilt / 3``, coefficient 1 (x) += 2 Z3x, 0 (y) += 2 Z3y, 4 += Z3x, 3 += Z3y,
  which is the phase ``-2π Cs λ² |k|² (k · tilt)`` (Cs in Å, tilt in rad).

Fourier layout: frequencies (..., 2) as (kx, ky) in 1/Å, as :func:`mrepo.kernels.ctf.frequency_grid_2d`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .ctf import electron_wavelength

__all__ = ["Aberrations", "even_index_to_mn", "odd_index_to_mn", "zernike_cart", "zernike_phase", "magnify",
           "insert_beam_tilt", "zernike_basis", "beam_tilt_odd_coefficients"]


@dataclass(frozen=True)
class Aberrations:
    """An optics group's aberrations: even and odd Zernike coefficients (rad; beam tilt already inserted
    into ``odd``) and the 2x2 magnification matrix (None = identity)."""

    even: tuple[float, ...] = ()
    odd: tuple[float, ...] = ()
    mag: tuple[tuple[float, float], tuple[float, float]] | None = None

    @classmethod
    def from_imaging(cls, imaging: dict, voltage_kv: float, cs_mm: float) -> Aberrations | None:
        """From ``Item.imaging`` keys beam_tilt [x, y] mrad, odd_zernike, even_zernike, mag_matrix."""
        odd = list(imaging.get("odd_zernike", []))
        if "beam_tilt" in imaging:
            tx, ty = (float(v) for v in imaging["beam_tilt"])
            odd = insert_beam_tilt(odd, tx, ty, cs_mm, voltage_kv)
        even = [float(v) for v in imaging.get("even_zernike", [])]
        mag = imaging.get("mag_matrix")
        mag_t = None if mag is None else ((float(mag[0][0]), float(mag[0][1])), (float(mag[1][0]), float(mag[1][1])))
        if mag_t == ((1.0, 0.0), (0.0, 1.0)):
            mag_t = None
        if not any(even) and not any(odd) and mag_t is None:
            return None
        return cls(tuple(even), tuple(float(v) for v in odd), mag_t)


def even_index_to_mn(i: int) -> tuple[int, int]:
    """rlnEvenZernike index -> (m, n)."""
    k = int(math.isqrt(i))
    return 2 * (i - k * k - k), 2 * k


def odd_index_to_mn(i: int) -> tuple[int, int]:
    """rlnOddZernike index -> (m, n)."""
    k = int((math.sqrt(1 + 4 * i) - 1.0) / 2.0)
    n = 2 * k + 1
    return 2 * (i - k * k - k) - n, n


def _radial(m: int, n: int, rho: Tensor) -> Tensor:
    if (n - m) % 2:
        return torch.zeros_like(rho)
    out = torch.zeros_like(rho)
    for k in range((n - m) // 2 + 1):
        c = (-1) ** k * math.factorial(n - k) / (
            math.factorial(k) * math.factorial((n + m) // 2 - k) * math.factorial((n - m) // 2 - k))
        out = out + c * rho ** (n - 2 * k)
    return out


def zernike_cart(m: int, n: int, x: Tensor, y: Tensor) -> Tensor:
    """RELION's ``Zernike::Z_cart(m, n, x, y)`` (unnormalised coordinates)."""
    rho = torch.sqrt(x * x + y * y)
    phi = torch.atan2(y, x)
    if m >= 0:
        return _radial(m, n, rho) * torch.cos(m * phi)
    return _radial(-m, n, rho) * torch.sin(-m * phi)


def magnify(frequencies: Tensor, mag: Sequence[Sequence[float]] | None) -> Tensor:
    """Frequencies (..., 2) transformed by the magnification matrix: ``M @ (kx, ky)``."""
    if mag is None:
        return frequencies
    m = torch.as_tensor(mag, dtype=frequencies.dtype, device=frequencies.device)
    return frequencies @ m.T


def zernike_phase(frequencies: Tensor, coeffs: Sequence[float], *, odd: bool) -> Tensor:
    """Σ_i c_i Z_i(kx, ky) (radians) at frequencies (..., 2) (already magnified) -> (...)."""
    x, y = frequencies[..., 0], frequencies[..., 1]
    out = torch.zeros_like(x)
    for i, c in enumerate(coeffs):
        if c == 0:
            continue
        m, n = odd_index_to_mn(i) if odd else even_index_to_mn(i)
        out = out + float(c) * zernike_cart(m, n, x, y)
    return out


def insert_beam_tilt(odd: Sequence[float], tilt_x_mrad: float, tilt_y_mrad: float, cs_mm: float,
                     voltage_kv: float) -> list[float]:
    """Odd Zernike coefficients with a beam tilt added (RELION's ``TiltHelper::insertTilt``;
    the coefficients of :func:`beam_tilt_odd_coefficients`)."""
    out = [float(v) for v in odd] + [0.0] * max(0, 5 - len(odd))
    tilt = torch.tensor([tilt_x_mrad, tilt_y_mrad], dtype=torch.float64)  # host
    for i, z in enumerate(beam_tilt_odd_coefficients(tilt, cs_mm, voltage_kv).tolist()):
        out[i] += z
    return out


def zernike_basis(frequencies: Tensor, count: int, *, odd: bool) -> Tensor:
    """The first ``count`` RELION Zernike polynomials (odd or even ordering) at frequencies (..., 2)
    (1/Å, already magnified) -> (..., count); the phase is ``basis @ coeffs`` (differentiable in both)."""
    x, y = frequencies[..., 0], frequencies[..., 1]
    cols = []
    for i in range(count):
        m, n = odd_index_to_mn(i) if odd else even_index_to_mn(i)
        poly = _CARTESIAN.get((m, n))
        cols.append(poly(x, y) if poly is not None else zernike_cart(m, n, x, y))
    return torch.stack(cols, dim=-1) if cols else x.new_zeros(x.shape + (0,))


def _r2(x: Tensor, y: Tensor) -> Tensor:
    return x * x + y * y


#: Z(m, n) up to n = 4 as polynomials in (x, y): smooth at k = 0 (no atan2/sqrt), so gradients
#: with respect to magnified frequencies stay finite there.
_CARTESIAN = {
    (-1, 1): lambda x, y: y, (1, 1): lambda x, y: x,
    (-3, 3): lambda x, y: 3 * x * x * y - y ** 3, (-1, 3): lambda x, y: (3 * _r2(x, y) - 2) * y,
    (1, 3): lambda x, y: (3 * _r2(x, y) - 2) * x, (3, 3): lambda x, y: x ** 3 - 3 * x * y * y,
    (0, 0): lambda x, y: torch.ones_like(x), (-2, 2): lambda x, y: 2 * x * y,
    (0, 2): lambda x, y: 2 * _r2(x, y) - 1, (2, 2): lambda x, y: x * x - y * y,
    (-4, 4): lambda x, y: 4 * x ** 3 * y - 4 * x * y ** 3, (-2, 4): lambda x, y: (4 * _r2(x, y) - 3) * 2 * x * y,
    (0, 4): lambda x, y: 6 * _r2(x, y) ** 2 - 6 * _r2(x, y) + 1,
    (2, 4): lambda x, y: (4 * _r2(x, y) - 3) * (x * x - y * y),
    (4, 4): lambda x, y: x ** 4 - 6 * x * x * y * y + y ** 4,
}


def beam_tilt_odd_coefficients(tilt_mrad: Tensor, cs_mm: float, voltage_kv: float) -> Tensor:
    """Odd Zernike coefficients (5,) of a beam tilt (2,) (x, y) mrad, as :func:`insert_beam_tilt`
    (differentiable in ``tilt_mrad``)."""
    lam = electron_wavelength(voltage_kv)
    z3 = -cs_mm * 20000 * lam * lam * 3.141592654 * tilt_mrad / 3.0  # (2,) (x, y)
    zero = z3.new_zeros(())
    return torch.stack([2 * z3[1], 2 * z3[0], zero, z3[1], z3[0]])
