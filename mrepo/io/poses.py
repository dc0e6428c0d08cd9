"""Pose conversions between RELION files and mrepo records.

mrepo's convention (DESIGN.md): angles RELION ZYZ (rot, tilt, psi) in degrees with
``R = Rotation.from_euler("ZYZ", angles, degrees=True).as_matrix()`` = transpose of
RELION's ``Euler_angles2matrix``. RELION 5 tomography stores a particle's pose as a
subtomogram orientation (rlnTomoSubtomogramRot/Tilt/Psi) composed with the refined
angles (rlnAngleRot/Tilt/Psi): RELION's matrix is ``A_subtomo @ A_particle``
(``ParticleSet::getMatrix3x3`` in src/jaz/tomography/particle_set.cpp, with both factors
from ``Euler::anglesToMatrix3``, src/jaz/math/Euler_angles_relion.h, which equals
``Euler_angles2matrix``), so in mrepo's convention ``R = A^T = R_particle @ R_subtomo``.
Verified against RELION 5's source (tests/io/test_io_relion_conventions.py).
No Fourier layout is involved in this module.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

__all__ = ["compose_subtomogram"]


def compose_subtomogram(angles: np.ndarray, subtomo: np.ndarray) -> np.ndarray:
    """(N, 3) degrees: the single ZYZ pose of a particle given refined and subtomogram angles (N, 3).

    Rows whose subtomogram angles are all zero are returned unchanged (bit-exact)."""
    angles = np.asarray(angles, dtype=np.float64)
    subtomo = np.asarray(subtomo, dtype=np.float64)
    out = angles.copy()
    rows = np.any(subtomo != 0, axis=1)
    if rows.any():
        r = Rotation.from_euler("ZYZ", angles[rows], degrees=True) * Rotation.from_euler("ZYZ", subtomo[rows],
                                                                                         degrees=True)
        out[rows] = r.as_euler("ZYZ", degrees=True)
    return out
