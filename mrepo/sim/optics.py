"""Optical aberrations the simulator can inject (issue 15 ground truth): anisotropic magnification,
beam tilt and trefoil.

The simulator renders them on its own path, not through the refinement's image model:

* magnification ``M`` (2x2, on frequencies as RELION's rlnMagMat: the data at frequency k are the
  unmagnified projection at ``M k``) is rendered in real space: an atom's projected Gaussian is
  evaluated at ``M^-T (r - c)`` around the particle centre c (exact, non-separable), and the CTF
  and the odd phase below are evaluated at ``M k``;
* beam tilt t (mrad, x/y) is the coma phase ``φ = -2π Cs λ² |k|² (k · t)`` (Cs in Å, t in rad);
* four-fold astigmatism (a, b) rad: ``a (4 kx³ ky - 4 kx ky³) + b (kx⁴ - 6 kx² ky² + ky⁴)`` subtracted
  from γ (RELION's even Zernike coefficients 4 and 8, an offset of its CTF argument);
* trefoil (a, b) rad: ``φ = a (3 kx² ky - ky³) + b (kx³ - 3 kx ky²)`` (k in 1/Å), i.e. RELION's odd
  Zernike coefficients 2 and 5;

the rendered image's transform is multiplied by ``exp(i φ(M k))`` (odd in k, so the image stays real).
Frequencies (..., 2) (kx, ky) in 1/Å; layout of :func:`mrepo.kernels.ctf.frequency_grid_2d`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from mrepo.kernels.ctf import electron_wavelength

__all__ = ["SimAberrations", "magnified", "odd_phase_factor", "even_phase"]

_IDENTITY = ((1.0, 0.0), (0.0, 1.0))


@dataclass(frozen=True)
class SimAberrations:
    """Injected optics: ``mag_matrix`` (2x2, frequencies), ``beam_tilt_mrad`` (x, y),
    ``trefoil`` (RELION odd Zernike coefficients 2 and 5, rad), ``phase_shift_deg`` (phase plate)."""

    mag_matrix: tuple[tuple[float, float], tuple[float, float]] = _IDENTITY
    beam_tilt_mrad: tuple[float, float] = (0.0, 0.0)
    trefoil: tuple[float, float] = (0.0, 0.0)
    phase_shift_deg: float = 0.0  # phase-plate phase shift added to the CTF phase γ
    four_fold: tuple[float, float] = (0.0, 0.0)  # four-fold astigmatism: RELION even Zernike 4 and 8, rad

    def __post_init__(self) -> None:
        m = np.asarray(self.mag_matrix, dtype=float)
        if m.shape != (2, 2) or not np.all(np.isfinite(m)) or abs(np.linalg.det(m) - 1.0) > 0.2:
            raise ValueError(f"mag_matrix must be a 2x2 matrix near the identity, got {self.mag_matrix}")

    @property
    def has_magnification(self) -> bool:
        return tuple(map(tuple, np.asarray(self.mag_matrix, float).tolist())) != _IDENTITY

    @property
    def has_odd(self) -> bool:
        return any(self.beam_tilt_mrad) or any(self.trefoil)

    @property
    def active(self) -> bool:
        return self.has_magnification or self.has_odd or self.has_even or self.phase_shift_deg != 0

    @property
    def has_even(self) -> bool:
        return any(self.four_fold)

    def distortion(self) -> np.ndarray:
        """Real-space map from image offsets to unmagnified ones: ``M^-T`` (2, 2)."""
        return np.linalg.inv(np.asarray(self.mag_matrix, dtype=float)).T

    def to_json(self) -> dict:
        """The truth as RELION names it: rlnMagMat (mag_matrix), rlnBeamTiltX/Y (beam_tilt, mrad) and
        rlnOddZernike without the beam tilt (odd_zernike, rad)."""
        return {"mag_matrix": [list(map(float, r)) for r in self.mag_matrix],
                "beam_tilt": [float(v) for v in self.beam_tilt_mrad],
                "odd_zernike": [0.0, 0.0, float(self.trefoil[0]), 0.0, 0.0, float(self.trefoil[1])],
                "phase_shift_deg": float(self.phase_shift_deg),
                "even_zernike": [0.0] * 4 + [float(self.four_fold[0]), 0.0, 0.0, 0.0, float(self.four_fold[1])],
                "mag_matrix_convention": "on frequencies: data(k) = projection(M k) (RELION rlnMagMat)",
                "odd_phase_convention": "data(k) = e^{i phi(Mk)} x even image; beam tilt phi = -2 pi Cs lambda^2 "
                                        "|k|^2 (k . tilt)"}


def magnified(frequencies: Tensor, ab: SimAberrations) -> Tensor:
    """``M k`` for frequencies (..., 2)."""
    m = torch.tensor(ab.mag_matrix, dtype=frequencies.dtype)
    return torch.einsum("ij,...j->...i", m, frequencies)


def odd_phase_factor(frequencies: Tensor, ab: SimAberrations, cs_mm: float, voltage_kv: float) -> Tensor:
    """``exp(i φ(M k))`` (...) complex for frequencies (..., 2) before magnification."""
    k = magnified(frequencies, ab)
    kx, ky = k[..., 0], k[..., 1]
    k2 = kx * kx + ky * ky
    lam = electron_wavelength(voltage_kv)
    tx, ty = (1e-3 * float(v) for v in ab.beam_tilt_mrad)
    phi = -2.0 * math.pi * cs_mm * 1e7 * lam**2 * k2 * (kx * tx + ky * ty)
    a, b = (float(v) for v in ab.trefoil)
    phi = phi + a * (3 * kx * kx * ky - ky**3) + b * (kx**3 - 3 * kx * ky * ky)
    return torch.polar(torch.ones_like(phi), phi)


def even_phase(magnified_k: Tensor, ab: SimAberrations) -> Tensor:
    """Four-fold astigmatism ``a (4 kx³ ky - 4 kx ky³) + b (kx⁴ - 6 kx² ky² + ky⁴)`` (rad) at ``M k``,
    subtracted from γ as RELION's even Zernike offset."""
    kx, ky = magnified_k[..., 0], magnified_k[..., 1]
    a, b = (float(v) for v in ab.four_fold)
    return a * (4 * kx**3 * ky - 4 * kx * ky**3) + b * (kx**4 - 6 * kx * kx * ky * ky + ky**4)
