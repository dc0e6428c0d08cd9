"""M's optics in a Warp/M item XML <-> mrepo's ``Item.imaging`` optics keys (RELION's conventions).

Read from warpem/warp's public sources (not guessed):

- **Magnification**: root attribute ``MagnificationCorrection`` of ``<Movie>`` / ``<TiltSeries>``
  (Movie.cs / TiltSeries.cs ``SaveMeta``), ``Matrix2.ToString()`` = ``"M11, M21, M12, M22"`` (column
  order). M samples the reference at ``M · k`` for the data's frequency k (MPARefine.cu
  ``posmag = magnification * (x, y)``, glm column-major from ``ToVec()``), as RELION samples at
  ``mag · k`` (obs_model.cpp ``applyAnisoMag``: ``A3D = mag⁻¹ A``, projector ``A3D⁻¹ k``): mrepo's
  ``mag_matrix`` [[m00, m01], [m10, m11]] (= rlnMagMat) is written ``"m00, m10, m01, m11"``.
- **Zernike**: ``<CTF>`` Params ``ZernikeCoeffsOdd`` / ``ZernikeCoeffsEven`` (CTF.cs ``float[]``,
  XMLHelper: values joined by ``;``), rad, at frequencies in 1/Å, index -> (m, n) as RELION
  (Zernike.cs is a port of RELION's). Even: M's ``GetGammaCorrection`` uses index ``i + 1`` for
  coefficient i and adds the sum to γ as RELION adds its gamma offset, so M's even[i] = RELION's
  even[i + 1]; RELION's even[0] (a constant phase) has no M slot. Odd: M multiplies the *data* by
  ``exp(+iφ)`` (MPARefine.cu ``part = cmul(part, phasecorrection)``), RELION by ``exp(-iφ)``
  (obs_model.cpp ``demodulatePhase``), so M's odd = -RELION's odd. M has no beam tilt of its own:
  rlnBeamTiltX/Y are inserted into the odd coefficients (RELION ``TiltHelper::insertTilt``) before export.
- **Cs**: ``<CTF>`` Param ``Cs`` (mm) plus, for movies, ``<GridCTFCs>`` (mm offsets over x, y, which
  MCore ``--ctf_cs`` refines; Movie.cs ``GetCs``): mrepo's one ``cs`` = Cs + mean of the grid's nodes.

Differences left: M evaluates the Zernike phases before the magnification, RELION after it (second
order in the anisotropy). No Fourier layout is stored here.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..store import InvalidInput
from .warp_xml import WarpMeta

__all__ = [
    "OPTICS_KEYS",
    "optics_from_warp",
    "with_optics",
    "same_optics",
    "m_odd",
    "m_even",
    "mag_to_m",
    "beam_tilt_odd",
    "check_optics_representable",
]

#: ``Item.imaging`` keys this module maps (the rest of imaging is not optics M holds)
OPTICS_KEYS = ("mag_matrix", "beam_tilt", "odd_zernike", "even_zernike", "cs")
MAG_ATTRIBUTE = "MagnificationCorrection"
_IDENTITY = ((1.0, 0.0), (0.0, 1.0))
_RTOL = 1e-6  # M keeps float32: values equal to this are the ones mrepo wrote


def _floats(text: str, path: Path | str, where: str, sep: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(sep) if v.strip()]
    except ValueError:
        raise InvalidInput(f"{path}: {where}: {text[:60]!r} is not a list of numbers separated by {sep!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise InvalidInput(f"{path}: {where}: {text[:60]!r} is not finite")
    return values


def _mag(imaging: dict[str, Any]) -> tuple[tuple[float, float], tuple[float, float]]:
    m = imaging.get("mag_matrix")
    if m is None:
        return _IDENTITY
    return (float(m[0][0]), float(m[0][1])), (float(m[1][0]), float(m[1][1]))


def mag_to_m(mag: tuple[tuple[float, float], tuple[float, float]]) -> str:
    """M's ``MagnificationCorrection`` text of a RELION magnification matrix (column order)."""
    return f"{mag[0][0]!r}, {mag[1][0]!r}, {mag[0][1]!r}, {mag[1][1]!r}"


def beam_tilt_odd(tilt_mrad: tuple[float, float], cs_mm: float, voltage_kv: float) -> np.ndarray:
    """Odd Zernike coefficients (5,) rad of a beam tilt (x, y) mrad: RELION's ``TiltHelper::insertTilt``
    (``Z3 = -π · 20000 · Cs λ² · tilt / 3``; 1 += 2 Z3x, 0 += 2 Z3y, 4 += Z3x, 3 += Z3y), λ in Å."""
    v = voltage_kv * 1e3
    lam = 12.2643247 / math.sqrt(v * (1.0 + 0.978466e-6 * v))
    z3x, z3y = (-cs_mm * 20000 * lam * lam * 3.141592654 * float(t) / 3.0 for t in tilt_mrad)
    return np.array([2 * z3y, 2 * z3x, 0.0, z3y, z3x])


