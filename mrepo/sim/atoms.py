"""Pseudo-atomic species models: atoms as isotropic 3D Gaussians.

A model holds atom centres (n, 3) as (x, y, z) in Å relative to the
species' box centre (voxel N // 2), Gaussian widths sigma (n,) in Å and
weights (n,) (integrated mass of each atom, arbitrary units). The density is
``rho(r) = sum_a w_a (2 pi s_a^2)^(-3/2) exp(-|r - c_a|^2 / (2 s_a^2))`` per Å^3.
No Fourier layout is involved in this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["PseudoAtomicModel", "pseudo_atomic_species", "point_group_matrices"]


@dataclass(frozen=True)
class PseudoAtomicModel:
    """Atoms of one species: centres (n, 3) Å (x, y, z), sigmas (n,) Å, weights (n,)."""

    centres: np.ndarray
    sigmas: np.ndarray
    weights: np.ndarray
    diameter: float
    symmetry: str

    def __post_init__(self) -> None:
        n = self.centres.shape[0]
        if self.centres.shape != (n, 3) or self.sigmas.shape != (n,) or self.weights.shape != (n,):
            raise ValueError(
                f"atoms need centres (n, 3), sigmas (n,), weights (n,); got "
                f"{self.centres.shape}, {self.sigmas.shape}, {self.weights.shape}"
            )


def _rz(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def point_group_matrices(symbol: str) -> np.ndarray:
    """Rotation matrices (k, 3, 3) of a point group.

    Uses ``mrepo.kernels.symmetry.symmetry_matrices`` when present; otherwise
    (fallback written here) supports C<n> (axis z) and D<n> (axis z, 2-fold
    about x), RELION's convention for these groups.
    """
    try:
        from mrepo.kernels.symmetry import symmetry_matrices  # type: ignore[import-not-found]
    except ImportError:
        symmetry_matrices = None
    if symmetry_matrices is not None:
        return np.asarray(symmetry_matrices(symbol), dtype=np.float64)
    s = symbol.strip().upper()
    if len(s) < 2 or s[0] not in "CD" or not s[1:].isdigit() or int(s[1:]) < 1:
        raise ValueError(f"symmetry must be C<n> or D<n> (n >= 1) here, got {symbol!r}")
    n = int(s[1:])
    cyclic = [_rz(2 * np.pi * k / n) for k in range(n)]
    if s[0] == "C":
        return np.stack(cyclic)
    flip = np.diag([1.0, -1.0, -1.0])  # 2-fold about x
    return np.stack(cyclic + [m @ flip for m in cyclic])


def pseudo_atomic_species(
    diameter_angstrom: float,
    symmetry: str,
    n_atoms: int,
    seed: int,
    *,
    shell: bool = False,
    sigma_angstrom: float = 1.0,
    min_distance_angstrom: float = 1.5,
) -> PseudoAtomicModel:
    """Random globular (or shell) pseudo-atomic model of a given diameter and point group.

    Draws ``n_atoms // k`` atoms (k = group order) uniformly in a ball (or, if
    ``shell``, in the outer 30 % of the radius) of radius
    ``diameter / 2 - 2 sigma``, at least ``min_distance_angstrom`` apart, then
    applies every group operation. Weights are drawn in [0.5, 1.5] (carbon to
    oxygen-like contrast); sigma ~1 Å keeps real signal beyond 4 Å.
    """
    if diameter_angstrom <= 4 * sigma_angstrom:
        raise ValueError(f"diameter {diameter_angstrom} Å too small for atom sigma {sigma_angstrom} Å")
    if sigma_angstrom <= 0:
        raise ValueError(f"sigma_angstrom must be positive, got {sigma_angstrom}")
    ops = point_group_matrices(symmetry)
    n_asu = n_atoms // len(ops)
    if n_asu < 1:
        raise ValueError(f"n_atoms={n_atoms} is fewer than the {len(ops)} operations of {symmetry}")
    rng = np.random.default_rng(seed)
    r_max = diameter_angstrom / 2 - 2 * sigma_angstrom
    r_min = 0.7 * r_max if shell else 0.0
    accepted: list[np.ndarray] = []
    for _ in range(200 * n_asu):
        if len(accepted) == n_asu:
            break
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        radius = (rng.uniform(r_min**3, r_max**3)) ** (1 / 3)
        p = direction * radius
        copies = ops @ p  # (k, 3): keep distinct from all placed atoms and its own images
        if accepted:
            placed = np.concatenate([ops @ a for a in accepted])
            if np.min(np.linalg.norm(placed[:, None] - copies[None], axis=-1)) < min_distance_angstrom:
                continue
        if len(ops) > 1:
            d = np.linalg.norm(copies[:, None] - copies[None], axis=-1)
            if np.min(d[~np.eye(len(ops), dtype=bool)]) < min_distance_angstrom:
                continue
        accepted.append(p)
    if len(accepted) < n_asu:
        raise ValueError(f"could not place {n_atoms} atoms {min_distance_angstrom} Å apart in {diameter_angstrom} Å")
    asu = np.stack(accepted)
    weights_asu = rng.uniform(0.5, 1.5, size=n_asu)
    centres = np.einsum("kij,aj->kai", ops, asu).reshape(-1, 3)
    weights = np.tile(weights_asu, len(ops))
    sigmas = np.full(len(centres), float(sigma_angstrom))
    return PseudoAtomicModel(centres, sigmas, weights, float(diameter_angstrom), symmetry.strip().upper())
