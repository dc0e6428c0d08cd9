"""Small numpy geometry shared by the RELION importer and exporter (io may not import kernels).

* Tilt matrices: ``A = Rz(zrot) @ Ry(ytilt) @ Rx(xtilt)`` (degrees in, RELION 5 rlnTomoXTilt,
  rlnTomoYTilt, rlnTomoZRot), the matrix of :func:`mrepo.kernels.tilt_geometry.tilt_matrices`;
* M's stage-angle corrections ``Rxyz(ω) = Rx(ωx) @ Ry(ωy) @ Rz(ωz)`` applied as ``A' = Rxyz(ω) A``;
  :func:`fold_stage_corrections` returns RELION angles of ``A'`` (checked against the kernels in
  tests/io/test_io_relion_export.py);
* CTF per particle from the item's CTF, the particle's height and its astigmatism residual
  (:func:`particle_ctf`), inverted exactly for a bit-identical re-import;
* RELION 4 projection matrices (rlnTomoProjX..W) <-> RELION 5 angles and shifts
  (:func:`projection_matrices`, :func:`angles_from_projection`; RELION 5 tomogram.cpp
  ``setProjectionMatrix`` / ``getProjectionAnglesFromMatrix``, rotation centre ``int(Size/2)``).

No Fourier layout is involved in this module.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

__all__ = ["tilt_matrices_np", "fold_stage_corrections", "particle_ctf", "particle_ctf_exact", "astigmatism_residual", "projection_matrices",
           "angles_from_projection"]


def tilt_matrices_np(angles_deg: np.ndarray) -> np.ndarray:
    """(n, 3) (xtilt, ytilt, zrot) degrees -> (n, 3, 3) ``Rz(zrot) Ry(ytilt) Rx(xtilt)``."""
    a = np.asarray(angles_deg, dtype=np.float64)
    return Rotation.from_euler("ZYX", a[:, ::-1], degrees=True).as_matrix()


def fold_stage_corrections(stage_deg: np.ndarray, corrections_deg: np.ndarray | None) -> np.ndarray:
    """RELION (xtilt, ytilt, zrot) degrees (n, 3) of ``Rxyz(ω) A`` (the refined stage orientation).

    Rows whose correction is zero are returned unchanged (bit-exact)."""
    stage = np.asarray(stage_deg, dtype=np.float64)
    if corrections_deg is None:
        return stage.copy()
    corr = np.asarray(corrections_deg, dtype=np.float64)
    out = stage.copy()
    rows = np.any(corr != 0, axis=1)
    if rows.any():
        a = tilt_matrices_np(stage[rows])
        r = Rotation.from_euler("XYZ", corr[rows], degrees=True).as_matrix()
        folded = Rotation.from_matrix(r @ a).as_euler("ZYX", degrees=True)[:, ::-1]
        # keep each angle on the branch nearest the input (no 360-degree jumps)
        out[rows] = folded + 360.0 * np.round((stage[rows] - folded) / 360.0)
    return out


def particle_ctf(item_ctf: np.ndarray, z: np.ndarray, residual: np.ndarray | None) -> np.ndarray:
    """(N, 3) RELION (U, V, angle) from item CTFs (N, 3), heights z (N,) Å and residuals (N, 2).

    mean = (U_item + V_item)/2 + z; half = (U_item - V_item)/2 + r_half; angle = angle_item + r_angle."""
    res = np.zeros((len(z), 2)) if residual is None else np.asarray(residual, dtype=np.float64)
    mean = (item_ctf[:, 0] + item_ctf[:, 1]) / 2 + z
    half = (item_ctf[:, 0] - item_ctf[:, 1]) / 2 + res[:, 0]
    return np.stack([mean + half, mean - half, item_ctf[:, 2] + res[:, 1]], axis=1)


def astigmatism_residual(ctf: np.ndarray, item_ctf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-particle (z, residual (N, 2)) from particle CTFs (N, 3) and their items' CTFs (N, 3): the
    importer's map (:func:`mrepo.io.relion_particles.read_relion_particles`), inverse of :func:`particle_ctf`."""
    z = (ctf[:, 0] + ctf[:, 1]) / 2 - (item_ctf[:, 0] + item_ctf[:, 1]) / 2
    half = (ctf[:, 0] - ctf[:, 1]) / 2 - (item_ctf[:, 0] - item_ctf[:, 1]) / 2
    return z, np.stack([half, ctf[:, 2] - item_ctf[:, 2]], axis=1)


