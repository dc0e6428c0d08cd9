"""M's tilt movies on simulated data (issue 15, item 4): per-frame motion inside each tilt's movie.

Tilt series are simulated with raw tilt movies (``--frames`` frames per tilt; the tilt image is the
unaligned sum of its frames) with per-frame motion injected (``mrepo.sim.tilt_movies``: a random walk
per tilt, zero-mean over its frames, RMS ``--motion`` px) and, as control, without motion. Every other
parameter is at the truth (tests/workers/simdata.py ``truth=True``; image warp off; the true maps as
references). Rows refine one iteration per item with only the tilt-movie group on (``refine_shifts``
off; ``--refine-tilt-movies``) or nothing, add the half-set sums of all items and reconstruct.
Columns: RMS of the fitted minus the injected per-frame shifts over all frames (px; without the model
the fitted shifts are zero), FSC = 0.5 of the half-map average vs the true map (Å, interpolated between
shells), mean FSC vs truth over all shells, largest FSC change vs the row without the model in units of
the FSC noise 1/√(voxels in the shell), seconds per item (refinement and back-projection).

Last rows: from the simulator's perturbed initial parameters, two ``refine_population`` iterations refining
shifts and poses with and without the tilt movies (species resolution 8 Å at the start; seconds per
item-iteration).

Run: ``nice .venv/bin/python benchmarks/bench_tilt_movies.py`` (``--quick``: 1 item per row);
writes benchmarks/results/bench_tilt_movies.json and prints the table.
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

from benchmarks.bench_deformation import _fsc05, _shell_counts  # noqa: E402
from mrepo.kernels.fsc import fsc  # noqa: E402
from mrepo.workers.api import ItemTask  # noqa: E402
from mrepo.workers.reconstruct import reconstruct_species  # noqa: E402
from mrepo.workers.refine_item import refine_item  # noqa: E402
from mrepo.workers.settings import RefineSettings  # noqa: E402
from mrepo.workers.tilt_movies import MODEL  # noqa: E402
from tests.workers.simdata import build_population, tilts_sim  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
LIMIT = 5.0


def _series(seeds: list[int], frames: int, motion_px: float) -> list:
    """The benchmark's simulated tilt series (one per seed; 16 particles, ±30° in 10° steps, SNR 2,
    no image warp) with raw movies of ``frames`` frames and ``motion_px`` RMS per-frame motion."""
    return [
        tilts_sim(
            seed=s,
            n_particles=16,
            size=160,
            max_tilt=30.0,
            tilt_step=10.0,
            snr=2.0,
            warp_px=0.0,
            species_seed=7,
            tilt_movie_frames=frames,
            tilt_movie_motion_px=motion_px,
        )
        for s in seeds
    ]


def _residual_px(sim, repo, item_hash: str) -> float:
    true = sim.truth.tilt_movie_shifts_px
    models = repo.item(item_hash).models
    fit = (
        np.zeros_like(true)
        if MODEL not in models
        else (repo.objects.get_array(models[MODEL]) / sim.truth.optics.pixel_size)
    )
    return float(np.sqrt(((fit - true) ** 2).sum(-1).mean()))


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
        residuals.append(_residual_px(sim, repo, r.item_hash))
    curves = []
    for sp in items[0].species:
        rec = reconstruct_species(sums[sp.spec.name], sp.spec.box, items[0].truth.optics.pixel_size, sp.mask)
        avg = torch.from_numpy((rec.half1 + rec.half2) / 2)
        curves.append(fsc(avg, torch.from_numpy(sp.map), torch.from_numpy(sp.mask)).double().numpy())
    curve = np.mean(curves, 0)
    box_a = items[0].species[0].spec.box * items[0].truth.optics.pixel_size
    return {
        "residual_px": float(np.sqrt(np.mean(np.square(residuals)))),
        "fsc05_A": float(np.mean([_fsc05(c, box_a) for c in curves])),
        "mean_fsc": float(curve[1:].mean()),
        "curve": curve.tolist(),
        "seconds_per_item": round(seconds / len(items), 1),
    }


def run_population(seeds: list[int], motion: float, frames: int, lbfgs: int) -> list[dict[str, Any]]:
    """From the simulator's perturbed initial parameters (not the truth): two ``refine_population`` iterations
    refining shifts and poses, with and without ``--refine-tilt-movies``; FSC of the committed map vs truth."""
    from mrepo.workers.driver import refine_population
    from mrepo.workers.executors import LocalExecutor

    rows = []
    for movies in (False, True):
        sims = _series(seeds, frames, motion)
        sr = build_population(sims, truth=False, resolution=8.0)
        settings = RefineSettings(refine_shifts=True, refine_poses=True, tilt_movies=movies, lbfgs_iterations=lbfgs)
        start = time.perf_counter()
        refine_population(sr.repo, "main", 2, settings, LocalExecutor(use_cache=False))
        seconds = (time.perf_counter() - start) / (2 * len(sims))
        pop = sr.repo.population()
        curves = []
        for sp in sims[0].species:
            rec = sr.repo.species(pop.species[sp.spec.name])
            avg = (
                np.asarray(sr.repo.objects.get_array(rec.half1), np.float64)
                + np.asarray(sr.repo.objects.get_array(rec.half2), np.float64)
            ) / 2
            curves.append(fsc(torch.from_numpy(avg), torch.from_numpy(sp.map), torch.from_numpy(sp.mask)).numpy())
        items = sr.repo.source(pop.sources["sim"]).items
        residuals = [_residual_px(sim, sr.repo, items[key]) for sim, key in zip(sims, sr.item_keys)]
        box_a = sims[0].species[0].spec.box * sims[0].truth.optics.pixel_size
        rows.append(
            {
                "effect": f"{motion:g} px, initial",
                "row": "shifts+poses" + (" + tilt movies" if movies else ""),
                "residual_px": float(np.sqrt(np.mean(np.square(residuals)))),
                "fsc05_A": float(np.mean([_fsc05(c, box_a) for c in curves])),
                "mean_fsc": float(np.mean([c[1:].mean() for c in curves])),
                "fsc_change_in_noise_units": 0.0,
                "seconds_per_item": round(seconds, 1),
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one item per row")
    ap.add_argument("--motion", type=float, default=1.0, help="injected per-frame motion, RMS px")
    ap.add_argument("--frames", type=int, default=4, help="frames per tilt movie")
    ap.add_argument("--lbfgs", type=int, default=30, help="L-BFGS iterations")
    args = ap.parse_args()
    torch.set_num_threads(1)
    seeds = [3] if args.quick else [3, 4]
    off = RefineSettings(refine_shifts=False)
    on = RefineSettings(refine_shifts=False, tilt_movies=True, lbfgs_iterations=args.lbfgs)
    noise = 1 / np.sqrt(np.maximum(_shell_counts(32), 1))
    rows = []
    for injected in (True, False):
        items = _series(seeds, args.frames, args.motion if injected else 0.0)
        base, with_model = run_row(items, off), run_row(items, on)
        change = float((np.abs(np.array(with_model["curve"]) - np.array(base["curve"]))[1:] / noise[1:]).max())
        for label, row in (("tilt movies off", base), ("tilt movies on", with_model)):
            rows.append(
                {
                    "effect": f"{args.motion:g} px" if injected else "none",
                    "row": label,
                    **{k: v for k, v in row.items() if k != "curve"},
                    "fsc_change_in_noise_units": change if row is with_model else 0.0,
                }
            )
    rows.extend(run_population(seeds, args.motion, args.frames, 15))
    print(f"{'motion':16} {'row':27} {'residual px':>11} {'FSC0.5 Å':>9} {'mean FSC':>9} {'ΔFSC/σ':>7} {'s/item':>7}")
    for r in rows:
        print(
            f"{r['effect']:16} {r['row']:27} {r['residual_px']:11.3f} {r['fsc05_A']:9.2f} {r['mean_fsc']:9.4f} "
            f"{r['fsc_change_in_noise_units']:7.2f} {r['seconds_per_item']:7.1f}"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "bench_tilt_movies.json"
    out.write_text(json.dumps({"args": vars(args), "seeds": seeds, "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
