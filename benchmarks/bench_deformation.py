"""M's deformation models on simulated data (issue 15): volume warp (tilt series) and doming (frames).

Tilt series are simulated with a smooth volume deformation injected (``mrepo.sim.deformation``:
d(r, t) = t (D u + bend e_z), about ``--warp`` Å by the last tilt, applied to the particle centres per
tilt before projection; image warp off) and, as control, without it; frame series with the
simulator's dome (``--dome`` Å defocus change at the centre, growing with exposure; drift and image
warp off) and, as control, a flat one. Every other parameter is at the truth (tests/workers/simdata.py
``truth=True``: true CTF, shifts, stage angles, poses; the true maps as references). Rows refine one
iteration per item with only the deformation group on (``refine_shifts`` off), add the half-set sums
of all items and reconstruct. Columns: residual of the model against the injected truth (volume warp:
RMS of the fitted minus true displacement projected into each tilt, px; doming: RMS of the fitted minus
true defocus change, Å, both at the particles), FSC = 0.5 of the half-map average vs the true map
(Å, interpolated between shells), mean FSC vs truth over all shells, largest FSC change vs the row without the model in units of
the FSC noise 1/√(voxels in the shell), seconds per item.

Run: ``nice .venv/bin/python benchmarks/bench_deformation.py`` (``--quick``: 1 item);
``--only weights``: only the exposure-weight rows (tilt series with the simulator's measured damage,
two refine_population iterations without weights, with per-item and with per-source weights);
``--only weights-recovery``: how well the exposure-weight fits recover the simulator's injected damage
(``mrepo sim tilts --damage measured``) from the spectra of real simulated images: per triplet of tilt
series (192² px, ±45° in 9° steps, 30 particles, ``--recovery-snr``, species seed 7; ``--recovery-seeds``
"11,12,13;21,22,23", default: four triplets, ``--quick`` the first), everything at the truth, one
refinement pass per item (nothing refined, 5 Å limit) gives the per-exposure spectra (``--recovery-pad 6``:
particles rendered in 6 × box instead of tilts_sim's 2 × box, which wraps the CTF-delocalised signal); the per-source
and per-item fits are run on the regression coefficient (the fit's input now) and, for comparison, on
the NC (M's quantity, the input before). Truth: B-factor per tilt as injected, scale cos(tilt) × damage
scale / the tilt's standard deviation (the data's per-tilt normalisation, as M). M's weights are relative
(the smallest B is 0, the largest scale 1), so B is compared after removing the mean over the source
("rel. RMS"; "min RMS": both sides minus their minimum, the metric of the first measurement), scales as
log-ratios after removing their mean, and the whole weight ln(scale) − B k²/4 over shells 1..12 likewise.
Writes benchmarks/results/bench_deformation_weights-recovery_padN.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mrepo.kernels.fsc import fsc  # noqa: E402
from mrepo.kernels.tilt_geometry import tilt_matrices  # noqa: E402
from mrepo.workers.api import ItemTask  # noqa: E402
from mrepo.workers.deformation import doming_defocus, volume_warp_displacement  # noqa: E402
from mrepo.workers.reconstruct import reconstruct_species  # noqa: E402
from mrepo.workers.refine_item import refine_item  # noqa: E402
from mrepo.workers.settings import RefineSettings  # noqa: E402
from tests.workers.simdata import build_population, frames_sim, tilts_sim  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
LIMIT = 5.0


def _shell_counts(box: int) -> np.ndarray:
    f = np.fft.fftfreq(box) * box
    r = np.sqrt(f[:, None, None] ** 2 + f[None, :, None] ** 2 + f[None, None, :] ** 2)
    return np.bincount(np.round(r).astype(int).ravel(), minlength=box // 2 + 1)[: box // 2 + 1]


def _residual(sim, repo, item_hash: str) -> float | None:
    t = sim.truth
    models = repo.item(item_hash).models
    if sim.kind == "tilts":
        coords = t.particles.coordinates[:, 0]
        time = t.pre_exposure / t.pre_exposure.max()
        n = len(time)
        true = (t.volume_deformation(coords, time).transpose(1, 0, 2) if t.volume_deformation is not None
                else np.zeros((len(coords), n, 3)))
        fit = np.zeros_like(true) if "volume_warp" not in models else volume_warp_displacement(
            torch.from_numpy(repo.objects.get_array(models["volume_warp"])), torch.from_numpy(np.repeat(coords[:, None], n, 1)), torch.from_numpy(t.volume_size_A),
            torch.from_numpy(time)).numpy()
        a = tilt_matrices(*(torch.from_numpy(np.deg2rad(x)) for x in (t.xtilt, t.ytilt, t.zrot))).numpy()
        err = np.einsum("iab,pib->pia", a, fit - true)[..., :2] / t.optics.pixel_size
        return float(np.sqrt((err**2).sum(-1).mean()))
    xy = t.particles.coordinates[:, :, :2] / t.optics.pixel_size
    time = t.pre_exposure / t.pre_exposure.max()
    true = t.particles.coordinates[:, :, 2] - t.particles.coordinates[:, :1, 2]
    fit = np.zeros_like(true) if "doming" not in models else doming_defocus(
        torch.from_numpy(repo.objects.get_array(models["doming"])), torch.from_numpy(xy), *t.image_size,
        torch.from_numpy(time)).numpy()
    return float(np.sqrt((((fit - fit.mean()) - (true - true.mean())) ** 2).mean()))


def run_row(items: list, settings: RefineSettings) -> dict[str, Any]:
    sr = build_population(items, truth=True, resolution=LIMIT)
    repo, pop = sr.repo, sr.repo.population()
    hashes = repo.source(pop.sources["sim"]).items
    sums: dict[str, Any] = {}
    seconds, residuals = 0.0, []
    for sim, key in zip(items, sr.item_keys):
        r = refine_item(ItemTask(repo.url, "sim", key, hashes[key], dict(pop.species), settings.to_json(), 1, 0))
        seconds += r.stats["seconds"]
        for name, s in r.sums.items():
            sums[name] = s if name not in sums else sums[name].add(s)
        residuals.append(_residual(sim, repo, r.item_hash))
    curves, res = [], []
    for sp in items[0].species:
        rec = reconstruct_species(sums[sp.spec.name], sp.spec.box, items[0].truth.optics.pixel_size, sp.mask)
        avg = torch.from_numpy((rec.half1 + rec.half2) / 2)
        curve = fsc(avg, torch.from_numpy(sp.map), torch.from_numpy(sp.mask)).double().numpy()
        curves.append(curve)
        below = np.flatnonzero(curve[1:] < 0.5)
        shell = float(len(curve) - 1)
        if len(below) and below[0] > 0:  # linear interpolation between the shells around the crossing
            j = below[0] + 1
            shell = j - 1 + (curve[j - 1] - 0.5) / (curve[j - 1] - curve[j])
        res.append(sp.spec.box * items[0].truth.optics.pixel_size / shell)
    return {"residual": float(np.sqrt(np.mean(np.square(residuals)))), "fsc05_A": float(np.mean(res)),
            "mean_fsc": float(np.mean([c[1:].mean() for c in curves])), "curve": np.mean(curves, 0).tolist(),
            "seconds_per_item": round(seconds / len(items), 1)}


def run_weights(seeds: list[int]) -> list[dict[str, Any]]:
    """Tilt series with the simulator's measured damage, everything at the truth: two refine_population
    iterations (weights fitted after the first apply in the second) without weights (dose rule), with
    per-item and with per-source weights; FSC of the committed map vs the true map."""
    from mrepo.workers.driver import refine_population
    from mrepo.workers.executors import LocalExecutor

    sims = [tilts_sim(seed=s, n_particles=20, size=192, max_tilt=45.0, tilt_step=9.0, snr=0.08, warp_px=0.0,
                      damage="measured", species_seed=7) for s in seeds]
    rows = []
    for label, settings in (("dose rule (no --weights)", RefineSettings(refine_shifts=False)),
                            ("--weights-scope item", RefineSettings(refine_shifts=False, weights=True,
                                                                    weights_scope="item")),
                            ("--weights-scope source", RefineSettings(refine_shifts=False, weights=True))):
        sr = build_population(sims, truth=True, resolution=LIMIT)
        start = time.perf_counter()
        refine_population(sr.repo, "main", 2, settings, LocalExecutor(use_cache=False))
        seconds = (time.perf_counter() - start) / (2 * len(sims))
        pop = sr.repo.population()
        curves = []
        for sp in sims[0].species:
            rec = sr.repo.species(pop.species[sp.spec.name])
            avg = (np.asarray(sr.repo.objects.get_array(rec.half1), np.float64)
                   + np.asarray(sr.repo.objects.get_array(rec.half2), np.float64)) / 2
            curves.append(fsc(torch.from_numpy(avg), torch.from_numpy(sp.map), torch.from_numpy(sp.mask)).numpy())
        curve = np.mean(curves, 0)
        rows.append({"kind": "tilts", "effect": "measured damage", "row": label, "residual": float("nan"),
                     "fsc05_A": _fsc05(curve, sims[0].species[0].spec.box * sims[0].truth.optics.pixel_size),
                     "mean_fsc": float(curve[1:].mean()), "fsc_change_in_noise_units": 0.0,
                     "seconds_per_item": round(seconds, 1)})
    return rows


def _recovery_metrics(fitted: list[np.ndarray], truth: list[dict[str, np.ndarray]], freqs: np.ndarray) -> dict[str, float]:
    """Compare fitted per-item weights (n, 2) (B Å², scale) with the injected ones (see module docstring)."""
    fb = np.concatenate([w[:, 0] for w in fitted])
    tb = np.concatenate([t["bfactor"] for t in truth])
    rel = (fb - fb.mean()) - (tb - tb.mean())
    ls = np.concatenate([np.log(w[:, 1]) - np.log(t["scale"]) for w, t in zip(fitted, truth)])
    k2 = freqs**2 / 4
    lw = np.concatenate([(np.log(w[:, 1])[:, None] - w[:, 0, None] * k2) - (np.log(t["scale"])[:, None] - t["bfactor"][:, None] * k2)
                         for w, t in zip(fitted, truth)])
    high = np.concatenate([np.abs(t["tilt"]) > 40 for t in truth])
    first = [(w[t["order"][0], 0] - w[t["order"][1], 0], t["bfactor"][t["order"][0]] - t["bfactor"][t["order"][1]])
             for w, t in zip(fitted, truth)]
    return {
        "b_correlation": float(np.corrcoef(fb, tb)[0, 1]),
        "b_rel_rms_A2": float(np.sqrt(np.mean(rel**2))),
        "b_min_rms_A2": float(np.sqrt(np.mean(((fb - fb.min()) - (tb - tb.min())) ** 2))),
        "high_tilt_b_ratio": float((fb[high] - fb.mean()).mean() / (tb[high] - tb.mean()).mean()),
        "first_tilt_excess_A2": float(np.mean([f for f, _ in first])),
        "first_tilt_excess_true_A2": float(np.mean([t for _, t in first])),
        "log_scale_rms": float(np.sqrt(np.mean((ls - ls.mean()) ** 2))),
        "log_weight_rms": float(np.sqrt(np.mean((lw - lw.mean()) ** 2))),
    }


def run_weights_recovery(triplets: list[list[int]], snr: float, pad: int = 2) -> list[dict[str, Any]]:
    """Per triplet of series: the spectra of one pass per item at the truth, fitted per source and per
    item on the regression coefficient and on the NC; metrics of :func:`_recovery_metrics`."""
    from mrepo.workers.source_weights import fit_source_weights
    from mrepo.workers.weights import fit_exposure_weights, normalised_correlation

    rows = []
    settings = RefineSettings(refine_shifts=False)
    for seeds in triplets:
        sims = [tilts_sim(seed=s, n_particles=30, size=192, max_tilt=45.0, tilt_step=9.0, snr=snr, warp_px=0.0,
                          damage="measured", species_seed=7, pad=pad) for s in seeds]
        sr = build_population(sims, truth=True, resolution=LIMIT)
        repo, pop = sr.repo, sr.repo.population()
        hashes = repo.source(pop.sources["sim"]).items
        spectra, truth = [], []
        start = time.perf_counter()
        for sim, key in zip(sims, sr.item_keys):
            r = refine_item(ItemTask(repo.url, "sim", key, hashes[key], dict(pop.species), settings.to_json(), 1, 0))
            spectra.append(np.asarray(repo.objects.get_array(r.nc_spectra), np.float64))
            t = sim.truth
            std = np.asarray(sim.data, np.float64).reshape(len(t.dose), -1).std(1)
            truth.append({"bfactor": t.damage.bfactors_A2, "tilt": t.ytilt, "order": t.acquisition_order,
                          "scale": np.cos(np.deg2rad(t.ytilt)) * t.damage.scales / std})
        seconds = (time.perf_counter() - start) / len(sims)
        box_a = sims[0].species[0].spec.box * sims[0].truth.optics.pixel_size
        shells = spectra[0].shape[1]
        freqs = np.arange(shells) / box_a
        band = (1, min(shells, int(np.floor(box_a / LIMIT)) + 1))
        orders = [t["order"] for t in truth]
        for quantity, data in (("regression", spectra), ("NC", [normalised_correlation(s) for s in spectra])):
            fits = {"source": fit_source_weights(data, orders, freqs, shell_range=band).per_item,
                    "item": [fit_exposure_weights(d, freqs, shell_range=band) for d in data]}
            for scope, fitted in fits.items():
                rows.append({"seeds": list(seeds), "snr": snr, "pad": pad, "quantity": quantity, "scope": scope,
                             **_recovery_metrics(fitted, truth, freqs[band[0]:band[1]]),
                             "spectra_seconds_per_item": round(seconds, 1),
                             "fitted_bfactor_A2": [w[:, 0].round(1).tolist() for w in fitted],
                             "true_bfactor_A2": [t["bfactor"].round(1).tolist() for t in truth]})
    return rows


def _print_recovery(rows: list[dict[str, Any]]) -> None:
    keys = ("b_correlation", "b_rel_rms_A2", "b_min_rms_A2", "high_tilt_b_ratio", "first_tilt_excess_A2",
            "log_scale_rms", "log_weight_rms")
    print(f"{'seeds':10} {'quantity':10} {'scope':6} {'B corr':>6} {'relRMS':>6} {'minRMS':>6} {'±45 ×':>6} "
          f"{'1st ΔB':>6} {'ln s':>6} {'ln W':>6}   (first tilt ΔB injected: "
          f"{rows[0]['first_tilt_excess_true_A2']:.0f} Å²; ±45 × injected: 1)")
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["quantity"], r["scope"]), []).append(r)
        print(f"{','.join(map(str, r['seeds'])):10} {r['quantity']:10} {r['scope']:6} "
              + " ".join(f"{r[k]:6.2f}" if abs(r[k]) < 10 else f"{r[k]:6.1f}" for k in keys))
    for (quantity, scope), rs in groups.items():
        if len(rs) > 1:
            print(f"{'mean':10} {quantity:10} {scope:6} "
                  + " ".join(f"{np.mean([r[k] for r in rs]):6.2f}" if abs(np.mean([r[k] for r in rs])) < 10
                             else f"{np.mean([r[k] for r in rs]):6.1f}" for k in keys))


def _fsc05(curve: np.ndarray, box_A: float) -> float:
    below = np.flatnonzero(curve[1:] < 0.5)
    shell = float(len(curve) - 1)
    if len(below) and below[0] > 0:
        j = below[0] + 1
        shell = j - 1 + (curve[j - 1] - 0.5) / (curve[j - 1] - curve[j])
    return box_A / shell


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one item per row")
    ap.add_argument("--warp", type=float, default=5.0, help="injected volume deformation, Å")
    ap.add_argument("--dome", type=float, default=600.0, help="injected dome, Å of defocus at the centre")
    ap.add_argument("--grid", default="3x3x2x2", help="volume warp grid XxYxZxT")
    ap.add_argument("--only", choices=("all", "deformation", "weights", "weights-recovery"), default="all",
                    help="which rows to run")
    ap.add_argument("--recovery-snr", type=float, default=0.3, help="weights-recovery: SNR of the tilt series")
    ap.add_argument("--recovery-pad", type=int, default=2,
                    help="weights-recovery: the simulator's particle render box in boxes (2: tilts_sim's default, "
                         "wraps the CTF-delocalised signal; 6 keeps it)")
    ap.add_argument("--recovery-seeds", default="11,12,13;21,22,23;31,32,33;41,42,43",
                    help="weights-recovery: series seeds, triplets separated by ';' (--quick: the first)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.only == "weights-recovery":
        triplets = [[int(x) for x in t.split(",")] for t in args.recovery_seeds.split(";") if t.strip()]
        rows = run_weights_recovery(triplets[:1] if args.quick else triplets, args.recovery_snr, args.recovery_pad)
        _print_recovery(rows)
        RESULTS.mkdir(parents=True, exist_ok=True)
        out = RESULTS / f"bench_deformation_weights-recovery_pad{args.recovery_pad}.json"
        out.write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
        print(f"wrote {out}")
        return
    seeds = [3] if args.quick else [3, 4]
    off = RefineSettings(refine_shifts=False)
    rows = []
    box = 32
    noise = 1 / np.sqrt(np.maximum(_shell_counts(box), 1))
    scenarios = [
        ("tilts", "volume warp", lambda s, on: tilts_sim(seed=s, n_particles=16, size=192, max_tilt=45.0,
                                                         tilt_step=9.0, snr=2.0, warp_px=0.0, species_seed=7,
                                                         volume_warp_A=args.warp if on else 0.0),
         RefineSettings(refine_shifts=False, volume_warp=args.grid, lbfgs_iterations=30)),
        ("frames", "doming", lambda s, on: frames_sim(seed=s, n_particles=16, n_frames=6, size=192, snr=2.0,
                                                      warp_px=0.0, drift_px=0.0, species_seed=7,
                                                      doming_A=args.dome if on else 0.0),
         RefineSettings(refine_shifts=False, doming=(3, 3, 3), ctf_min_resolution=10.0, lbfgs_iterations=30)),
    ]
    for kind, model, make, settings in (scenarios if args.only != "weights" else []):
        for injected in (True, False):
            items = [make(s, injected) for s in seeds]
            base = run_row(items, off)
            with_model = run_row(items, settings)
            change = float((np.abs(np.array(with_model["curve"]) - np.array(base["curve"]))[1:] / noise[1:]).max())
            for label, row in ((f"{model} off", base), (f"{model} on", with_model)):
                rows.append({"kind": kind, "effect": "injected" if injected else "none", "row": label,
                             **{k: v for k, v in row.items() if k != "curve"},
                             "fsc_change_in_noise_units": change if row is with_model else 0.0})
    if args.only != "deformation":
        rows.extend(run_weights(seeds + [5]))
    print(f"{'kind':7} {'effect':9} {'row':17} {'residual':>9} {'FSC0.5 Å':>9} {'mean FSC':>9} "
          f"{'ΔFSC/σ':>7} {'s/item':>7}")
    for r in rows:
        print(f"{r['kind']:7} {r['effect']:9} {r['row']:17} {r['residual']:9.3f} {r['fsc05_A']:9.2f} "
              f"{r['mean_fsc']:9.4f} {r['fsc_change_in_noise_units']:7.2f} {r['seconds_per_item']:7.1f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / ("bench_deformation.json" if args.only == "all" else f"bench_deformation_{args.only}.json")
    out.write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
