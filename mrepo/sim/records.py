"""Dataclasses shared by the frame- and tilt-series simulators (particles, perturbations).

Array layouts: N particles, T temporal samples, I images (frames or tilts).
Coordinates in Å, angles in degrees (ZYZ, ``euler_to_matrix`` convention).
No Fourier layout is involved in this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Particles", "Perturbation", "assign_half_sets", "species_labels"]


@dataclass
class Particles:
    """Particle table of one item: ids (N,) int64, species (N,) int, half_set (N,) in {1, 2},
    coordinates (N, T, 3) Å, angles (N, T, 3) degrees; ``item`` is the item name."""

    item: str
    ids: np.ndarray
    species: np.ndarray
    half_set: np.ndarray
    coordinates: np.ndarray
    angles: np.ndarray

    def to_json(self, species_names: list[str]) -> list[dict]:
        return [
            {
                "id": int(self.ids[p]),
                "species": species_names[int(self.species[p])],
                "item": self.item,
                "half_set": int(self.half_set[p]),
                "coordinates_A": self.coordinates[p].tolist(),
                "angles_deg": self.angles[p].tolist(),
            }
            for p in range(len(self.ids))
        ]


@dataclass(frozen=True)
class Perturbation:
    """How far the initial parameters are from the truth (what upstream preprocessing delivers).

    shift_px: sigma of per-frame/tilt shift errors (px); defocus_A: sigma of
    defocus errors (Å); astigmatism_A: sigma of astigmatism-magnitude errors
    (Å); pose_deg: (min, max) rotation error per particle (degrees);
    position_px: sigma of particle xy errors (px). Initial models also omit
    local warp, doming and (tilts) stage-angle corrections.
    """

    shift_px: float = 1.0
    defocus_A: float = 300.0
    astigmatism_A: float = 50.0
    pose_deg: tuple[float, float] = (1.0, 3.0)
    position_px: float = 1.0


def assign_half_sets(rng: np.random.Generator, n: int, mode: str) -> np.ndarray:
    """Half-sets (n,) in {1, 2}: 'alternate' (1, 2, 1, ...) or 'random' (balanced shuffle)."""
    alternate = (np.arange(n) % 2 + 1).astype(np.int64)
    if mode == "alternate":
        return alternate
    if mode == "random":
        return rng.permutation(alternate)
    raise ValueError(f"half_set mode must be 'alternate' or 'random', got {mode!r}")


def species_labels(rng: np.random.Generator, n: int, n_species: int, fractions: tuple[float, ...]) -> np.ndarray:
    """Species index (n,) per particle: uniform if ``fractions`` is empty, else drawn with these
    probabilities (one per species, summing to 1)."""
    if not fractions:
        return rng.integers(0, n_species, n)
    p = np.asarray(fractions, dtype=np.float64)
    if p.shape != (n_species,) or (p < 0).any() or abs(p.sum() - 1) > 1e-9:
        raise ValueError(f"species_fractions must be {n_species} non-negative values summing to 1, got {fractions}")
    return rng.choice(n_species, n, p=p)
