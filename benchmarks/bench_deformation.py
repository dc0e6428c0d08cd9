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
writes benchmarks/results/bench_deformation[_ONLY].json and prints the table.
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
    ap.add_argument("--only", choices=("all", "deformation", "weights"), default="all", help="which rows to run")
    args = ap.parse_args()
    torch.set_num_threads(1)
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