def particle_ctf_exact(item_ctf: np.ndarray, z: np.ndarray, residual: np.ndarray | None,
                       max_steps: int = 3) -> np.ndarray:
    """:func:`particle_ctf`, then U and V nudged by a few ulps so the importer's forward map
    (:func:`astigmatism_residual`) reproduces z and the residual bit for bit
    where that is reachable."""
    res = np.zeros((len(z), 2)) if residual is None else np.asarray(residual, dtype=np.float64)
    ctf = particle_ctf(item_ctf, z, res)
    fz, fr = astigmatism_residual(ctf, item_ctf)
    fh, fa = fr[:, 0], fr[:, 1]
    done = (fz == z) & (fh == res[:, 0])
    steps = range(-max_steps, max_steps + 1)
    for du in steps:
        for dv in steps:
            if done.all():
                break
            cand = ctf.copy()
            cand[:, 0] = _ulps(ctf[:, 0], du)
            cand[:, 1] = _ulps(ctf[:, 1], dv)
            cz, cr = astigmatism_residual(cand, item_ctf)
            ch = cr[:, 0]
            ok = ~done & (cz == z) & (ch == res[:, 0])
            ctf[ok] = cand[ok]
            done |= ok
    bad_angle = fa != res[:, 1]
    if bad_angle.any():
        for d in (1, -1, 2, -2):
            cand = _ulps(ctf[:, 2], d)
            ok = bad_angle & (cand - item_ctf[:, 2] == res[:, 1])
            ctf[ok, 2] = cand[ok]
            bad_angle &= ~ok
    return ctf


def _ulps(values: np.ndarray, n: int) -> np.ndarray:
    out = values.copy()
    direction = np.inf if n > 0 else -np.inf
    for _ in range(abs(n)):
        out = np.nextafter(out, direction)
    return out


def projection_matrices(stage_deg: np.ndarray, shifts_A: np.ndarray, pixel: float, volume_px: np.ndarray,
                        image_px: tuple[int, int]) -> np.ndarray:
    """RELION's 4x4 projection matrices (n, 4, 4) from tomogram voxels to tilt-image pixels
    (``Tomogram::setProjectionMatrix``: ``S(shift) S(image centre) Rz Ry Rx S(-int(Size/2))``)."""
    r = tilt_matrices_np(stage_deg)
    c = np.floor(np.asarray(volume_px, dtype=np.float64) / 2)
    img = np.array([image_px[0] // 2, image_px[1] // 2, 0.0])
    out = np.zeros((len(r), 4, 4))
    out[:, :3, :3] = r
    out[:, :3, 3] = -(r @ c) + img
    out[:, :2, 3] += np.asarray(shifts_A, dtype=np.float64) / pixel
    out[:, 3, 3] = 1.0
    return out


def angles_from_projection(matrices: np.ndarray, pixel: float, volume_px: np.ndarray, image_px: tuple[int, int],
                           tol: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`projection_matrices`: ((n, 3) xtilt, ytilt, zrot degrees, (n, 2) shifts Å).

    Raises ValueError when a matrix's 3x3 block is not a rotation (within ``tol``)."""
    p = np.asarray(matrices, dtype=np.float64)
    r = p[:, :3, :3]
    err = np.abs(r @ np.swapaxes(r, 1, 2) - np.eye(3)).max(axis=(1, 2))
    bad = np.nonzero((err > tol) | (np.linalg.det(r) < 0))[0]
    if len(bad):
        raise ValueError(f"row {bad[0] + 1}: the 3x3 block is not a rotation (|R R^T - I| = {err[bad[0]]:.2g})")
    xt = np.degrees(np.arctan2(r[:, 2, 1], r[:, 2, 2]))
    yt = np.degrees(np.arcsin(np.clip(-r[:, 2, 0], -1.0, 1.0)))
    zr = np.degrees(np.arctan2(r[:, 1, 0], r[:, 0, 0]))
    c = np.floor(np.asarray(volume_px, dtype=np.float64) / 2)
    img = np.array([image_px[0] // 2, image_px[1] // 2, 0.0])
    shift_px = p[:, :3, 3] + r @ c - img
    return np.stack([xt, yt, zr], axis=1), shift_px[:, :2] * pixel
