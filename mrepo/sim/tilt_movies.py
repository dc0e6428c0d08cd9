"""Simulated tilt movies with injected per-frame motion (issue 15, M's tilt movies).

Each tilt i is recorded as F frames; frame k shows the tilt's noise-free image translated by
``motion[i, k]`` (x, y) px (band-limited Fourier shift) with 1/F of the signal and of the electron
count, so the plain sum of a tilt's frames is the tilt image with the same SNR as without movies,
blurred by the motion. The tilt stack the simulator writes is that unaligned sum (what a
reference-free alignment that missed the motion leaves); the motion is written to ``truth.json``
only (``items[0].tilt_movie_shifts_px``). The motion of each tilt is a random walk over its frames
with zero mean over the frames (the tilt's own position stays the truth's), scaled to an RMS of
``amplitude_px`` over all frames. Arrays: motion (n, F, 2) px; movies (n, F, y, x) float32.
"""

from __future__ import annotations

import numpy as np
import torch

from mrepo.kernels.shifts import shift_images

__all__ = ["random_tilt_movie_motion", "record_tilt_movies"]


def random_tilt_movie_motion(rng: np.random.Generator, n_tilts: int, frames: int, amplitude_px: float) -> np.ndarray:
    """(n, F, 2) px: per tilt a random walk over the frames, zero-mean per tilt, RMS ``amplitude_px``."""
    walk = np.cumsum(rng.normal(size=(n_tilts, frames, 2)), axis=1)
    walk -= walk.mean(1, keepdims=True)
    rms = float(np.sqrt((walk**2).sum(-1).mean()))
    return walk * (amplitude_px / rms) if rms > 0 else walk


def record_tilt_movies(
    clean: np.ndarray,
    motion_px: np.ndarray,
    sigma: float,
    rng: np.random.Generator,
    *,
    contrast: str,
    mean_counts: float,
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Noisy frames (n, F, y, x) float32 of the noise-free tilts ``clean`` (n, y, x) moved by
    ``motion_px`` (n, F, 2), their plain sums (n, y, x) float32, the noise std of a sum and the signal
    scale (as :func:`mrepo.sim.detector.record_images`: dark data hold Poisson counts with expectation
    ``mean_counts / F - a clean_k / F``, ``a = sqrt(mean_counts) / sigma``; light data
    ``clean_k / F + N(0, sigma² / F)``)."""
    n, f = motion_px.shape[:2]
    moved = shift_images(
        torch.from_numpy(np.asarray(clean, np.float64))[:, None].expand(-1, f, -1, -1),
        torch.from_numpy(np.asarray(motion_px, np.float64)),
    ).numpy()
    if contrast == "light":
        frames = moved / f + rng.normal(0.0, sigma / np.sqrt(f), moved.shape)
        noise_sigma, scale = float(sigma), 1.0
    elif contrast == "dark":
        scale = float(np.sqrt(mean_counts) / sigma) if sigma > 0 else 0.0
        frames = rng.poisson(np.clip((mean_counts - scale * moved) / f, 0.0, None)).astype(np.float64)
        noise_sigma = float(np.sqrt(mean_counts))
    else:
        raise ValueError(f"contrast must be 'dark' or 'light', got {contrast!r}")
    return frames.astype(np.float32), frames.sum(1).astype(np.float32), noise_sigma, scale
