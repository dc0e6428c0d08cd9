"""Data-driven exposure weights (M paper, Methods: Data-driven weighting).

From per-exposure NC spectra NC_i(k) (n, shells) — the normalised correlation between
particle images and reference projections per Fourier shell, combined over species with
each species' FSC — alternate the mean spectrum (:func:`mean_spectrum`)

    NC̄(k) = Σ_i NC_i(k) g_i(k) / Σ_i g_i(k)²,   g_i(k) = W_i exp(-B_i k² / 4)

and fit (B_i, W_i) minimising Σ_i Σ_k |NC_i(k) - NC̄(k) g_i(k)|, with the smallest B
(least damped exposure; M: the largest of its negative B) set to 0 and the largest W to 1. Isotropic B (Å²); k in 1/Å. No Fourier layout here.

The mean is the least-squares estimate of NC̄(k) under the model NC_i(k) = NC̄(k) g_i(k) + noise of
equal variance per exposure (∂/∂NC̄ Σ_i (NC_i - NC̄ g_i)² = 0); the normalised correlation's noise
is ~1/√(Fourier components in the shell) whatever the exposure's signal, so the variance is equal.
With noise-free spectra the true (B, W) are then a fixed point of the alternation. The M paper
(Methods, Data-driven weighting) writes Σ NC g / Σ g, a g-weighted average of NC whose expectation
is NC̄ Σ g² / Σ g, not NC̄: on noise-free spectra with B from 0 to 300 Å² it shrinks the fitted B
spread by ~2 % (293 instead of 300 Å²), where this mean recovers it exactly.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["fit_exposure_weights", "mean_spectrum", "nc_spectra"]


def nc_spectra(spectra: dict[str, np.ndarray], fsc: dict[str, np.ndarray | None]) -> np.ndarray:
    """Combine per-species sums {name: (3, n, shells)} (cross, power_a, power_b) into NC (n, shells),
    weighting species by their FSC per shell (ones when unknown)."""
    total = None
    wsum = None
    for name, s in sorted(spectra.items()):
        norm = s[1] * s[2]
        nc = np.where(norm > 0, s[0] / np.sqrt(np.where(norm > 0, norm, 1.0)), 0.0)  # 0 where a power is 0
        f = fsc.get(name)
        w = np.ones(nc.shape[-1]) if f is None else np.clip(np.resize(np.asarray(f, float), nc.shape[-1]), 0, 1)
        if nc.shape[-1] != (total.shape[-1] if total is not None else nc.shape[-1]):
            raise ValueError("species spectra must have the same number of shells to be combined")
        total = nc * w if total is None else total + nc * w
        wsum = w if wsum is None else wsum + w
    if total is None:
        raise ValueError("no spectra to combine")
    return total / np.maximum(wsum, 1e-12)


def mean_spectrum(nc: torch.Tensor, envelope: torch.Tensor) -> torch.Tensor:
    """Least-squares NC̄ (shells,) of the model ``nc ≈ NC̄ · envelope`` for spectra and envelopes
    ``g = W exp(-B k² / 4)`` (n, shells): ``Σ_i nc_i g_i / Σ_i g_i²`` (see the module docstring)."""
    return (nc * envelope).sum(0) / (envelope * envelope).sum(0).clamp_min(1e-12)


def fit_exposure_weights(
    nc: np.ndarray,
    frequencies: np.ndarray,
    *,
    shell_range: tuple[int, int] | None = None,
    rounds: int = 5,
    max_bfactor: float = 500.0,
) -> np.ndarray:
    """Fit per-exposure (B-factor Å², scale) (n, 2) to NC spectra (n, shells) at ``frequencies``
    (shells,) 1/Å. ``shell_range`` (lo, hi) restricts the shells used (default 1 .. last)."""
    nc = np.asarray(nc, dtype=np.float64)
    if nc.ndim != 2 or nc.shape[1] != len(frequencies):
        raise ValueError(f"nc must be (n, shells) with shells = len(frequencies), got {nc.shape}")
    lo, hi = shell_range or (1, nc.shape[1])
    y = torch.from_numpy(nc[:, lo:hi])
    k2 = torch.from_numpy(np.asarray(frequencies, np.float64)[lo:hi] ** 2)
    n = nc.shape[0]
    b = torch.zeros(n, dtype=torch.float64, requires_grad=True)  # in units of 100 Å² (L-BFGS scaling)
    logw = torch.zeros(n, dtype=torch.float64, requires_grad=True)
    for _ in range(rounds):
        with torch.no_grad():
            mean = mean_spectrum(y, torch.exp(-25.0 * b[:, None] * k2) * torch.exp(logw)[:, None])
        opt = torch.optim.LBFGS([b, logw], lr=1, max_iter=50, line_search_fn="strong_wolfe")

        def closure(opt: torch.optim.LBFGS = opt, mean: torch.Tensor = mean) -> torch.Tensor:
            opt.zero_grad()
            model = mean[None] * torch.exp(-25.0 * b[:, None] * k2) * torch.exp(logw)[:, None]
            loss = torch.sqrt((y - model) ** 2 + 1e-8).sum()
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            b.clamp_(-max_bfactor / 100, max_bfactor / 100)
    bb = 100.0 * b.detach().numpy()
    ww = np.exp(logw.detach().numpy())
    return np.stack([bb - bb.min(), ww / ww.max()], 1)
