"""How precisely can poses be refined at all? The angle floor of the must-hold set-up (issue 11).

The data of ``bench_musthold.py --kind frames`` (dark contrast, 1.5 Å pixels, one species of
diameter 0.6 × box, initial errors like Warp/RELION output), but without image warp and
doming, so that the true parameters are exactly representable: the population gets the TRUE
maps as references and the TRUE shifts, positions and CTF; only the particle poses start
from the imported (perturbed, 1–3°) angles. One iteration refines translations and rotations
(no half-set guard needed: both half-maps are the true map; reference FSC weighting and the
map-following mask off) at a fixed refinement limit. The median angle error after it is
the floor a refinement from reconstructed references can approach but not beat: angle
precision ≈ position precision / particle radius, and both improve with signal.

``--kind tilts``: the data of ``bench_musthold.py --kind tilts`` (items of 60 particles,
11 tilts ±30°, dark contrast, 1.5 Å pixels) without the per-tilt image warp; TRUE maps, stage
angles, per-tilt shifts, CTF and particle positions (x, y and depth), only the poses start from
the imported angles; one iteration refines the particle translations (x, y, depth) and
rotations. Its floor is what a tilt-series refinement can reach per particle with every
per-tilt model exact.

Rows: box (px), SNR, refinement limit (Å), L-BFGS steps × rounds, median angle before and
after (°), particle position RMS after (px). Writes benchmarks/results/bench_pose_floor.json
(tilts: bench_pose_floor_tilts.json).

Run: ``nice .venv/bin/python benchmarks/bench_pose_floor.py`` (``--kind tilts``).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_musthold import PERTURBATION, PIXEL, make_sims  # noqa: E402
from mrepo.sim import FrameSeriesConfig, Optics, simulate_frame_series  # noqa: E402
from mrepo.workers.driver import refine_population  # noqa: E402
from mrepo.workers.executors import LocalExecutor  # noqa: E402
from mrepo.workers.settings import RefineSettings  # noqa: E402
from tests.workers.simdata import build_population, small_species  # noqa: E402
from tests.workers.truth import item_errors  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
#: (box px, SNR, refinement limit Å, L-BFGS steps, rounds)
CASES = (
    (48, 0.25, 3.0, 10, 2),
    (48, 0.25, 3.0, 40, 3),
    (48, 0.25, 3.75, 10, 2),
    (48, 1.0, 3.0, 10, 2),
    (64, 0.25, 3.0, 10, 2),
    (64, 0.25, 3.75, 10, 2),
)
#: tilt series: the must-hold box and SNR at the oracle's resolution and at the first iteration's 0.8x limit
TILT_CASES = (
    (64, 0.25, 3.0, 10, 2),
    (64, 0.25, 3.75, 10, 2),
)


def sims_for(box: int, snr: float, items: int, particles: int, kind: str = "frames") -> list:
    """The must-hold frame series (same sizes and perturbation) without warp and doming; tilts:
    the must-hold tilt series (``bench_musthold.make_sims``) without the per-tilt image warp."""
    if kind == "tilts":
        return make_sims("tilts", items, particles, snr, 1, box, warp_px=0.0)
    size = int((96 + 36 * particles**0.5) * box / 48)
    cfg = FrameSeriesConfig(
        image_size=(size, size),
        n_frames=6,
        optics=Optics(pixel_size=PIXEL),
        species=small_species(box, PIXEL)[:1],
        box=box,
        n_particles=particles,
        snr=snr,
        pad=3,
        defocus=10000.0,
        species_seed=7,
        perturbation=PERTURBATION,
        contrast="dark",
        warp_px=0.0,
        doming_A=0.0,
    )
    return [simulate_frame_series(cfg, s) for s in range(1, items + 1)]


def with_imported_angles(sim):
    """A shallow copy of ``sim`` whose true particles carry the imported (perturbed) angles."""
    out = copy.copy(sim)
    out.truth = copy.copy(sim.truth)
    out.truth.particles = copy.copy(sim.truth.particles)
    out.truth.particles.angles = sim.initial.particles.angles.copy()
    return out


def errors(sr, sims: list) -> dict[str, float]:
    repo = sr.repo
    pop = repo.population()
    items = repo.source(pop.sources["sim"]).items
    es = [item_errors(repo, s, items[k]) for k, s in zip(sr.item_keys, sims)]
    return {k: float(np.mean([e[k] for e in es])) for k in es[0]}


def case(box: int, snr: float, limit: float, lbfgs: int, rounds: int, items: int, particles: int,
         kind: str = "frames") -> dict[str, Any]:
    sims = sims_for(box, snr, items, particles, kind)
    # refinement limit of iteration 1 = resolution / resolution_fraction (0.8), at least Nyquist
    sr = build_population([with_imported_angles(s) for s in sims], truth=True, resolution=0.8 * limit)
    before = errors(sr, sims)
    settings = RefineSettings(
        refine_shifts=False,
        refine_poses=True,
        lbfgs_iterations=lbfgs,
        rounds=rounds,
        require_both_halves=False,
        fsc_weighted_references=False,
        mask_follows_map=False,
    )
    t = time.perf_counter()
    refine_population(sr.repo, "main", 1, settings, LocalExecutor())
    after = errors(sr, sims)
    return {
        "kind": kind,
        "box": box,
        "snr": snr,
        "limit_A": limit,
        "lbfgs": lbfgs,
        "rounds": rounds,
        "radius_px": round(0.3 * box, 1),
        "angle_before_deg": before["angle_median_deg"],
        "angle_after_deg": after["angle_median_deg"],
        "position_rms_px": after["position_rms_px"],
        "seconds": round(time.perf_counter() - t, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=2)
    ap.add_argument("--particles", type=int, default=None, help="particles per item (default: frames 50, tilts 60)")
    ap.add_argument("--kind", choices=["frames", "tilts"], default="frames")
    a = ap.parse_args()
    particles = a.particles or (60 if a.kind == "tilts" else 50)
    torch.set_num_threads(1)
    rows = []
    print(
        "| box | particle radius (px) | SNR | limit (Å) | L-BFGS | angle before (°) | angle after (°) | position RMS (px) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for c in TILT_CASES if a.kind == "tilts" else CASES:
        r = case(*c, a.items, particles, a.kind)
        rows.append(r)
        print(
            f"| {r['box']} | {r['radius_px']} | {r['snr']} | {r['limit_A']} | {r['lbfgs']} × {r['rounds']} | "
            f"{r['angle_before_deg']:.2f} | {r['angle_after_deg']:.2f} | {r['position_rms_px']:.3f} |",
            flush=True,
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    log = {"command": " ".join(["python benchmarks/bench_pose_floor.py", *sys.argv[1:]]), "rows": rows}
    name = "bench_pose_floor_tilts.json" if a.kind == "tilts" else "bench_pose_floor.json"
    (RESULTS / name).write_text(json.dumps(log, indent=1) + "\n")


if __name__ == "__main__":
    main()
