"""Ground-truth volume deformation (tilt series) and radiation-damage model the simulators can inject
(issue 15), written as formulas in ``truth.json`` only, never through the refinement's grids.

* :class:`VolumeDeformation`: a smooth displacement of the specimen (Å) that grows with the accumulated
  exposure, ``d(r, t) = t (D u + c (ux² + uy² - 1/6) e_z)`` with ``u = r / V - 1/2`` (r in Å from
  voxel 0, V the tomogram extent) and t the tilt's accumulated exposure before it over the largest
  (the first acquired tilt is undeformed): an affine stretch/shear D (3x3, Å) plus a bend of the slab
  (c, Å). The field has zero mean over the volume, so it is not a rigid shift of the tomogram.
* :class:`ExposureDamage`: per-exposure B-factors (Å², amplitude ``exp(-B k² / 4)``) and amplitude
  scales that replace the dose heuristic ``B = 4 Å² · exposure`` (e.g. a blurred first frame,
  damage that saturates): what data-driven exposure weights should find.

No Fourier layout here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["VolumeDeformation", "random_volume_deformation", "ExposureDamage", "measured_damage", "injected_damage"]


@dataclass(frozen=True)
class VolumeDeformation:
    """``d(r, t) = t (D (r / V - 1/2) + c ((x/Vx - 1/2)² + (y/Vy - 1/2)² - 1/6) e_z)`` Å."""

    matrix_A: np.ndarray  # (3, 3) D
    bend_A: float  # c
    volume_size_A: np.ndarray  # (3,) V

    def __call__(self, coords_A: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Displacement (I, N, 3) Å of points ``coords_A`` (N, 3) at normalised times ``t`` (I,)."""
        u = np.asarray(coords_A, np.float64) / self.volume_size_A - 0.5
        d = u @ self.matrix_A.T
        d[:, 2] += self.bend_A * (u[:, 0] ** 2 + u[:, 1] ** 2 - 1.0 / 6.0)
        return np.asarray(t, np.float64)[:, None, None] * d[None]

    def to_json(self) -> dict:
        return {"formula": "d(r,t) = t (D u + c (ux^2 + uy^2 - 1/6) e_z), u = r/V - 1/2, "
                           "t = pre_exposure / max(pre_exposure)",
                "matrix_A": self.matrix_A.tolist(), "bend_A": self.bend_A,
                "volume_size_A": self.volume_size_A.tolist()}


def random_volume_deformation(rng: np.random.Generator, volume_size_A: np.ndarray,
                              amplitude_A: float) -> VolumeDeformation:
    """Random :class:`VolumeDeformation` whose largest displacement over the volume at t = 1 is about
    ``amplitude_A`` (D entries and c drawn at that scale)."""
    d = rng.normal(size=(3, 3)) * amplitude_A
    return VolumeDeformation(d, float(rng.normal() * amplitude_A), np.asarray(volume_size_A, np.float64))


@dataclass(frozen=True)
class ExposureDamage:
    """Per-exposure B-factor (Å²) and amplitude scale (stack order)."""

    bfactors_A2: np.ndarray
    scales: np.ndarray

    def to_json(self) -> dict:
        return {"bfactor_A2": self.bfactors_A2.tolist(), "scale": self.scales.tolist(),
                "formula": "amplitude exp(-B k^2 / 4) * scale per exposure"}


def measured_damage(pre_exposure: np.ndarray, dose: np.ndarray) -> ExposureDamage:
    """A damage model unlike ``4 Å² · exposure``: damage that saturates,
    ``B = 150 Å² (1 - exp(-E / 30))`` at mid-exposure E (e-/Å²), plus 60 Å² of motion blur in the
    first acquired exposure, and a scale that falls to 0.55 (``0.55 + 0.45 exp(-E / 40)``)."""
    e = np.asarray(pre_exposure, np.float64) + np.asarray(dose, np.float64) / 2
    b = 150.0 * (1.0 - np.exp(-e / 30.0))
    b[int(np.argmin(pre_exposure))] += 60.0
    return ExposureDamage(b, 0.55 + 0.45 * np.exp(-e / 40.0))


def injected_damage(kind: str, pre_exposure: np.ndarray, dose: np.ndarray) -> ExposureDamage | None:
    """The simulators' ``damage`` option: ``"dose"`` None (the ``4 Å² · exposure`` rule), ``"measured"``
    :func:`measured_damage`."""
    if kind == "measured":
        return measured_damage(pre_exposure, dose)
    if kind != "dose":
        raise ValueError(f"damage must be 'dose' or 'measured', got {kind!r}")
    return None
