"""Data-driven exposure weights (M paper, Methods: Data-driven weighting).

Per exposure i and Fourier shell k the refinement measures, summed over all particles (and combined
over species with each species' FSC, :func:`nc_spectra`), the cross term Σ Re(X conj(R)), the model
power Σ |R|² and the data power Σ |X|² between the CTF-premultiplied data X and the CTF²-weighted
reference R (:mod:`mrepo.workers.exposure_spectra`). With X = g_i(k) R + noise, the amplitude
envelope g_i(k) = W_i exp(-B_i k² / 4) of exposure i (radiation damage, motion, thickness) is what
the weights model. The fit uses the **regression coefficient** of the data on the reference,

    β_i(k) = Σ Re(X R*) / Σ |R|²,   E[β_i(k)] = β̄(k) · g_i(k)

which is linear in g at any SNR, with the inverse-variance weight p_i(k) = Σ|R|² / (Σ|X|² (1 - NC²))
(NC the normalised correlation; Var β = residual data power / (2 · components · Σ|R|²), the component
count being the same for every exposure of an item). β̄(k) (the part common to all exposures: the
particle's spectrum, the model's filters) is the weighted least-squares mean (:func:`mean_spectrum`),
alternated with a weighted least-squares L-BFGS fit of (B_i, W_i); the smallest B is set to 0 and
the largest W to 1. Isotropic B (Å²); k in 1/Å. No Fourier layout here.

Why not NC itself, as the M paper's Methods fit it: NC = cross / √(model power · data power) saturates
where the data power is signal-dominated (the first shells reach 0.8–0.9 on simulated tilt series at
SNR 0.3), so a low scale W (cos tilt × damage) flattens NC at low shells against the linear mid shells
and is fitted as a B-factor: on ``mrepo sim tilts --damage measured`` the ±45° tilts got ~2.5× their
injected B (docs/ablation.md, "The NC spectra the fit gets"). M's model NC = NC̄ · g assumes NC ≪ 1 in
every shell. Spectra given as NC (n, shells) (analytic tests) are fitted as they are, unweighted.

The mean is the least-squares estimate of β̄(k) under the model above (∂/∂β̄ Σ_i p (β_i − β̄ g_i)² = 0):
Σ p β g / Σ p g²; with noise-free spectra the true (B, W) are a fixed point of the alternation. The M
paper writes Σ NC g / Σ g, whose expectation is NC̄ Σ g² / Σ g, not NC̄ (on noise-free spectra with B
from 0 to 300 Å² it shrinks the fitted B spread to 293 Å²).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["EnvelopeFit", "fit_envelopes", "fit_exposure_weights", "mean_spectrum", "nc_spectra",
           "normalised_correlation", "regression_terms"]


def nc_spectra(spectra: dict[str, np.ndarray], fsc: dict[str, np.ndarray | None]) -> np.ndarray:
    """Combine per-species sums {name: (3, n, shells)} (cross, model power, data power) into one
    (n, shells, 3) float64 array (the same three sums last), weighting each species' sums by its FSC
    per shell (ones when unknown). The item's stored ``nc_spectra`` (:func:`normalised_correlation`
    gives the NC)."""
    total = None
    for name, s in sorted(spectra.items()):
        s = np.asarray(s, np.float64)
        if s.ndim != 3 or s.shape[0] != 3:
            raise ValueError(f"species {name!r}: sums must be (3, n, shells), got {s.shape}")
        f = fsc.get(name)
        w = np.ones(s.shape[-1]) if f is None else np.clip(np.resize(np.asarray(f, float), s.shape[-1]), 0, 1)
        if total is not None and s.shape != total.shape:
            raise ValueError("species spectra must have the same number of shells to be combined")
        total = s * w if total is None else total + s * w
    if total is None:
        raise ValueError("no spectra to combine")
    return np.ascontiguousarray(np.moveaxis(total, 0, -1))


def normalised_correlation(sums: np.ndarray) -> np.ndarray:
    """NC (n, shells) = cross / √(model power · data power) of summed spectra (n, shells, 3); 0 where a
    power is 0. |NC| ≤ 1."""
    s = np.asarray(sums, np.float64)
    norm = s[..., 1] * s[..., 2]
    return np.where(norm > 0, s[..., 0] / np.sqrt(np.where(norm > 0, norm, 1.0)), 0.0)


def regression_terms(spectra: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values, precision) (n, shells) to fit: for summed spectra (n, shells, 3) the regression
    coefficient β = cross / model power and its inverse variance up to a factor per shell,
    model power / (data power · (1 − NC²)) (0 where a power is 0); for NC spectra (n, shells) the
    NC itself with unit precision."""
    s = np.asarray(spectra, np.float64)
    if s.ndim == 2:
        return s, np.ones_like(s)
    if s.ndim != 3 or s.shape[-1] != 3:
        raise ValueError(f"spectra must be NC (n, shells) or sums (n, shells, 3), got {s.shape}")
    cross, a, d = s[..., 0], s[..., 1], s[..., 2]
    ok = (a > 0) & (d > 0)
    beta = np.where(ok, cross / np.where(ok, a, 1.0), 0.0)
    nc2 = np.minimum(normalised_correlation(s) ** 2, 0.99)
    return beta, np.where(ok, a / np.where(ok, d * (1.0 - nc2), 1.0), 0.0)


