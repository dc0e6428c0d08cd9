"""Analytic deformation fields and random placement used by the simulators.

All displacements are in pixels of the frame/tilt image, positions (x, y)
in pixels, normalised time t in [0, 1] (accumulated exposure / total).
No Fourier layout is involved in this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

__all__ = [
    "SmoothWarp",
    "random_smooth_warp",
    "global_drift",
    "doming",
    "place_non_overlapping",
    "perturb_angles",
]


@dataclass(frozen=True)
class SmoothWarp:
    """Low-frequency displacement field d(x, y, t) = t * sum_k a_k sin(2 pi f_k . (x, y) / size + phi_k + w_k t).

    amplitudes (K, 2) px (x, y components); frequencies (K, 2) cycles per
    image extent (<= 1.5, so the field is smooth); phases (K,) and rates (K,)
    radians; size (width, height) px. Not a spline, so a fitted spline is a
    genuine approximation.
    """

    amplitudes: np.ndarray
    frequencies: np.ndarray
    phases: np.ndarray
    rates: np.ndarray
    size: tuple[int, int]

    def __call__(self, xy: np.ndarray, t: np.ndarray | float) -> np.ndarray:
        """Displacement (..., 2) px at positions xy (..., 2) px and time t (broadcastable to xy[..., 0])."""
        t = np.asarray(t, dtype=np.float64)
        scaled = xy / np.asarray(self.size, dtype=np.float64)
        arg = 2 * np.pi * scaled @ self.frequencies.T + self.phases + self.rates * t[..., None]
        return t[..., None] * (np.sin(arg) @ self.amplitudes)

    def to_json(self) -> dict:
        return {
            "formula": "d(x,y,t) = t * sum_k a_k sin(2 pi f_k.(x,y)/size + phi_k + w_k t)",
            "amplitudes_px": self.amplitudes.tolist(),
            "frequencies_per_extent": self.frequencies.tolist(),
            "phases_rad": self.phases.tolist(),
            "rates_rad": self.rates.tolist(),
            "size_px": list(self.size),
        }


def random_smooth_warp(
    rng: np.random.Generator, size: tuple[int, int], amplitude_px: float, n_modes: int = 4
) -> SmoothWarp:
    """Random :class:`SmoothWarp` with total amplitude about ``amplitude_px``."""
    amps = rng.normal(size=(n_modes, 2)) * amplitude_px / np.sqrt(n_modes)
    freqs = rng.uniform(-1.2, 1.2, size=(n_modes, 2))
    return SmoothWarp(amps, freqs, rng.uniform(0, 2 * np.pi, n_modes), rng.uniform(-1, 1, n_modes), size)


def global_drift(rng: np.random.Generator, n_frames: int, total_px: float) -> np.ndarray:
    """Smooth global trajectory (n_frames, 2) px, zero at frame 0: fast initial motion that
    decays exponentially (tau = 1/4 of the series) plus a slow curved component."""
    t = np.linspace(0.0, 1.0, n_frames)
    direction = rng.normal(size=2)
    direction /= np.linalg.norm(direction)
    side = np.array([-direction[1], direction[0]])
    fast = (1 - np.exp(-t / 0.25)) / (1 - np.exp(-4.0))
    slow = 0.3 * rng.uniform(-1, 1) * t**2
    return total_px * (fast[:, None] * direction + slow[:, None] * side)


def doming(xy: np.ndarray, t: np.ndarray, size: tuple[int, int], amplitude_A: float) -> np.ndarray:
    """z displacement (Å, positive = more underfocus) of a dome: amplitude * (1 - e^(-t/0.2)) *
    (1 - r^2) with r the distance from the image centre over the half diagonal."""
    centre = np.array([size[0] / 2, size[1] / 2])
    r2 = np.sum(((xy - centre) / np.linalg.norm(centre)) ** 2, axis=-1)
    return amplitude_A * (1 - np.exp(-np.asarray(t) / 0.2)) * (1 - r2)


def place_non_overlapping(
    rng: np.random.Generator, radii: np.ndarray, low: np.ndarray, high: np.ndarray, dims: int
) -> np.ndarray:
    """Uniform random centres (n, dims) in the box [low, high) with |c_i - c_j| >= r_i + r_j
    (only the first ``dims`` coordinates count). Raises ValueError if the box is too full."""
    radii = np.asarray(radii, dtype=np.float64)
    centres = np.zeros((len(radii), len(low)))
    for k, r in enumerate(radii):
        for _ in range(5000):
            c = rng.uniform(low, high)
            if np.all(np.linalg.norm((c - centres[:k])[:, :dims], axis=1) >= r + radii[:k]):
                centres[k] = c
                break
        else:
            raise ValueError(f"could not place {len(radii)} non-overlapping particles; use fewer or a larger field")
    return centres


def perturb_angles(
    rng: np.random.Generator, angles_deg: np.ndarray, min_deg: float, max_deg: float
) -> np.ndarray:
    """Rotate each ZYZ pose (n, 3) degrees by a random angle in [min_deg, max_deg] about a random
    axis (applied on the map side, R' = R @ dR); returns ZYZ degrees."""
    n = angles_deg.shape[0]
    axes = rng.normal(size=(n, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    mag = np.deg2rad(rng.uniform(min_deg, max_deg, n))
    r = Rotation.from_euler("ZYZ", angles_deg, degrees=True) * Rotation.from_rotvec(axes * mag[:, None])
    return r.as_euler("ZYZ", degrees=True)
