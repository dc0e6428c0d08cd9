"""Refinable optics of one item (M / MCore ``--refine_mag``, ``--ctf_zernike3``, ``--ctf_zernike4``,
``--ctf_cs``, ``--ctf_phase``; RELION CtfRefine's parametrisation, :mod:`mrepo.kernels.aberrations`).

Parameter groups (offsets from the item's imaging, zero = unchanged; units chosen so that
L-BFGS sees comparable scales, :data:`OPTICS_UNITS`):

* ``mag`` (2,) ‰ (a, c): anisotropic magnification on frequencies
  ``M = M0 + 1e-3 · [[a, c], [c, -a]]`` (M0 from ``imaging["mag_matrix"]``, identity when absent): a
  symmetric, traceless change (stretch along one axis, shrink across it). Its antisymmetric part, an
  in-plane rotation of every particle, is the poses' job (refined, it followed the pose noise by
  0.2 %); its isotropic part, the pixel size, is confounded with any mismatch between the radial
  spectra of reference and data in M's normalised target (measured: −0.09 % with 1 Å atoms, −1 %
  with 2 Å atoms on clean simulated data), so it stays at the imported calibration. The data at frequency k are the reference
  projection at ``M k`` (RELION: ``A3D · M``), so reference slices use ``R · diag(M, 1)`` and the
  CTF / Zernike terms are evaluated at ``M k``;
* ``beam_tilt`` (2,) mrad (x, y): added to ``imaging["beam_tilt"]`` (rlnBeamTiltX/Y) and
  inserted into the odd Zernike coefficients as RELION's ``TiltHelper::insertTilt``;
* ``trefoil`` (2,) in 10 rad: odd Zernike coefficients 2 (Z(-3, 3)) and 5 (Z(3, 3));
* ``zernike4`` (5,) in (100, 2, 0.1, 2, 100) rad: even Zernike coefficients 4..8 (Z(-4, 4) .. Z(4, 4):
  four-fold and secondary astigmatism, spherical). With k in 1/Å, Z(±4, 4) ~ |k|⁴ (0.007 at 3.5 Å)
  while Z(±2, 4) ~ -6 kx ky and Z(0, 4) ~ 1 - 6 |k|² are dominated by their low-order parts: with one
  unit (100 rad) for all five, the target's curvature along the coefficients spanned 3 · 10⁴ and
  L-BFGS crawled along the four-fold terms (one of three items stopped at 35 of 150 rad injected
  after 2 × 15 steps, target still rising); these units bring the curvatures within 2× of each other
  (measured on simulated data at a 3.5 Å limit);
* ``cs`` (1,) in 0.1 mm: spherical aberration change, γ gains ``-π/2 ΔCs λ³ |Mk|⁴``;
* ``phase`` (1,) deg: phase-plate phase shift added to every exposure's ``phase_shift`` model.

:func:`optics_state` turns model + offsets into the tensors the image model uses (a dict:
``mag`` (2, 2), ``odd`` (6+,) rad, ``even`` (9+,) rad, ``cs`` () mm offset, ``phase`` (n,) rad);
empty when the item has no optics beyond the plain CTF (fast path). :func:`optics_ctf` and
:func:`odd_phase` evaluate them on a Fourier grid (frequencies (..., 2) (kx, ky) in 1/Å,
layout of :func:`mrepo.kernels.ctf.frequency_grid_2d`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mrepo.kernels.aberrations import beam_tilt_odd_coefficients, zernike_basis
from mrepo.kernels.ctf import ctf_phase, electron_wavelength
from mrepo.workers.item_model import ItemModel

__all__ = ["OPTICS_GROUPS", "OPTICS_UNITS", "optics_offsets", "optics_state", "optics_ctf", "odd_phase",
           "block_magnification", "updated_optics"]

#: group -> shape of its offset tensor
OPTICS_GROUPS: dict[str, tuple[int, ...]] = {"mag": (2,), "beam_tilt": (2,), "trefoil": (2,), "zernike4": (5,),
                                             "cs": (1,), "phase": (1,)}
#: group -> physical size of one unit of its offset (see module docstring)
#: (a group with several coefficients may give one size per coefficient)
OPTICS_UNITS: dict[str, float | tuple[float, ...]] = {"mag": 1e-3, "beam_tilt": 1.0, "trefoil": 10.0,
                                                      "zernike4": (100.0, 2.0, 0.1, 2.0, 100.0), "cs": 0.1,
                                  "phase": 1.0}
_DT = torch.float64


def optics_offsets(device: torch.device | str | None = None) -> dict[str, Tensor]:
    """Zero offsets of every optics group (float64, on ``device``; default CPU)."""
    return {k: torch.zeros(s, dtype=_DT, device=device) for k, s in OPTICS_GROUPS.items()}


def _used(t: Tensor | None) -> bool:
    return t is not None and (t.requires_grad or bool((t != 0).any()))


def _padded(values: tuple[float, ...] | list[float], size: int, device: torch.device) -> Tensor:
    v = [float(x) for x in values] + [0.0] * max(0, size - len(values))
    return torch.tensor(v, dtype=_DT, device=device)


def optics_state(model: ItemModel, offsets: dict[str, Tensor], device: torch.device | None = None) -> dict[str, Tensor]:
    """The item's optics with ``offsets`` applied (differentiable in them); {} when there is nothing
    beyond the plain CTF. Keys: mag (2, 2), odd (≥ 6,) rad, even (≥ 9,) rad, cs () mm, phase (n,) rad.
    Tensors on the offsets' device (``device`` when there are no offsets; default CPU)."""
    ab = model.aberrations
    dev = next((v.device for v in offsets.values()), device)
    out: dict[str, Tensor] = {}
    mag_off = offsets.get("mag")
    if (ab is not None and ab.mag is not None) or _used(mag_off):
        m0 = torch.tensor(ab.mag if ab is not None and ab.mag is not None else ((1.0, 0.0), (0.0, 1.0)), dtype=_DT,
                          device=dev)
        out["mag"] = m0 + OPTICS_UNITS["mag"] * _symmetric(mag_off) if _used(mag_off) else m0
    bt, tf = offsets.get("beam_tilt"), offsets.get("trefoil")
    if (ab is not None and any(ab.odd)) or _used(bt) or _used(tf):
        odd = _padded(ab.odd if ab is not None else (), 6, dev)
        if _used(bt):
            odd = odd + torch.cat([beam_tilt_odd_coefficients(OPTICS_UNITS["beam_tilt"] * bt, model.cs, model.voltage),
                                   odd.new_zeros(len(odd) - 5)])
        if _used(tf):
            add = torch.zeros(len(odd), dtype=_DT, device=dev)
            odd = odd + add.index_put((torch.tensor([2, 5], device=dev),), OPTICS_UNITS["trefoil"] * tf)
        out["odd"] = odd
    z4 = offsets.get("zernike4")
    if (ab is not None and any(ab.even)) or _used(z4):
        even = _padded(ab.even if ab is not None else (), 9, dev)
        if _used(z4):
            z4 = torch.tensor(OPTICS_UNITS["zernike4"], dtype=_DT, device=dev) * z4
            even = even + torch.cat([even.new_zeros(4), z4, even.new_zeros(len(even) - 9)])
        out["even"] = even
    if _used(offsets.get("cs")):
        out["cs"] = OPTICS_UNITS["cs"] * offsets["cs"][0]
    phase0 = model.phase_shift
    if phase0 is not None or _used(offsets.get("phase")):
        p = torch.zeros(model.n, dtype=_DT, device=dev) if phase0 is None else torch.as_tensor(
            np.asarray(phase0, float), device=dev)
        if _used(offsets.get("phase")):
            p = p + OPTICS_UNITS["phase"] * offsets["phase"][0]
        out["phase"] = torch.deg2rad(p)
    return out


