"""Refinement with and without denoised references (``refine --denoise``), measured against the truth.

The set-up of :mod:`benchmarks.bench_musthold` (simulated detector data with Warp/RELION-like
initial errors, iteration 0 = mrepo's own first reconstruction), refined ``--iterations`` times
twice from the same start: once with FSC-weighted references (the default) and once with each
half-map denoised by the species' noise2noise network. The network is first trained on the
iteration-0 half-maps (``--steps``, a small network: ``--patch``/``--width``, depth 1) and then
retrained by the driver on every iteration's half-maps (``--steps`` again, same sizes).
Reported per iteration: half-map FSC 0.143, the half-map average's FSC = 0.5 against the true map
(masked), shift / position RMS (px), defocus RMS (Å), median angle (°), wall time.

Run: ``nice .venv/bin/python benchmarks/bench_denoise_refine.py`` (writes
benchmarks/results/bench_denoise_refine.json and prints Markdown rows).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_musthold import make_sims, measure  # noqa: E402
from mrepo.kernels.denoise import DenoiserConfig  # noqa: E402
from mrepo.workers.denoise import DenoiseSettings, train_species_denoiser, with_denoiser  # noqa: E402
from mrepo.workers.driver import refine_population  # noqa: E402
from mrepo.workers.executors import LocalExecutor  # noqa: E402
from mrepo.workers.settings import RefineSettings  # noqa: E402
from tests.workers.simdata import build_population  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=2)
    ap.add_argument("--particles", type=int, default=30)
    ap.add_argument("--snr", type=float, default=0.25)
    ap.add_argument("--iterations", type=int, default=2)
    ap.add_argument("--lbfgs", type=int, default=6)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--patch", type=int, default=16)
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1, help="first simulation seed")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bench_denoise_refine.json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    sims = make_sims("frames", a.items, a.particles, a.snr, a.seed)
    log: dict = {"command": " ".join(["python benchmarks/bench_denoise_refine.py", *sys.argv[1:]]), "arms": {}}
    for arm in ("fsc-weighted", "denoised"):
        sr = build_population(sims, truth=False, resolution=10.0)
        ex = LocalExecutor()
        refine_population(sr.repo, "main", 1, RefineSettings(refine_shifts=False, threads=a.threads), ex)
        rows = [{"iteration": 0, **measure(sr, sims)}]
        if arm == "denoised":
            repo, pop = sr.repo, sr.repo.population()
            name = sr.species[0]
            sp = repo.species(pop.species[name])
            cfg = DenoiserConfig(depth=1, width=a.width, max_width=4 * a.width, patch=a.patch, batch=4)
            t = time.perf_counter()
            res = train_species_denoiser(repo.objects, sp, DenoiseSettings(steps=a.steps, threads=a.threads,
                                                                             config=cfg, lr=(3e-3, 3e-5)))
            new = with_denoiser(repo.objects, sp, res)
            repo.commit(pop.__class__(pop.name, pop.sources, {**pop.species, name: new.save(repo.objects)},
                                      pop.metadata), message="denoiser", branch="main",
                        operation={"name": "denoise"})
            rows[0]["denoiser_train_s"] = round(time.perf_counter() - t, 1)
        settings = RefineSettings(refine_shifts=True, image_warp=(3, 3, 3), refine_poses=True, refine_defocus=True,
                                  refine_astigmatism=True, lbfgs_iterations=a.lbfgs, rounds=1, threads=a.threads,
                                  denoise=arm == "denoised", denoise_steps=a.steps)
        for it in range(1, a.iterations + 1):
            t = time.perf_counter()
            try:
                refine_population(sr.repo, "main", 1, settings, ex)
            except Exception as exc:  # a divergence stop is a result, too
                rows.append({"iteration": it, "stopped": str(exc)})
                break
            rows.append({"iteration": it, "seconds": round(time.perf_counter() - t, 1), **measure(sr, sims)})
            print(arm, rows[-1], flush=True)
        log["arms"][arm] = rows
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(log, indent=2) + "\n")
    for arm, rows in log["arms"].items():
        for r in rows:
            if "stopped" in r:
                print(f"| {arm} | {r['iteration']} | stopped: {r['stopped']} |")
                continue
            print(f"| {arm} | {r['iteration']} | {r['fsc_0143_A']:.2f} | {r['truth_fsc_05_A']:.2f} | "
                  f"{r['shift_rms_px']:.3f} | {r['position_rms_px']:.3f} | {r['defocus_rms_A']:.0f} | "
                  f"{r['angle_median_deg']:.2f} | {r.get('seconds', '-')} |")


if __name__ == "__main__":
    main()
