"""Detector model of the simulator: how noise-free particle images become recorded counts.

``contrast="dark"`` (default, as counting detectors record cryo-EM data): particles are dark
on a positive mean. A pixel holds Poisson counts with expectation ``mean_counts - a * clean``
(clipped at 0), where ``clean`` is the rendered CTF-modulated projection (mass per pixel, CTF(0)
= +Q, see :mod:`mrepo.sim.render`) and the signal scale ``a`` gives the requested SNR:
``var(a * clean in the particle discs) = snr * mean_counts`` (Poisson variance = expectation).
The default 19 counts/px per image is the mean the issue reports for counted frames and tilts.

``contrast="light"``: the former behaviour, ``clean + N(0, sigma^2)`` with
``sigma^2 = var(clean in the discs) / snr`` (particles bright on a zero mean).

Arrays are image stacks (I, H, W); counts are per pixel and per image (frame or tilt).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CONTRASTS", "Recorded", "record_images"]

CONTRASTS = ("dark", "light")


@dataclass
class Recorded:
    """Recorded stack ``data`` (I, H, W) float32 and ``noise`` = data minus its expectation;
    ``noise_sigma``: std of the noise (sqrt(mean_counts) for dark data); ``signal_scale``: a with
    expectation = mean_counts - a * clean (dark) or 1 (light, expectation = clean)."""

    data: np.ndarray
    noise: np.ndarray
    noise_sigma: float
    signal_scale: float


def record_images(clean: np.ndarray, sigma: float, rng: np.random.Generator, *, contrast: str = "dark",
                  mean_counts: float = 19.0) -> Recorded:
    """Noisy stack from the noise-free ``clean`` (I, H, W). ``sigma`` is the noise std that gives
    the requested SNR on ``clean`` itself (:func:`mrepo.sim.frames.noise_sigma_for_snr`); dark data
    scale the signal by ``a = sqrt(mean_counts) / sigma`` so the SNR against Poisson noise is the same."""
    if contrast not in CONTRASTS:
        raise ValueError(f"contrast must be 'dark' or 'light', got {contrast!r}")
    if contrast == "light":
        noise = rng.normal(0.0, sigma, clean.shape)
        return Recorded((clean + noise).astype(np.float32), noise.astype(np.float32), float(sigma), 1.0)
    if not mean_counts > 0:
        raise ValueError(f"mean_counts must be positive, got {mean_counts}")
    scale = float(np.sqrt(mean_counts) / sigma) if sigma > 0 else 0.0
    expected = np.clip(mean_counts - scale * clean, 0.0, None)
    data = rng.poisson(expected).astype(np.float32)
    return Recorded(data, (data - expected).astype(np.float32), float(np.sqrt(mean_counts)), scale)