def _symmetric(v: Tensor) -> Tensor:
    """(a, c) -> [[a, c], [c, -a]] (symmetric, traceless)."""
    return torch.stack([torch.stack([v[0], v[1]]), torch.stack([v[1], -v[0]])])


def block_magnification(mag: Tensor) -> Tensor:
    """diag(M, 1) (3, 3): reference slices of the data at k sample the map at ``R · diag(M, 1) · (k, 0)``."""
    out = torch.zeros(3, 3, dtype=mag.dtype, device=mag.device)
    out = out.index_put((torch.tensor([0, 0, 1, 1], device=mag.device), torch.tensor([0, 1, 0, 1], device=mag.device)),
                        mag.reshape(-1))
    out[2, 2] = 1.0
    return out


def optics_ctf(frequencies: Tensor, model: ItemModel, optics: dict[str, Tensor], du: Tensor, dv: Tensor,
               ang: Tensor, phase: Tensor | None = None) -> Tensor:
    """CTF ``sin(γ(Mk) - Z_even(Mk) - π/2 ΔCs λ³ |Mk|⁴)`` at frequencies (..., 2) (1/Å), parameters
    du, dv (Å), ang, phase (rad) of shape P broadcast as :func:`mrepo.kernels.ctf.ctf_at` -> P + F."""
    k = frequencies
    if "mag" in optics:
        k = k @ optics["mag"].to(k.dtype).T
    gamma = ctf_phase(k, defocus_u=du, defocus_v=dv, astigmatism_angle=ang, voltage_kv=model.voltage,
                      cs_mm=model.cs, amplitude_contrast=model.amplitude_contrast,
                      phase_shift=0.0 if phase is None else phase)
    extra = torch.zeros(k.shape[:-1], dtype=k.dtype, device=k.device)
    if "even" in optics:
        even = optics["even"].to(k.dtype)
        extra = extra - zernike_basis(k, len(even), odd=False) @ even
    if "cs" in optics:
        lam = electron_wavelength(model.voltage)
        k2 = (k * k).sum(-1)
        extra = extra - 0.5 * math.pi * 1e7 * lam**3 * optics["cs"].to(k.dtype) * k2 * k2
    return torch.sin(gamma + extra)