def _trimmed(values: list[float] | np.ndarray) -> list[float]:
    out = [float(v) for v in values]
    while out and out[-1] == 0.0:
        out.pop()
    return out


def m_odd(imaging: dict[str, Any]) -> list[float]:
    """M's ``ZernikeCoeffsOdd``: minus RELION's odd coefficients with the beam tilt inserted."""
    odd = np.zeros(max(5, len(imaging.get("odd_zernike", []))))
    odd[: len(imaging.get("odd_zernike", []))] = imaging.get("odd_zernike", [])
    if "beam_tilt" in imaging:
        odd[:5] += beam_tilt_odd(tuple(imaging["beam_tilt"]), float(imaging["cs"]), float(imaging["voltage"]))
    return _trimmed(-odd)


def m_even(imaging: dict[str, Any]) -> list[float]:
    """M's ``ZernikeCoeffsEven``: RELION's even coefficients from index 1 on."""
    return _trimmed(list(imaging.get("even_zernike", []))[1:])


def check_optics_representable(imaging: dict[str, Any], name: str) -> None:
    """InvalidInput when the item's optics have no M slot (RELION's constant even term, even[0])."""
    even = imaging.get("even_zernike", [])
    if even and float(even[0]) != 0.0:
        raise InvalidInput(
            f"item {name!r}: even Zernike coefficient 0 (a constant phase, {float(even[0])!r} rad) "
            "has no place in M's ZernikeCoeffsEven (which starts at index 1); export to RELION "
            "instead or fold it into the phase shift"
        )


def _cs_grid_mean(meta: WarpMeta) -> float:
    g = meta.grid("GridCTFCs") if meta.root == "Movie" else None
    return float(g.flat().mean()) if g is not None else 0.0


def optics_from_warp(meta: WarpMeta, path: Path | str) -> dict[str, Any]:
    """Imaging optics of one Warp/M XML: ``cs`` always; ``mag_matrix`` when not the identity; ``odd_zernike``
    / ``even_zernike`` when a coefficient is non-zero (RELION's conventions, see the module docstring)."""
    out: dict[str, Any] = {"cs": meta.ctf_value("Cs", 2.7, path) + _cs_grid_mean(meta)}
    text = meta.attributes.get(MAG_ATTRIBUTE, "")
    if text:
        v = _floats(text, path, f"attribute {MAG_ATTRIBUTE}", ",")
        if len(v) != 4:
            raise InvalidInput(f"{path}: attribute {MAG_ATTRIBUTE} {text!r} is not 4 numbers 'M11, M21, M12, M22'")
        mag = ((v[0], v[2]), (v[1], v[3]))
        if mag != _IDENTITY:
            out["mag_matrix"] = [list(mag[0]), list(mag[1])]
    odd = _floats(meta.ctf.get("ZernikeCoeffsOdd", ""), path, "<CTF> Param ZernikeCoeffsOdd", ";")
    if any(odd):
        out["odd_zernike"] = [-v for v in odd]
    even = _floats(meta.ctf.get("ZernikeCoeffsEven", ""), path, "<CTF> Param ZernikeCoeffsEven", ";")
    if any(even):
        out["even_zernike"] = [0.0, *even]
    return out


def _close(a: list[float], b: list[float]) -> bool:
    n = max(len(a), len(b))
    pa, pb = np.zeros(n), np.zeros(n)
    pa[: len(a)], pb[: len(b)] = a, b
    return bool(np.allclose(pa, pb, rtol=_RTOL, atol=1e-12))


def _same_mag(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return _close(np.ravel(_mag(a)).tolist(), np.ravel(_mag(b)).tolist())


def same_optics(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two imaging dicts put the same optics into M's XML (to float32 precision)."""
    return (
        _same_mag(a, b)
        and _close(m_odd(a), m_odd(b))
        and _close(m_even(a), m_even(b))
        and _close([float(a["cs"])], [float(b["cs"])])
    )


def _join(values: list[float]) -> str:
    return ";".join(repr(v) for v in values)


def with_optics(meta: WarpMeta, imaging: dict[str, Any], path: Path | str) -> WarpMeta:
    """``meta`` with the item's optics written in M's fields; a field that already holds them is kept as
    written (verbatim text), so an unchanged item writes back unchanged."""
    held = {"voltage": imaging["voltage"], **optics_from_warp(meta, path)}
    attributes, ctf = dict(meta.attributes), dict(meta.ctf)
    if not _same_mag(held, imaging):
        attributes[MAG_ATTRIBUTE] = mag_to_m(_mag(imaging))
    if not _close(m_odd(held), m_odd(imaging)):
        ctf["ZernikeCoeffsOdd"] = _join(m_odd(imaging))
    if not _close(m_even(held), m_even(imaging)):
        ctf["ZernikeCoeffsEven"] = _join(m_even(imaging))
    if float(held["cs"]) != float(imaging["cs"]):
        ctf["Cs"] = repr(float(imaging["cs"]) - _cs_grid_mean(meta))
    if attributes == meta.attributes and ctf == meta.ctf:
        return meta
    return replace(meta, attributes=attributes, ctf=ctf)
