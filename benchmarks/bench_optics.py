"""M's optical models on simulated data (issue 15): anisotropic magnification, beam tilt, trefoil.

Frame series are simulated with the effect injected (``mrepo.sim.optics``: magnification
M = [[1.005, 0.002], [0.002, 0.995]] on frequencies (traceless anisotropy, ~1 %), beam tilt (0.5, -0.3) mrad, trefoil Z(-3,3) 20 rad)
and, as control, without it. Every other parameter is at the truth (the "oracle" build of
tests/workers/simdata.py: per-frame true positions incl. warp and doming, true CTF and poses,
the true maps as references; refinement limit 3.5 Å). Rows refine one iteration per item with
only the optics groups on (``refine_shifts`` off), add the half-set sums of all items and
reconstruct. Columns: recovered magnification (max |M - M_true| in %), beam tilt error (mrad),
trefoil (rad), FSC = 0.5 of the half-map average vs the true map (Å), mean FSC vs truth between
8 Å and Nyquist, seconds per item. The "optics known" row back-projects with the true optics
written into the items' imaging (no refinement).

Run: ``nice .venv/bin/python benchmarks/bench_optics.py`` (``--quick``: 1 item);
writes benchmarks/results/bench_optics.json and prints the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mrepo.graph import Item  # noqa: E402
from mrepo.kernels.fsc import fsc, resolution_at  # noqa: E402
from mrepo.sim import FrameSeriesConfig, Optics, simulate_frame_series  # noqa: E402
from mrepo.sim.optics import SimAberrations  # noqa: E402
from mrepo.workers.api import ItemTask  # noqa: E402
from mrepo.workers.reconstruct import reconstruct_species  # noqa: E402
from mrepo.workers.refine_item import refine_item  # noqa: E402
from mrepo.workers.settings import RefineSettings  # noqa: E402
from tests.workers.simdata import build_population, small_species  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
PIXEL, BOX, LIMIT = 1.5, 48, 3.5
INJECTED = SimAberrations(mag_matrix=((1.005, 0.002), (0.002, 0.995)), beam_tilt_mrad=(0.5, -0.3), trefoil=(20.0, 0.0))
BASE = RefineSettings(refine_shifts=False, resolution_fraction=1.0, lbfgs_iterations=15, rounds=2)


def sims(seeds: list[int], n: int, size: int, snr: float, ab: SimAberrations) -> list:
    cfg = FrameSeriesConfig(image_size=(size, size), n_frames=2, optics=Optics(pixel_size=PIXEL),
                            species=small_species(BOX, PIXEL)[:1], box=BOX, n_particles=n, snr=snr, pad=3,
                            defocus=10000.0, species_seed=7, contrast="light", aberrations=ab)
    return [simulate_frame_series(cfg, s) for s in seeds]


def run_row(items: list, settings: RefineSettings, known: SimAberrations | None) -> dict[str, Any]:
    sr = build_population(items, truth="oracle", resolution=LIMIT)
    repo, pop = sr.repo, sr.repo.population()
    hashes = repo.source(pop.sources["sim"]).items
    sums, seconds, found = None, 0.0, []
    for key in sr.item_keys:
        h = hashes[key]
        if known is not None:  # the true optics in the item's imaging (RELION keys)
            item = Item.load(repo.objects, h)
            truth = known.to_json()
            imaging = {**item.imaging, **{k: truth[k] for k in ("mag_matrix", "beam_tilt", "odd_zernike")}}
            h = dataclasses.replace(item, imaging=imaging).save(repo.objects)
        r = refine_item(ItemTask(repo.url, "sim", key, h, dict(pop.species), settings.to_json(), 1, 0))
        seconds += r.stats["seconds"]
        s = r.sums[sr.species[0]]
        sums = s if sums is None else sums.add(s)
        found.append(r.stats.get("optics", {}))
    sp = items[0].species[0]
    rec = reconstruct_species(sums, BOX, PIXEL, sp.mask)
    avg = torch.from_numpy((rec.half1 + rec.half2) / 2)
    vs_truth = fsc(avg, torch.from_numpy(sp.map), torch.from_numpy(sp.mask)).double().numpy()
    shells = np.arange(len(vs_truth)) / (BOX * PIXEL)
    band = (shells >= 1 / 8.0) & (shells <= 1 / (2 * PIXEL))
    return {"seconds_per_item": round(seconds / len(items), 1), "fsc_0143_A": rec.resolution,
            "truth_fsc_05_A": resolution_at(torch.from_numpy(vs_truth), PIXEL, BOX, 0.5),
            "truth_fsc_8A_nyquist": float(vs_truth[band].mean()), "optics": found}


def errors(found: list[dict], truth: SimAberrations) -> dict[str, float]:
    if not found or not found[0]:
        return {}
    t = truth.to_json()
    mag = [100 * float(np.abs(np.asarray(f.get("mag_matrix", [[1, 0], [0, 1]])) - np.asarray(t["mag_matrix"])).max())
           for f in found]
    tilt = [float(np.abs(np.asarray(f.get("beam_tilt", [0, 0])) - np.asarray(t["beam_tilt"])).max()) for f in found]
    tre = [np.asarray(f.get("odd_zernike", [0] * 6), float)[[2, 5]].round(2).tolist() for f in found]
    # the value the driver shares over the source's items (mrepo.workers.optics_share; equal particle counts)
    mean_mag = np.mean([f.get("mag_matrix", [[1, 0], [0, 1]]) for f in found], axis=0)
    mean_tilt = np.mean([f.get("beam_tilt", [0, 0]) for f in found], axis=0)
    return {"mag_err_pct_max": max(mag), "beam_tilt_err_mrad_max": max(tilt), "trefoil_rad": tre,
            "shared_mag_err_pct": 100 * float(np.abs(mean_mag - np.asarray(t["mag_matrix"])).max()),
            "shared_beam_tilt_err_mrad": float(np.abs(mean_tilt - np.asarray(t["beam_tilt"])).max()),
            "shared_mag_matrix": mean_mag.round(5).tolist(), "shared_beam_tilt": mean_tilt.round(4).tolist()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=3)
    ap.add_argument("--particles", type=int, default=16)
    ap.add_argument("--size", type=int, default=192)
    ap.add_argument("--snr", type=float, default=1.0)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    n_items = 1 if a.quick else a.items
    seeds = [11 + i for i in range(n_items)]
    with_effect = sims(seeds, a.particles, a.size, a.snr, INJECTED)
    without = sims(seeds, a.particles, a.size, a.snr, SimAberrations())
    both = BASE.replace(refine_mag=True, ctf_zernike3=True)
    rows = [("injected", "no optics refinement", with_effect, BASE, None),
            ("injected", "--refine-mag", with_effect, BASE.replace(refine_mag=True), None),
            ("injected", "--ctf-zernike3", with_effect, BASE.replace(ctf_zernike3=True), None),
            ("injected", "--refine-mag --ctf-zernike3", with_effect, both, None),
            ("injected", "optics known (oracle)", with_effect, BASE, INJECTED),
            ("none", "no optics refinement", without, BASE, None),
            ("none", "--refine-mag --ctf-zernike3", without, both, None)]
    log: dict[str, Any] = {"args": vars(a), "injected": INJECTED.to_json(), "limit_A": LIMIT, "rows": []}
    t0 = time.time()
    for data, label, items, settings, known in rows:
        out = run_row(items, settings, known)
        out.update(errors(out["optics"], INJECTED if data == "injected" else SimAberrations()))
        out.update(data=data, row=label)
        log["rows"].append(out)
        print(json.dumps({k: v for k, v in out.items() if k != "optics"}), flush=True)
    log["seconds"] = round(time.time() - t0, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench_optics.json").write_text(json.dumps(log, indent=1) + "\n")
    print("| data | row | mag err % (shared / worst item) | beam tilt err mrad (shared / worst item) |"
          " trefoil (Z-3,3; Z3,3) rad per item | FSC=0.5 vs truth Å | FSC vs truth 8 Å–Nyq | FSC 0.143 Å | s/item |")
    print("|---|---|---|---|---|---|---|---|---|")
    nan = float("nan")
    for r in log["rows"]:
        print(f"| {r['data']} | {r['row']} | {r.get('shared_mag_err_pct', nan):.3f} / {r.get('mag_err_pct_max', nan):.3f}"
              f" | {r.get('shared_beam_tilt_err_mrad', nan):.3f} / {r.get('beam_tilt_err_mrad_max', nan):.3f} | "
              f"{r.get('trefoil_rad', '-')} | "
              f"{r['truth_fsc_05_A']:.2f} | {r['truth_fsc_8A_nyquist']:.3f} | {r['fsc_0143_A']:.2f} | "
              f"{r['seconds_per_item']} |")


if __name__ == "__main__":
    main()