def odd_phase(frequencies: Tensor, optics: dict[str, Tensor]) -> Tensor | None:
    """The odd aberration phase φ (rad) at frequencies (..., 2) (before magnification) -> (...), or None:
    the data carry ``e^{iφ(Mk)}`` times the even-CTF image."""
    if "odd" not in optics:
        return None
    k = frequencies
    if "mag" in optics:
        k = k @ optics["mag"].to(k.dtype).T
    odd = optics["odd"].to(k.dtype)
    return zernike_basis(k, len(odd), odd=True) @ odd


def updated_optics(model: ItemModel, imaging: dict[str, Any], offsets: dict[str, Tensor]) -> tuple[dict[str, Any],
                                                                                                 np.ndarray | None]:
    """The item's imaging with refined optics written back (RELION's keys: mag_matrix, beam_tilt mrad,
    odd_zernike, even_zernike rad; cs mm) and the new ``phase_shift`` model (n,) deg (None: unchanged)."""
    im = dict(imaging)
    off = {k: v.detach().cpu() for k, v in offsets.items() if bool((v.detach() != 0).any())}
    if "mag" in off:
        m0 = np.asarray(im.get("mag_matrix", [[1.0, 0.0], [0.0, 1.0]]), dtype=float)
        im["mag_matrix"] = (m0 + OPTICS_UNITS["mag"] * _symmetric(off["mag"]).cpu().numpy()).tolist()
    if "beam_tilt" in off:
        b0 = np.asarray(im.get("beam_tilt", [0.0, 0.0]), dtype=float)
        im["beam_tilt"] = (b0 + OPTICS_UNITS["beam_tilt"] * off["beam_tilt"].cpu().numpy()).tolist()
    if "trefoil" in off:
        odd = [float(v) for v in im.get("odd_zernike", [])] + [0.0] * max(0, 6 - len(im.get("odd_zernike", [])))
        odd[2] += OPTICS_UNITS["trefoil"] * float(off["trefoil"][0])
        odd[5] += OPTICS_UNITS["trefoil"] * float(off["trefoil"][1])
        im["odd_zernike"] = odd
    if "zernike4" in off:
        even = [float(v) for v in im.get("even_zernike", [])] + [0.0] * max(0, 9 - len(im.get("even_zernike", [])))
        for j in range(5):
            even[4 + j] += OPTICS_UNITS["zernike4"][j] * float(off["zernike4"][j])
        im["even_zernike"] = even
    if "cs" in off:
        im["cs"] = float(im["cs"]) + OPTICS_UNITS["cs"] * float(off["cs"][0])
    phase = None
    if "phase" in off:
        base = np.zeros(model.n) if model.phase_shift is None else np.asarray(model.phase_shift, float)
        phase = base + OPTICS_UNITS["phase"] * float(off["phase"][0])
    return im, phase
