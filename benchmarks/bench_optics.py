"""M's optical models on simulated data (issue 15): magnification, beam tilt, trefoil, even Zernike 4,
Cs, phase shift, and magnification / beam tilt on tilt series.

Each ``--set`` simulates data with one effect injected (``mrepo.sim.optics``) and, as control, without it:

* ``mag-tilt`` (frames): magnification M = [[1.005, 0.002], [0.002, 0.995]] on frequencies (traceless
  anisotropy, ~1 %), beam tilt (0.5, -0.3) mrad, trefoil Z(-3,3) 20 rad; rows ``--refine-mag`` and/or
  ``--ctf-zernike3``;
* ``zernike4`` (frames): four-fold astigmatism Z(4,4) = 150 rad (RELION even Zernike 8); ``--ctf-zernike4``;
* ``cs`` (frames): data rendered with Cs 2.9 mm, the items told 2.5 mm (control: rendered and told 2.5 mm);
  ``--ctf-cs``;
* ``phase`` (frames): a 30° phase-plate phase shift the items are not told; ``--ctf-phase``;
* ``tilts`` (tilt series, ±30° in 10° steps): the ``mag-tilt`` optics; ``--refine-mag --ctf-zernike3``.

Every other parameter is at the truth (the "oracle" build of tests/workers/simdata.py: true positions,
CTF and poses, the true maps as references; refinement limit 3.5 Å). Rows refine one iteration per item
with only the optics groups on (``refine_shifts`` off), add the half-set sums of all items and
reconstruct. Columns: recovered optics (per set), FSC = 0.5 of the half-map average vs the true map (Å),
mean FSC vs truth between 8 Å and Nyquist, the largest FSC change against the set's row without
refinement on the same data in units of the FSC noise 1/√(voxels in the shell), seconds per item (the
refinement cost with and without the model). The "optics known" row back-projects with the true optics
written into the items (no refinement).

Run: ``nice .venv/bin/python benchmarks/bench_optics.py [--set NAME ...]`` (``--quick``: 1 item);
writes benchmarks/results/bench_optics.json (set ``mag-tilt``) and bench_optics_<set>.json (others)
and prints the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mrepo.graph import Item  # noqa: E402
from mrepo.kernels.fsc import fsc, resolution_at  # noqa: E402
from mrepo.sim import FrameSeriesConfig, Optics, TiltSeriesConfig, simulate_frame_series, simulate_tilt_series  # noqa: E402
from mrepo.sim.optics import SimAberrations  # noqa: E402
from mrepo.workers.api import ItemTask  # noqa: E402
from mrepo.workers.reconstruct import reconstruct_species  # noqa: E402
from mrepo.workers.refine_item import refine_item  # noqa: E402
from mrepo.workers.settings import RefineSettings  # noqa: E402
from tests.workers.simdata import build_population, small_species  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
PIXEL, BOX, LIMIT = 1.5, 48, 3.5
INJECTED = SimAberrations(mag_matrix=((1.005, 0.002), (0.002, 0.995)), beam_tilt_mrad=(0.5, -0.3), trefoil=(20.0, 0.0))
FOUR_FOLD = SimAberrations(four_fold=(0.0, 150.0))
PHASE = SimAberrations(phase_shift_deg=30.0)
CS_TRUE, CS_TOLD = 2.9, 2.5
BASE = RefineSettings(refine_shifts=False, resolution_fraction=1.0, lbfgs_iterations=15, rounds=2)


def frame_sims(seeds: list[int], n: int, size: int, snr: float, ab: SimAberrations, cs: float = 2.7) -> list:
    cfg = FrameSeriesConfig(
        image_size=(size, size),
        n_frames=2,
        optics=Optics(pixel_size=PIXEL, cs_mm=cs),
        species=small_species(BOX, PIXEL)[:1],
        box=BOX,
        n_particles=n,
        snr=snr,
        pad=3,
        defocus=10000.0,
        species_seed=7,
        contrast="light",
        aberrations=ab,
    )
    return [simulate_frame_series(cfg, s) for s in seeds]


def tilt_sims(seeds: list[int], n: int, size: int, snr: float, ab: SimAberrations) -> list:
    cfg = TiltSeriesConfig(
        image_size=(size, size),
        volume_depth_px=64,
        optics=Optics(pixel_size=PIXEL),
        species=small_species(BOX, PIXEL)[:1],
        box=BOX,
        n_particles=n,
        max_tilt=30.0,
        tilt_step=10.0,
        snr=snr,
        pad=3,
        slab_thickness=40.0,
        defocus=10000.0,
        species_seed=7,
        contrast="light",
        aberrations=ab,
    )
    return [simulate_tilt_series(cfg, s) for s in seeds]


def _shell_counts(box: int) -> np.ndarray:
    f = np.fft.fftfreq(box) * box
    r = np.sqrt(f[:, None, None] ** 2 + f[None, :, None] ** 2 + f[None, None, :] ** 2)
    return np.bincount(np.round(r).astype(int).ravel(), minlength=box // 2 + 1)[: box // 2 + 1]


#: edit(item, n_exposures) -> (imaging, models) written into every item before refinement
Edit = Callable[[Item], tuple[dict, dict]]


def run_row(items: list, settings: RefineSettings, edit: Edit | None) -> dict[str, Any]:
    sr = build_population(items, truth="oracle", resolution=LIMIT)
    repo, pop = sr.repo, sr.repo.population()
    hashes = repo.source(pop.sources["sim"]).items
    sums, seconds, found = None, 0.0, []
    for key in sr.item_keys:
        h = hashes[key]
        if edit is not None:
            item = Item.load(repo.objects, h)
            imaging, models = edit(item)
            models = {
                **item.models,
                **{k: repo.objects.put_array(np.asarray(v, np.float64)) for k, v in models.items()},
            }
            h = dataclasses.replace(item, imaging={**item.imaging, **imaging}, models=models).save(repo.objects)
        r = refine_item(ItemTask(repo.url, "sim", key, h, dict(pop.species), settings.to_json(), 1, 0))
        seconds += r.stats["seconds"]
        s = r.sums[sr.species[0]]
        sums = s if sums is None else sums.add(s)
        out = dict(r.stats.get("optics", {}))
        refined = Item.load(repo.objects, r.item_hash)
        if "phase_shift" in refined.models:
            out["phase_shift_deg"] = float(np.mean(repo.objects.get_array(refined.models["phase_shift"])))
        found.append(out)
    sp = items[0].species[0]
    rec = reconstruct_species(sums, BOX, PIXEL, sp.mask)
    avg = torch.from_numpy((rec.half1 + rec.half2) / 2)
    vs_truth = fsc(avg, torch.from_numpy(sp.map), torch.from_numpy(sp.mask)).double().numpy()
    shells = np.arange(len(vs_truth)) / (BOX * PIXEL)
    band = (shells >= 1 / 8.0) & (shells <= 1 / (2 * PIXEL))
    return {
        "seconds_per_item": round(seconds / len(items), 1),
        "fsc_0143_A": rec.resolution,
        "truth_fsc_05_A": resolution_at(torch.from_numpy(vs_truth), PIXEL, BOX, 0.5),
        "truth_fsc_8A_nyquist": float(vs_truth[band].mean()),
        "curve": vs_truth.tolist(),
        "optics": found,
    }


def mag_tilt_errors(found: list[dict], truth: SimAberrations) -> dict[str, Any]:
    if not found or not found[0]:
        return {}
    t = truth.to_json()
    mag = [
        100 * float(np.abs(np.asarray(f.get("mag_matrix", [[1, 0], [0, 1]])) - np.asarray(t["mag_matrix"])).max())
        for f in found
    ]
    tilt = [float(np.abs(np.asarray(f.get("beam_tilt", [0, 0])) - np.asarray(t["beam_tilt"])).max()) for f in found]
    tre = [np.asarray(f.get("odd_zernike", [0] * 6), float)[[2, 5]].round(2).tolist() for f in found]
    # the value the driver shares over the source's items (mrepo.workers.optics_share; equal particle counts)
    mean_mag = np.mean([f.get("mag_matrix", [[1, 0], [0, 1]]) for f in found], axis=0)
    mean_tilt = np.mean([f.get("beam_tilt", [0, 0]) for f in found], axis=0)
    return {
        "mag_err_pct_max": max(mag),
        "beam_tilt_err_mrad_max": max(tilt),
        "trefoil_rad": tre,
        "shared_mag_err_pct": 100 * float(np.abs(mean_mag - np.asarray(t["mag_matrix"])).max()),
        "shared_beam_tilt_err_mrad": float(np.abs(mean_tilt - np.asarray(t["beam_tilt"])).max()),
        "shared_mag_matrix": mean_mag.round(5).tolist(),
        "shared_beam_tilt": mean_tilt.round(4).tolist(),
    }


def zernike4_errors(found: list[dict], truth: SimAberrations) -> dict[str, Any]:
    if not found or "even_zernike" not in found[0]:
        return {}
    fitted = np.array([np.asarray(f["even_zernike"], float)[4:9] for f in found])  # Z(-4,4) .. Z(4,4), rad
    true = np.asarray(truth.to_json()["even_zernike"], float)[4:9]
    return {
        "even_zernike_4_8_rad_per_item": fitted.round(1).tolist(),
        "shared_even_zernike_4_8_rad": fitted.mean(0).round(1).tolist(),
        "shared_four_fold_err_rad": float(np.abs(fitted.mean(0) - true)[[0, 4]].max()),
        "four_fold_err_rad_max": float(np.abs(fitted - true)[:, [0, 4]].max()),
    }


def cs_errors(found: list[dict], true_cs: float) -> dict[str, Any]:
    if not found or "cs" not in found[0]:
        return {}
    cs = np.array([float(f["cs"]) for f in found])
    return {
        "cs_mm_per_item": cs.round(3).tolist(),
        "shared_cs_err_mm": float(abs(cs.mean() - true_cs)),
        "cs_err_mm_max": float(np.abs(cs - true_cs).max()),
    }


def phase_errors(found: list[dict], true_deg: float) -> dict[str, Any]:
    if not found or "phase_shift_deg" not in found[0]:
        return {}
    p = np.array([f["phase_shift_deg"] for f in found])
    return {
        "phase_deg_per_item": p.round(2).tolist(),
        "shared_phase_err_deg": float(abs(p.mean() - true_deg)),
        "phase_err_deg_max": float(np.abs(p - true_deg).max()),
    }


def _imaging_edit(truth: SimAberrations, keys: tuple[str, ...]) -> Edit:
    t = truth.to_json()
    return lambda item: ({k: t[k] for k in keys}, {})


def scenario(
    name: str, seeds: list[int], a: argparse.Namespace, base: RefineSettings
) -> tuple[list, list, list, Callable]:
    """(with effect, without, rows [(data, label, settings, edit)], errors(found, data))."""
    n, size, snr = a.particles, a.size, a.snr
    told: Edit | None = None
    if name in ("mag-tilt", "tilts"):
        sim = tilt_sims if name == "tilts" else frame_sims
        inj, none = sim(seeds, n, size, snr, INJECTED), sim(seeds, n, size, snr, SimAberrations())
        on = base.replace(refine_mag=True, ctf_zernike3=True)
        known = _imaging_edit(INJECTED, ("mag_matrix", "beam_tilt", "odd_zernike"))
        extra = (
            []
            if name == "tilts"
            else [
                ("injected", "--refine-mag", base.replace(refine_mag=True), None),
                ("injected", "--ctf-zernike3", base.replace(ctf_zernike3=True), None),
            ]
        )
        label = "--refine-mag --ctf-zernike3"

        def errs(found: list[dict], data: str) -> dict:
            return mag_tilt_errors(found, INJECTED if data == "injected" else SimAberrations())
    elif name == "zernike4":
        inj, none = frame_sims(seeds, n, size, snr, FOUR_FOLD), frame_sims(seeds, n, size, snr, SimAberrations())
        on, label, extra = base.replace(ctf_zernike4=True), "--ctf-zernike4", []
        known = _imaging_edit(FOUR_FOLD, ("even_zernike",))

        def errs(found: list[dict], data: str) -> dict:
            return zernike4_errors(found, FOUR_FOLD if data == "injected" else SimAberrations())
    elif name == "cs":
        inj = frame_sims(seeds, n, size, snr, SimAberrations(), cs=CS_TRUE)
        none = frame_sims(seeds, n, size, snr, SimAberrations(), cs=CS_TOLD)
        on, label, extra = base.replace(ctf_cs=True), "--ctf-cs", []
        told = lambda item: ({"cs": CS_TOLD}, {})  # noqa: E731
        known = lambda item: ({"cs": CS_TRUE}, {})  # noqa: E731

        def errs(found: list[dict], data: str) -> dict:
            return cs_errors(found, CS_TRUE if data == "injected" else CS_TOLD)
    elif name == "phase":
        inj, none = frame_sims(seeds, n, size, snr, PHASE), frame_sims(seeds, n, size, snr, SimAberrations())
        on, label, extra = base.replace(ctf_phase=True), "--ctf-phase", []
        known = lambda item: ({}, {"phase_shift": np.full(int(item.imaging["dimensions"][2]), PHASE.phase_shift_deg)})  # noqa: E731

        def errs(found: list[dict], data: str) -> dict:
            return phase_errors(found, PHASE.phase_shift_deg if data == "injected" else 0.0)
    else:
        raise ValueError(f"unknown set {name!r}")
    rows = [
        ("injected", "no optics refinement", base, told),
        *[(d, lab, s, told) for d, lab, s, _ in extra],
        ("injected", label, on, told),
        ("injected", "optics known (oracle)", base, known),
        ("none", "no optics refinement", base, told),
        ("none", label, on, told),
    ]
    return inj, none, rows, errs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--set",
        dest="sets",
        action="append",
        choices=["mag-tilt", "zernike4", "cs", "phase", "tilts"],
        help="which effect(s) to run (default: all)",
    )
    ap.add_argument("--items", type=int, default=3)
    ap.add_argument("--particles", type=int, default=16)
    ap.add_argument("--size", type=int, default=192)
    ap.add_argument("--snr", type=float, default=1.0)
    ap.add_argument("--lbfgs", type=int, default=15, help="L-BFGS steps per round (2 rounds)")
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    seeds = [11 + i for i in range(1 if a.quick else a.items)]
    noise = 1 / np.sqrt(np.maximum(_shell_counts(BOX), 1))
    for name in a.sets or ["mag-tilt", "zernike4", "cs", "phase", "tilts"]:
        inj, none, rows, errs = scenario(name, seeds, a, BASE.replace(lbfgs_iterations=a.lbfgs))
        log: dict[str, Any] = {
            "set": name,
            "args": vars(a),
            "limit_A": LIMIT,
            "rows": [],
            "command": " ".join(["python benchmarks/bench_optics.py", *sys.argv[1:]]),
        }
        log["injected"] = {"mag-tilt": INJECTED, "tilts": INJECTED, "zernike4": FOUR_FOLD, "phase": PHASE}.get(
            name, SimAberrations()
        ).to_json()
        if name == "cs":
            log["injected"] = {"cs_true_mm": CS_TRUE, "cs_told_mm": CS_TOLD}
        t0, baseline = time.time(), {}
        for data, label, settings, edit in rows:
            out = run_row(inj if data == "injected" else none, settings, edit)
            out.update(errs(out["optics"], data), data=data, row=label)
            curve = np.asarray(out.pop("curve"))
            if label == "no optics refinement":
                baseline[data] = curve
            out["fsc_change_in_noise_units"] = float((np.abs(curve - baseline[data])[1:] / noise[1:]).max())
            log["rows"].append(out)
            print(name, json.dumps({k: v for k, v in out.items() if k != "optics"}), flush=True)
        log["seconds"] = round(time.time() - t0, 1)
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / ("bench_optics.json" if name == "mag-tilt" else f"bench_optics_{name}.json")
        path.write_text(json.dumps(log, indent=1) + "\n")
        print_table(log)


def print_table(log: dict) -> None:
    nan = float("nan")
    name = log["set"]
    if name in ("mag-tilt", "tilts"):
        head = (
            "mag err % (shared / worst item) | beam tilt err mrad (shared / worst item) | trefoil (Z-3,3; Z3,3) "
            "rad per item"
        )

        def cells(r: dict) -> str:
            return (
                f"{r.get('shared_mag_err_pct', nan):.3f} / {r.get('mag_err_pct_max', nan):.3f} | "
                f"{r.get('shared_beam_tilt_err_mrad', nan):.3f} / {r.get('beam_tilt_err_mrad_max', nan):.3f} | "
                f"{r.get('trefoil_rad', '-')}"
            )
    elif name == "zernike4":
        head = "even Zernike 4..8 rad (shared) | four-fold err rad (shared / worst item)"

        def cells(r: dict) -> str:
            return (
                f"{r.get('shared_even_zernike_4_8_rad', '-')} | {r.get('shared_four_fold_err_rad', nan):.1f} / "
                f"{r.get('four_fold_err_rad_max', nan):.1f}"
            )
    elif name == "cs":
        head = "Cs mm per item | Cs err mm (shared / worst item)"

        def cells(r: dict) -> str:
            return (
                f"{r.get('cs_mm_per_item', '-')} | {r.get('shared_cs_err_mm', nan):.3f} / "
                f"{r.get('cs_err_mm_max', nan):.3f}"
            )
    else:
        head = "phase shift ° per item | phase err ° (shared / worst item)"

        def cells(r: dict) -> str:
            return (
                f"{r.get('phase_deg_per_item', '-')} | {r.get('shared_phase_err_deg', nan):.2f} / "
                f"{r.get('phase_err_deg_max', nan):.2f}"
            )

    print(f"| data | row | {head} | FSC=0.5 vs truth Å | FSC vs truth 8 Å–Nyq | ΔFSC/σ | FSC 0.143 Å | s/item |")
    print("|---|---|" + "---|" * (head.count("|") + 1) + "---|---|---|---|---|")
    for r in log["rows"]:
        print(
            f"| {r['data']} | {r['row']} | {cells(r)} | {r['truth_fsc_05_A']:.2f} | {r['truth_fsc_8A_nyquist']:.3f} | "
            f"{r['fsc_change_in_noise_units']:.2f} | {r['fsc_0143_A']:.2f} | {r['seconds_per_item']} |"
        )


if __name__ == "__main__":
    main()
