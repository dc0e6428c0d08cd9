"""Data-driven exposure weights fitted over all items of a data source (M paper, Methods: Data-driven
weighting; M assigns "unique weights to every series and frame/tilt index").

From the per-exposure NC spectra of every item j of a source (``NC_ji(k)``, the normalised correlation
between its particle images and the reference projections per Fourier shell, :func:`nc_spectra`), fit

    NC_ji(k) ≈ NC̄(k) · s_e · w_j · exp(-(B_e + b_j) k² / 4),   e = rank of exposure i in its item's
                                                                acquisition order

i.e. a B-factor (Å²) and scale per exposure index e shared by all items (radiation damage and the
motion of the first frames/tilts) and per item j (its overall quality), alternating the mean
spectrum NC̄ and an L1-robust L-BFGS fit (:func:`mrepo.workers.weights.fit_exposure_weights` does the
same for one item). The result is normalised over the whole source — the smallest B is 0 and the
largest scale 1 — so better items keep their larger weight in the reconstruction. Each item's
weights are written as its ``weights`` model (n, 2) (B Å², scale) in stack order. k in 1/Å; no
Fourier layout here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["SourceWeights", "fit_source_weights"]


@dataclass
class SourceWeights:
    """Fitted terms: ``exposure`` (E, 2) per exposure index (B Å², scale), ``items`` (J, 2) per item,
    and ``per_item`` [(n_j, 2)] the combined, source-normalised weights in each item's stack order."""

    exposure: np.ndarray
    items: np.ndarray
    per_item: list[np.ndarray]


def fit_source_weights(spectra: list[np.ndarray], orders: list[np.ndarray], frequencies: np.ndarray, *,
                       shell_range: tuple[int, int] | None = None, rounds: int = 5,
                       max_bfactor: float = 500.0) -> SourceWeights:
    """Fit the model above to the NC spectra (n_j, shells) of J items; ``orders[j]`` (n_j,) is item j's
    acquisition order (stack index of its e-th exposure); ``frequencies`` (shells,) 1/Å; ``shell_range``
    (lo, hi) restricts the shells used (default 1 .. last)."""
    if not spectra or len(spectra) != len(orders):
        raise ValueError("need one acquisition order per item's spectra, and at least one item")
    shells = len(frequencies)
    rank_rows, item_rows, rows = [], [], []
    for j, (nc, order) in enumerate(zip(spectra, orders)):
        nc = np.asarray(nc, np.float64)
        if nc.ndim != 2 or nc.shape[1] != shells or sorted(np.asarray(order).tolist()) != list(range(nc.shape[0])):
            raise ValueError(f"item {j}: spectra must be (n, {shells}) with an acquisition order of 0..n-1, "
                             f"got {nc.shape} and {len(order)} entries")
        rank = np.empty(nc.shape[0], dtype=np.int64)
        rank[np.asarray(order, np.int64)] = np.arange(nc.shape[0])
        rank_rows.append(rank)
        item_rows.append(np.full(nc.shape[0], j))
        rows.append(nc)
    lo, hi = shell_range or (1, shells)
    y = torch.from_numpy(np.concatenate(rows)[:, lo:hi])
    rank, item = torch.from_numpy(np.concatenate(rank_rows)), torch.from_numpy(np.concatenate(item_rows))
    k2 = torch.from_numpy(np.asarray(frequencies, np.float64)[lo:hi] ** 2)
    n_e, n_j = int(rank.max()) + 1, len(spectra)
    # B in units of 100 Å² (L-BFGS scaling); log scales
    b_e = torch.zeros(n_e, dtype=torch.float64, requires_grad=True)
    b_j = torch.zeros(n_j, dtype=torch.float64, requires_grad=True)
    s_e = torch.zeros(n_e, dtype=torch.float64, requires_grad=True)
    s_j = torch.zeros(n_j, dtype=torch.float64, requires_grad=True)

    def envelope() -> torch.Tensor:
        b = (b_e[rank] + b_j[item])[:, None]
        return torch.exp(-25.0 * b * k2) * torch.exp(s_e[rank] + s_j[item])[:, None]

    for _ in range(rounds):
        with torch.no_grad():
            g = envelope()
            mean = (y * g).sum(0) / (g * g).sum(0).clamp_min(1e-12)
        opt = torch.optim.LBFGS([b_e, b_j, s_e, s_j], lr=1, max_iter=50, line_search_fn="strong_wolfe")

        def closure(opt: torch.optim.LBFGS = opt, mean: torch.Tensor = mean) -> torch.Tensor:
            opt.zero_grad()
            loss = torch.sqrt((y - mean[None] * envelope()) ** 2 + 1e-8).sum()
            # the split between exposure and item terms is free: keep the item terms centred
            loss = loss + (b_j.sum() ** 2 + s_j.sum() ** 2)
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            b_e.clamp_(-max_bfactor / 100, max_bfactor / 100)
            b_j.clamp_(-max_bfactor / 100, max_bfactor / 100)
    be, bj = 100.0 * b_e.detach().numpy(), 100.0 * b_j.detach().numpy()
    se, sj = s_e.detach().numpy(), s_j.detach().numpy()
    combined_b = [be[r] + bj[j] for j, r in enumerate(rank_rows)]
    combined_s = [se[r] + sj[j] for j, r in enumerate(rank_rows)]
    b_min = min(float(b.min()) for b in combined_b)
    s_max = max(float(s.max()) for s in combined_s)
    per_item = [np.stack([b - b_min, np.exp(s - s_max)], 1) for b, s in zip(combined_b, combined_s)]
    return SourceWeights(np.stack([be - be.min(), np.exp(se - se.max())], 1),
                         np.stack([bj - bj.min(), np.exp(sj - sj.max())], 1), per_item)
