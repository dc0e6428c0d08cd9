"""Data-driven exposure weights fitted over all items of a data source (M paper, Methods: Data-driven
weighting; M assigns "unique weights to every series and frame/tilt index").

From the per-exposure spectra of every item j of a source (summed cross term, model power and data
power between its CTF-premultiplied data and the CTF²-weighted reference per Fourier shell,
:func:`mrepo.workers.weights.nc_spectra`), fit the regression coefficient β_ji(k) = cross / model power
(:func:`mrepo.workers.weights.regression_terms`: linear in the amplitude at any SNR, unlike the NC)

    β_ji(k) ≈ β̄(k) · s_e · w_j · exp(-(B_e + b_j) k² / 4),   e = rank of exposure i in its item's
                                                            acquisition order

i.e. a B-factor (Å²) and scale per exposure index e shared by all items (radiation damage and the
motion of the first frames/tilts) and per item j (its overall quality), alternating the mean
spectrum β̄ and an inverse-variance weighted least-squares L-BFGS fit
(:func:`mrepo.workers.weights.fit_envelopes`; :func:`mrepo.workers.weights.fit_exposure_weights`
does the same for one item). The result is normalised over the whole source — the smallest B is 0 and
the largest scale 1 — so better items keep their larger weight in the reconstruction. Each item's
weights are written as its ``weights`` model (n, 2) (B Å², scale) in stack order. k in 1/Å; no
Fourier layout here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from mrepo.graph import Item
from mrepo.store import ObjectStore
from mrepo.workers.api import ItemResult
from mrepo.workers.weights import fit_envelopes, regression_terms

__all__ = ["SourceWeights", "fit_source_weights", "refit_source_weights"]


@dataclass
class SourceWeights:
    """Fitted terms: ``exposure`` (E, 2) per exposure index (B Å², scale), ``items`` (J, 2) per item,
    and ``per_item`` [(n_j, 2)] the combined, source-normalised weights in each item's stack order."""

    exposure: np.ndarray
    items: np.ndarray
    per_item: list[np.ndarray]


def fit_source_weights(
    spectra: list[np.ndarray],
    orders: list[np.ndarray],
    frequencies: np.ndarray,
    *,
    shell_range: tuple[int, int] | None = None,
    rounds: int = 5,
    max_bfactor: float = 500.0,
) -> SourceWeights:
    """Fit the model above to the spectra of J items, summed (n_j, shells, 3) or NC (n_j, shells) (fitted
    as they are, unweighted: analytic tests); ``orders[j]`` (n_j,) is item j's
    acquisition order (stack index of its e-th exposure); ``frequencies`` (shells,) 1/Å; ``shell_range``
    (lo, hi) restricts the shells used (default 1 .. last)."""
    if not spectra or len(spectra) != len(orders):
        raise ValueError("need one acquisition order per item's spectra, and at least one item")
    shells = len(frequencies)
    rank_rows, item_rows, values, precisions = [], [], [], []
    for j, (sp, order) in enumerate(zip(spectra, orders)):
        sp = np.asarray(sp, np.float64)
        n = sp.shape[0] if sp.ndim in (2, 3) else -1
        if sp.ndim not in (2, 3) or sp.shape[1] != shells or sorted(np.asarray(order).tolist()) != list(range(n)):
            raise ValueError(
                f"item {j}: spectra must be (n, {shells}) or (n, {shells}, 3) with an acquisition order of "
                f"0..n-1, got {sp.shape} and {len(order)} entries"
            )
        v, p = regression_terms(sp)
        rank = np.empty(n, dtype=np.int64)
        rank[np.asarray(order, np.int64)] = np.arange(n)
        rank_rows.append(rank)
        item_rows.append(np.full(n, j))
        values.append(v)
        precisions.append(p)
    lo, hi = shell_range or (1, shells)
    fit = fit_envelopes(np.concatenate(values)[:, lo:hi], np.concatenate(precisions)[:, lo:hi],
                        np.concatenate(rank_rows), np.concatenate(item_rows),
                        np.asarray(frequencies, np.float64)[lo:hi], rounds=rounds, max_bfactor=max_bfactor)
    be, bj, se, sj = fit.bfactor, fit.item_bfactor, fit.log_scale, fit.item_log_scale
    combined_b = [be[r] + bj[j] for j, r in enumerate(rank_rows)]
    combined_s = [se[r] + sj[j] for j, r in enumerate(rank_rows)]
    b_min = min(float(b.min()) for b in combined_b)
    s_max = max(float(s.max()) for s in combined_s)
    per_item = [np.stack([b - b_min, np.exp(s - s_max)], 1) for b, s in zip(combined_b, combined_s)]
    return SourceWeights(
        np.stack([be - be.min(), np.exp(se - se.max())], 1),
        np.stack([bj - bj.min(), np.exp(sj - sj.max())], 1),
        per_item,
    )


def refit_source_weights(
    objects: ObjectStore, results: list[ItemResult], resolution: float
) -> tuple[list[ItemResult], dict[str, dict[str, list]]]:
    """Fit :func:`fit_source_weights` over each data source's refined items (their spectra, shells up
    to ``resolution`` Å) and store every item again with the fitted ``weights`` model; returns the
    results pointing at the new item versions and, per source, the fitted exposure and item terms
    (for the commit's operation record). Items without spectra keep their version."""
    by_source: dict[str, list[int]] = {}
    for k, r in enumerate(results):
        if r.nc_spectra is not None:
            by_source.setdefault(r.task.source, []).append(k)
    out, summary = list(results), {}
    for source, rows in sorted(by_source.items()):
        items = [Item.load(objects, results[k].item_hash) for k in rows]
        spectra = [np.asarray(objects.get_array(results[k].nc_spectra), np.float64) for k in rows]
        shells = min(s.shape[1] for s in spectra)
        spectra = [s[:, :shells] for s in spectra]
        orders = [
            np.asarray(it.imaging.get("acquisition_order", list(range(len(s)))), np.int64)
            for it, s in zip(items, spectra)
        ]
        box_pixel = 2 * (shells - 1) * float(items[0].imaging["pixel_size"])  # box (Å) of the spectra
        freqs = np.arange(shells) / box_pixel
        limit = min(shells, int(np.floor(box_pixel / resolution)) + 1) if np.isfinite(resolution) else shells
        fit = fit_source_weights(spectra, orders, freqs, shell_range=(1, max(limit, 3)))
        for k, item, w in zip(rows, items, fit.per_item):
            models = {**item.models, "weights": objects.put_array(np.ascontiguousarray(w, dtype=np.float64))}
            out[k] = dataclasses.replace(results[k], item_hash=dataclasses.replace(item, models=models).save(objects))
        summary[source] = {
            "exposure_bfactor_A2": fit.exposure[:, 0].round(2).tolist(),
            "exposure_scale": fit.exposure[:, 1].round(4).tolist(),
            "item_bfactor_A2": fit.items[:, 0].round(2).tolist(),
            "item_scale": fit.items[:, 1].round(4).tolist(),
        }
    return out, summary