def mean_spectrum(values: torch.Tensor, envelope: torch.Tensor, precision: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted least-squares β̄ (shells,) of the model ``values ≈ β̄ · envelope`` for spectra and
    envelopes ``g = W exp(-B k² / 4)`` (n, shells): ``Σ_i p_i β_i g_i / Σ_i p_i g_i²`` (p = 1 when
    ``precision`` is None; see the module docstring)."""
    p = torch.ones_like(values) if precision is None else precision
    return (p * values * envelope).sum(0) / (p * envelope * envelope).sum(0).clamp_min(1e-12)


@dataclass
class EnvelopeFit:
    """Fitted terms of :func:`fit_envelopes`: per exposure index ``bfactor`` (E,) Å² and ``log_scale``
    (E,), per item ``item_bfactor`` (J,) Å² and ``item_log_scale`` (J,) (centred: they sum to 0)."""

    bfactor: np.ndarray
    log_scale: np.ndarray
    item_bfactor: np.ndarray
    item_log_scale: np.ndarray


def fit_envelopes(
    values: np.ndarray,
    precision: np.ndarray,
    rank: np.ndarray,
    item: np.ndarray,
    frequencies: np.ndarray,
    *,
    rounds: int = 5,
    max_bfactor: float = 500.0,
) -> EnvelopeFit:
    """Fit ``values ≈ β̄(k) · exp(s_e + s_j) · exp(-(B_e + b_j) k² / 4)`` (rows (N, shells), one per
    exposure of any item; ``rank`` (N,) its exposure index e, ``item`` (N,) its item j; ``frequencies``
    (shells,) 1/Å) by weighted least squares with ``precision`` (N, shells) per Fourier component (times
    the shell's component count, ∝ k on a 2-D grid, here), alternating β̄
    (:func:`mean_spectrum`) with L-BFGS over the B-factors and log scales."""
    k = np.asarray(frequencies, np.float64)
    # × the shell's component count on a 2-D grid (∝ k): the precisions given are per component
    p = torch.from_numpy(np.asarray(precision, np.float64) * np.maximum(k, k[k > 0].min() if (k > 0).any() else 1.0))
    p = p / p[p > 0].mean() if bool((p > 0).any()) else torch.ones_like(p)
    y = torch.from_numpy(np.asarray(values, np.float64))
    y = y / torch.sqrt((p * y * y).sum() / p.sum()).clamp_min(1e-300)  # O(1) values for L-BFGS
    rank_t, item_t = torch.from_numpy(np.asarray(rank, np.int64)), torch.from_numpy(np.asarray(item, np.int64))
    k2 = torch.from_numpy(k**2)
    n_e, n_j = int(rank_t.max()) + 1, int(item_t.max()) + 1
    # B in units of 100 Å² (L-BFGS scaling); log scales
    b_e = torch.zeros(n_e, dtype=torch.float64, requires_grad=True)
    b_j = torch.zeros(n_j, dtype=torch.float64, requires_grad=True)
    s_e = torch.zeros(n_e, dtype=torch.float64, requires_grad=True)
    s_j = torch.zeros(n_j, dtype=torch.float64, requires_grad=True)

    def envelope() -> torch.Tensor:
        b = (b_e[rank_t] + b_j[item_t])[:, None]
        return torch.exp(-25.0 * b * k2) * torch.exp(s_e[rank_t] + s_j[item_t])[:, None]

    for _ in range(rounds):
        with torch.no_grad():
            mean = mean_spectrum(y, envelope(), p)
        opt = torch.optim.LBFGS([b_e, b_j, s_e, s_j], lr=1, max_iter=50, line_search_fn="strong_wolfe")

        def closure(opt: torch.optim.LBFGS = opt, mean: torch.Tensor = mean) -> torch.Tensor:
            opt.zero_grad()
            loss = (p * (y - mean[None] * envelope()) ** 2).sum()
            # the split between exposure and item terms is free: keep the item terms centred
            loss = loss + (b_j.sum() ** 2 + s_j.sum() ** 2)
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            b_e.clamp_(-max_bfactor / 100, max_bfactor / 100)
            b_j.clamp_(-max_bfactor / 100, max_bfactor / 100)
    return EnvelopeFit(100.0 * b_e.detach().numpy(), s_e.detach().numpy(), 100.0 * b_j.detach().numpy(),
                       s_j.detach().numpy())


def fit_exposure_weights(
    spectra: np.ndarray,
    frequencies: np.ndarray,
    *,
    shell_range: tuple[int, int] | None = None,
    rounds: int = 5,
    max_bfactor: float = 500.0,
) -> np.ndarray:
    """Fit per-exposure (B-factor Å², scale) (n, 2) of one item to its spectra — summed
    (n, shells, 3) or NC (n, shells), see :func:`regression_terms` — at ``frequencies`` (shells,) 1/Å.
    ``shell_range`` (lo, hi) restricts the shells used (default 1 .. last)."""
    values, precision = regression_terms(spectra)
    if values.shape[1] != len(frequencies):
        raise ValueError(f"spectra must have len(frequencies) = {len(frequencies)} shells, got {values.shape}")
    lo, hi = shell_range or (1, values.shape[1])
    n = values.shape[0]
    fit = fit_envelopes(values[:, lo:hi], precision[:, lo:hi], np.arange(n), np.zeros(n, np.int64),
                        np.asarray(frequencies, np.float64)[lo:hi], rounds=rounds, max_bfactor=max_bfactor)
    bb, ss = fit.bfactor, fit.log_scale
    return np.stack([bb - bb.min(), np.exp(ss - ss.max())], 1)
