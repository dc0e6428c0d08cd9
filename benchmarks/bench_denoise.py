"""Noise2noise map denoising (M, Methods: Map denoising) against the true map, beside the classic filter.

Simulated half-maps: the true map of a pseudo-atomic species (``mrepo.sim``), damped by a
B-factor and, inside one half of the particle, by a larger one (a "flexible domain" whose
resolution is lower than the rest, as in M's Fig. 3), plus independent white noise per half.
Three maps are compared with the TRUE map:

- the raw half-map average;
- the average weighted per shell by sqrt(2 FSC / (1 + FSC)) of the half-map FSC (what mrepo's
  refinement references use without ``--denoise``: :func:`mrepo.workers.references.fsc_weighted`);
- the average of both halves, each denoised on its own by the network trained on the pair
  (:mod:`mrepo.kernels.denoise`; the reference path of ``refine --denoise``).

FSC against the truth is invariant to per-shell scaling, so the whitening does not help it; what
can help is local filtering (noise outside the particle and in the flexible domain removed).
A per-shell filter (the FSC weighting) cannot change an FSC, so its row equals the raw average's
and is there to show exactly that. Refinement masks its references, so the same three maps are
also compared after multiplying by the species' soft mask (the solvent-flattening share of the
gain is then removed from the comparison). Reported: mean FSC vs truth over 20–10 Å, 10–6 Å and
6 Å–Nyquist, the resolution where it falls to 0.5, the CPU time of training (threads fixed) and
of denoising both halves.

Run: ``nice .venv/bin/python benchmarks/bench_denoise.py`` (about 10 min on 2 loaded cores;
``--steps``/``--patch``/``--width``/``--box`` to change); writes
benchmarks/results/bench_denoise.json and prints a Markdown table for docs/ablation.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mrepo.kernels.denoise import DenoiserConfig, build_model, denoise_volume, prepare_halves, train  # noqa: E402
from mrepo.kernels.fsc import fsc, resolution_at, shell_indices  # noqa: E402
from mrepo.sim.species import SpeciesSpec, build_species  # noqa: E402
from mrepo.workers.references import fsc_weighted  # noqa: E402


def simulate(box: int, pixel: float, noise: float, seed: int) -> dict[str, np.ndarray]:
    """True map, mask and two noisy half-maps (float64, box³)."""
    sp = build_species(SpeciesSpec("bench", diameter=box * pixel * 0.65, n_atoms=1200, box=box), pixel, seed)
    truth = sp.map.astype(np.float64)
    truth /= truth.std()
    shells = shell_indices((box,) * 3).numpy()
    s2 = (shells / (box * pixel)) ** 2

    def damp(vol: np.ndarray, b: float) -> np.ndarray:
        return np.fft.irfftn(np.fft.rfftn(vol) * np.exp(-b * s2 / 4), s=vol.shape, axes=(0, 1, 2))

    x = np.arange(box) - box // 2
    flexible = (x[None, None, :] > 0).astype(np.float64) * np.ones((box, box, box))  # x > 0: the flexible half
    signal = (1 - flexible) * damp(truth, 20.0) + flexible * damp(truth, 300.0)
    rng = np.random.default_rng(seed)
    halves = [signal + noise * rng.standard_normal(truth.shape) for _ in range(2)]
    return {"truth": truth, "mask": sp.mask.astype(np.float64), "half1": halves[0], "half2": halves[1]}


def measure(name: str, vol: np.ndarray, truth: np.ndarray, mask: np.ndarray, pixel: float) -> dict:
    box = truth.shape[0]
    curve = fsc(torch.from_numpy(vol), torch.from_numpy(truth)).numpy()
    res = box * pixel / np.maximum(np.arange(len(curve)), 1e-9)

    def band(lo: float, hi: float) -> float:
        sel = (res <= lo) & (res > hi)
        return float(curve[sel].mean())

    return {"map": name, "fsc_20_10": band(20, 10), "fsc_10_6": band(10, 6), "fsc_6_nyq": band(6, 0),
            "res_fsc05_A": resolution_at(torch.from_numpy(curve), pixel, box, 0.5),
            "curve": [round(float(c), 4) for c in curve]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--box", type=int, default=48)
    ap.add_argument("--pixel", type=float, default=2.0)
    ap.add_argument("--noise", type=float, default=1.5)
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--patch", type=int, default=24)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lr", type=float, nargs=2, default=(3e-3, 3e-5))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bench_denoise.json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    d = simulate(a.box, a.pixel, a.noise, seed=7)
    truth, mask = d["truth"], d["mask"]
    h1, h2 = torch.from_numpy(d["half1"]), torch.from_numpy(d["half2"])
    avg = (d["half1"] + d["half2"]) / 2
    half_fsc = fsc(h1 * torch.from_numpy(mask), h2 * torch.from_numpy(mask)).double().numpy()
    half_res = resolution_at(torch.from_numpy(half_fsc), a.pixel, a.box)
    rows = [measure("raw half-map average", avg, truth, mask, a.pixel),
            measure("FSC-weighted average (refine default)",
                    (fsc_weighted(d["half1"], half_fsc) + fsc_weighted(d["half2"], half_fsc)) / 2.0,
                    truth, mask, a.pixel)]
    cfg = DenoiserConfig(depth=a.depth, width=a.width, max_width=64, patch=a.patch, batch=a.batch,
                         window=max(64, a.patch), overlap=24)
    prep = prepare_halves(h1.float(), h2.float(), torch.from_numpy(mask).float(), a.pixel, None)
    model = build_model(cfg, a.seed)
    t0 = time.process_time()
    losses = train(model, prep.half1, prep.half2, a.steps, a.seed, lr=tuple(a.lr))
    t_train = time.process_time() - t0
    t0 = time.process_time()
    d1, d2 = (denoise_volume(model, h).double().numpy() * prep.std + prep.mean for h in (prep.half1, prep.half2))
    t_apply = time.process_time() - t0
    rows.append(measure(f"denoised halves, averaged ({a.steps} steps)", (d1 + d2) / 2, truth, mask, a.pixel))
    # references are masked before use: the same maps times the species' soft mask (solvent flattened)
    rows += [measure(f"{r['map']} × mask", vol * mask, truth, mask, a.pixel) for r, vol in zip(rows, (
        avg, (fsc_weighted(d["half1"], half_fsc) + fsc_weighted(d["half2"], half_fsc)) / 2.0, (d1 + d2) / 2))]
    for r in rows:
        print(f"| {r['map']} | {r['fsc_20_10']:.3f} | {r['fsc_10_6']:.3f} | {r['fsc_6_nyq']:.3f} | "
              f"{r['res_fsc05_A']:.2f} |")
    result = {"settings": vars(a) | {"out": str(a.out)}, "half_map_resolution_A": half_res, "rows": rows,
              "train_cpu_s": t_train, "denoise_both_halves_cpu_s": t_apply, "threads": a.threads,
              "loss_first_10": float(np.mean(losses[:10])), "loss_last_10": float(np.mean(losses[-10:])),
              "config": cfg.to_json()}
    print(f"half-map FSC 0.143: {half_res:.2f} Å; training {a.steps} steps: {t_train:.1f} s CPU "
          f"({a.threads} thread), denoising both halves {t_apply:.2f} s; loss {result['loss_first_10']:.3f} -> "
          f"{result['loss_last_10']:.3f}")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
