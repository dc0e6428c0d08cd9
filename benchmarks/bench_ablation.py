"""Ablation of M's parameter groups (paper Fig. 4) and the multi-species benefit (Extended Data
Fig. 2) on simulated frame and tilt series.

Each ablation row refines every item once, starting from the simulator's *initial*
parameters, with the parameter groups of that row and all rows above it switched on;
the items' half-set sums are added and reconstructed, and the row reports the half-map
FSC = 0.143 resolution (Å), the FSC = 0.5 resolution against the true map, and the mean
parameter errors against the truth (tests/workers/truth.py). The oracle row back-projects
with the ground-truth parameters (no refinement). References are the true maps (no
reference noise), refinement limit ``--refine-res`` Å.

Run: ``.venv/bin/python benchmarks/bench_ablation.py [--quick] [--only frames|tilts|multi]``;
writes benchmarks/results/bench_ablation.json and the tables into docs/ablation.md
(between the ``<!-- bench_ablation -->`` markers).
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
from mrepo.sim import (  # noqa: E402
    FrameSeriesConfig,
    Optics,
    Perturbation,
    TiltSeriesConfig,
    simulate_frame_series,
    simulate_tilt_series,
)
from mrepo.sim.optics import SimAberrations  # noqa: E402
from mrepo.workers.api import HalfSums, ItemTask  # noqa: E402
from mrepo.workers.deformation import volume_warp_displacement  # noqa: E402
from mrepo.workers.reconstruct import reconstruct_species  # noqa: E402
from mrepo.workers.refine_item import refine_item  # noqa: E402
from mrepo.workers.settings import RefineSettings  # noqa: E402
from tests.workers.simdata import SimRepo, build_population, small_species  # noqa: E402
from tests.workers.truth import item_errors  # noqa: E402

FSC_SHELLS_A = (10.0, 8.0, 6.0, 5.0, 4.0, 3.5)  # resolutions (Å) at which the multi table reports FSC values
RESULTS = ROOT / "benchmarks" / "results" / "bench_ablation.json"
DOC = ROOT / "docs" / "ablation.md"
PIXEL, BOX = 1.5, 48


def frames_sims(seeds: list[int], n: int, size: int, fractions: tuple[float, ...] = (), snr: float = 1.0,
                species: int = 1, n_frames: int = 6, **overrides: Any) -> list:
    """Frame series with the ablation's fixed optics; ``overrides`` are further FrameSeriesConfig fields
    (e.g. warp_px, drift_px, perturbation) and default to the simulator's values."""
    cfg = FrameSeriesConfig(image_size=(size, size), n_frames=n_frames, optics=Optics(pixel_size=PIXEL),
                            species=small_species(BOX, PIXEL)[:species], box=BOX, n_particles=n, snr=snr, pad=3,
                            defocus=10000.0, species_seed=7, species_fractions=fractions, **overrides)
    return [simulate_frame_series(cfg, s) for s in seeds]


def tilts_sims(seeds: list[int], n: int, size: int, snr: float = 1.0, **overrides: Any) -> list:
    cfg = TiltSeriesConfig(image_size=(size, size), volume_depth_px=96, optics=Optics(pixel_size=PIXEL),
                           species=small_species(BOX, PIXEL)[:1], box=BOX, n_particles=n, max_tilt=30.0,
                           tilt_step=6.0, snr=snr, pad=3, slab_thickness=60.0, defocus=10000.0, species_seed=7,
                           **overrides)
    return [simulate_tilt_series(cfg, s) for s in seeds]


def run_row(sims: list, settings: RefineSettings, *, truth: bool | str, resolution: float,
            species: list[int] | None = None, focus: str | None = None,
            edit: Callable[[Any, Any, str], str] | None = None) -> dict[str, Any]:
    """Refine every item once with ``settings``; reconstruct each species from the summed half-sets.
    Parameter errors cover the particles of species ``focus`` only, or all if None. ``edit(repo, sim,
    item_hash) -> item_hash`` changes each stored item before refinement (the full oracle's truth)."""
    sr: SimRepo = build_population(sims, truth=truth, resolution=resolution, species=species)
    repo = sr.repo
    pop = repo.population()
    source = repo.source(pop.sources["sim"])
    items = source.items
    sums: dict[str, HalfSums] = {}
    errors, seconds = [], 0.0
    for key, sim in zip(sr.item_keys, sims):
        item_hash = items[key] if edit is None else edit(repo, sim, items[key])
        task = ItemTask(repo.url, "sim", key, item_hash, dict(pop.species), settings.to_json(), 1, 0,
                        polarity=source.polarity)  # dark detector data are inverted on reading
        r = refine_item(task)
        seconds += r.stats["seconds"]
        for name, s in (r.sums or {}).items():
            sums[name] = sums[name].add(s) if name in sums else s
        parts = r.particles if focus is None else {focus: r.particles[focus]}
        errors.append(item_errors(repo, sim, r.item_hash, parts))
    out: dict[str, Any] = {"seconds": round(seconds, 1),
                           **{k: float(np.nanmean([e[k] for e in errors])) for k in errors[0]}, "species": {}}
    first = sims[0]
    for name in sr.species:
        sp = next(s for s in first.species if s.spec.name == name)
        rec = reconstruct_species(sums[name], BOX, PIXEL, sp.mask)
        avg = torch.from_numpy((rec.half1 + rec.half2) / 2)
        vs_truth = fsc(avg, torch.from_numpy(sp.map), torch.from_numpy(sp.mask)).double()
        shells = np.arange(len(vs_truth)) / (BOX * PIXEL)
        band = (shells >= 1 / 8.0) & (shells <= 1 / (2 * PIXEL))
        half = np.asarray(rec.fsc, dtype=np.float64)
        out["species"][name] = {"particles": sums[name].particles, "fsc_0143_A": rec.resolution,
                                "truth_fsc_05_A": resolution_at(vs_truth, PIXEL, BOX, 0.5),
                                "truth_fsc_8A_nyquist": float(vs_truth.numpy()[band].mean()),
                                "half_fsc_curve": [round(float(v), 4) for v in half],
                                "truth_fsc_curve": [round(float(v), 4) for v in vs_truth.numpy()],
                                "half_fsc_at": {f"{r:g}": round(float(np.interp(1 / r, shells, half)), 3)
                                                for r in FSC_SHELLS_A},
                                "truth_fsc_at": {f"{r:g}": round(float(np.interp(1 / r, shells, vs_truth.numpy())), 3)
                                                 for r in FSC_SHELLS_A}}
    return out


def ablation_rows(kind: str, warp: tuple[int, int, int], base: RefineSettings) -> list[tuple[str, RefineSettings | None]]:
    off = base.replace(refine_shifts=False)
    steps = [("initial parameters", off),
             ("+ global shifts", base),
             ("+ image warp", base.replace(image_warp=list(warp))),
             ("+ particle poses", base.replace(image_warp=list(warp), refine_poses=True))]
    last = steps[-1][1]
    if kind == "tilts":
        last = last.replace(refine_stage_angles=True)
        steps.append(("+ stage angles", last))
    last = last.replace(refine_defocus=True, refine_astigmatism=True)
    steps.append(("+ defocus, astigmatism", last))
    steps.append(("+ data-driven weights", last.replace(weights=True)))
    steps.append(("oracle (true parameters)", None))
    return steps


def ablation(kind: str, sims: list, base: RefineSettings, warp: tuple[int, int, int], resolution: float,
             log: dict) -> list[dict]:
    rows = []
    for label, settings in ablation_rows(kind, warp, base):
        t = time.perf_counter()
        row = run_row(sims, settings or base.replace(refine_shifts=False), truth="oracle" if settings is None else False,
                      resolution=resolution)
        row["label"] = label
        rows.append(row)
        sp = next(iter(row["species"].values()))
        print(f"{kind:6s} {label:28s} FSC0.143 {sp['fsc_0143_A']:6.2f} Å  vs truth {sp['truth_fsc_05_A']:6.2f} Å  "
              f"shift {row['shift_rms_px']:.3f} px  defocus {row['defocus_rms_A']:6.1f} Å  "
              f"angle {row['angle_median_deg']:.2f}°  ({time.perf_counter() - t:.0f} s)", flush=True)
        log[kind] = rows
        save(log)
    return rows


#: issue 15's combined run: every effect the simulator injects at once
FULL_OPTICS = SimAberrations(mag_matrix=((1.005, 0.002), (0.002, 0.995)), beam_tilt_mrad=(0.5, -0.3),
                             trefoil=(20.0, 0.0))
FULL_VOLUME_GRID = (5, 5, 2, 2)  # the oracle's fit of the injected volume deformation (linear in time)


def oracle_volume_warp(sim: Any, grid: tuple[int, int, int, int] = FULL_VOLUME_GRID) -> np.ndarray:
    """Nodes (3, gx, gy, gz, gt) Å of :func:`volume_warp_displacement` fitted by least squares to the
    injected deformation at the particles and on a 9³ lattice through the volume, at every tilt's time."""
    t = sim.truth
    time = torch.from_numpy(t.pre_exposure / t.pre_exposure.max())
    lattice = np.stack(np.meshgrid(*[np.linspace(0.0, 1.0, 9)] * 3, indexing="ij"), -1).reshape(-1, 3)
    pos = np.concatenate([t.particles.coordinates[:, 0], lattice * t.volume_size_A])
    true = torch.from_numpy(t.volume_deformation(pos, time.numpy()).transpose(1, 0, 2))  # (P, n, 3)
    where = torch.from_numpy(np.repeat(pos[:, None], len(time), 1))
    nodes = torch.zeros((3, *grid), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([nodes], lr=1.0, max_iter=200, line_search_fn="strong_wolfe", tolerance_grad=1e-12,
                            tolerance_change=1e-14)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        fit = volume_warp_displacement(nodes, where, torch.from_numpy(t.volume_size_A), time)
        loss = ((fit - true) ** 2).mean()
        loss.backward()
        return loss

    opt.step(closure)
    return nodes.detach().numpy()


def full_oracle_edit(repo: Any, sim: Any, item_hash: str) -> str:
    """The item with the simulator's injected optics (RELION keys), the injected damage as its ``weights`` model
    (B Å², scale incl. the tilts' cos) and, for tilt series, the fitted true volume warp."""
    item = Item.load(repo.objects, item_hash)
    t = sim.truth
    truth = t.aberrations.to_json()  # what the simulator injected (none: identity / zeros)
    imaging = {**item.imaging, **{k: truth[k] for k in ("mag_matrix", "beam_tilt", "odd_zernike")}}
    models = dict(item.models)
    if t.damage is not None:
        scale = t.damage.scales * (np.cos(np.deg2rad(t.ytilt)) if sim.kind == "tilts" else 1.0)
        models["weights"] = repo.objects.put_array(np.stack([t.damage.bfactors_A2, scale], 1).astype(np.float64))
    if sim.kind == "tilts" and t.volume_deformation is not None:
        models["volume_warp"] = repo.objects.put_array(np.ascontiguousarray(oracle_volume_warp(sim)))
    return dataclasses.replace(item, imaging=imaging, models=models).save(repo.objects)


def full_rows(kind: str, base: RefineSettings, warp: tuple[int, int, int],
              weights: bool = True) -> list[tuple[str, RefineSettings, bool]]:
    """(label, settings, oracle) of the combined run: initial parameters, issue 5's groups, all of M's
    models (issue 15's optics, doming / volume warp, data-driven weights), the oracle."""
    m5 = base.replace(image_warp=list(warp), refine_poses=True, refine_defocus=True, refine_astigmatism=True,
                      refine_stage_angles=kind == "tilts", weights=weights, weights_scope="item")
    deform = {"doming": (3, 3, 3)} if kind == "frames" else {"volume_warp": (3, 3, 2, 2)}
    every = m5.replace(refine_mag=True, ctf_zernike3=True, **deform)
    return [("initial parameters", base.replace(refine_shifts=False), False),
            ("issue 5's groups (shifts, warp, poses, CTF" + (", weights)" if weights else ")"), m5, False),
            ("+ magnification, beam tilt/trefoil, " + ("doming" if kind == "frames" else "volume warp"), every, False),
            ("oracle (true parameters, optics, deformation, weights)", base.replace(refine_shifts=False, weights=True),
             True)]


def full_ablation(kind: str, sims: list, base: RefineSettings, warp: tuple[int, int, int], resolution: float,
                  log: dict, weights: bool = True) -> list[dict]:
    rows = []
    for label, settings, oracle in full_rows(kind, base, warp, weights):
        t = time.perf_counter()
        row = run_row(sims, settings, truth="oracle" if oracle else False, resolution=resolution,
                      edit=full_oracle_edit if oracle else None)
        row["label"] = label
        rows.append(row)
        sp = next(iter(row["species"].values()))
        print(f"full-{kind} {label[:40]:40s} FSC0.143 {sp['fsc_0143_A']:6.2f} Å  vs truth {sp['truth_fsc_05_A']:6.2f} Å  "
              f"shift {row['shift_rms_px']:.3f} px  defocus {row['defocus_rms_A']:6.1f} Å  "
              f"angle {row['angle_median_deg']:.2f}°  ({time.perf_counter() - t:.0f} s)", flush=True)
        log[f"full_{kind}"] = rows
        save(log)
    if rows:
        sp_final, sp_oracle = (next(iter(r["species"].values())) for r in (rows[-2], rows[-1]))
        log[f"full_{kind}_vs_oracle_pct"] = {
            k: round(100 * (sp_final[k] / sp_oracle[k] - 1), 1) for k in ("fsc_0143_A", "truth_fsc_05_A")}
        save(log)
        print(table(rows))
        print(f"final vs oracle (%): {log[f'full_{kind}_vs_oracle_pct']}", flush=True)
    return rows


def multi_species(sims: list, settings: RefineSettings, resolution: float, log: dict) -> dict:
    out = {}
    for label, keep in (("5 % species alone", [0]), ("5 % + 95 % species", [0, 1])):
        row = run_row(sims, settings, truth=False, resolution=resolution, species=keep, focus="alpha")
        row["label"] = label
        out[label] = row
        sp = row["species"]["alpha"]
        print(f"multi  {label:22s} alpha: {sp['particles']} particles  FSC0.143 {sp['fsc_0143_A']:6.2f} Å  "
              f"vs truth {sp['truth_fsc_05_A']:6.2f} Å  mean FSC vs truth 8 Å-Nyquist "
              f"{sp['truth_fsc_8A_nyquist']:.3f}  alpha shift {row['shift_rms_px']:.3f} px  position "
              f"{row['position_rms_px']:.3f} px  angle {row['angle_median_deg']:.2f}°", flush=True)
        print(f"       half-map FSC at {sp['half_fsc_at']}  vs truth {sp['truth_fsc_at']}", flush=True)
        log["multi"] = out
        save(log)
    return out


def save(log: dict) -> None:
    """Write this run's part (``log["part"]``) to its own file, so parts can run in parallel."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    path = RESULTS.with_name(f"{RESULTS.stem}_{log['part']}{log.get('tag', '')}.json")
    path.write_text(json.dumps(log, indent=1) + "\n")


def merge_parts() -> dict:
    """Merge the part files into bench_ablation.json and return the merged log."""
    merged: dict[str, Any] = {}
    for part in ("frames", "tilts", "multi"):
        path = RESULTS.with_name(f"{RESULTS.stem}_{part}.json")
        if path.exists():
            log = json.loads(path.read_text())
            merged.setdefault("commands", []).append(log.pop("command"))
            merged.setdefault("setup", log.pop("setup"))  # the first part's; multi_setup states its own limit
            merged.update({k: v for k, v in log.items() if k not in ("part", "setup")})
    RESULTS.write_text(json.dumps(merged, indent=1) + "\n")
    return merged


def table(rows: list[dict]) -> str:
    lines = ["| parameters | FSC 0.143 (Å) | vs truth FSC 0.5 (Å) | shift RMS (px) | defocus RMS (Å) | "
             "median angle (°) | time (s) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        sp = next(iter(r["species"].values()))
        lines.append(f"| {r['label']} | {sp['fsc_0143_A']:.2f} | {sp['truth_fsc_05_A']:.2f} | {r['shift_rms_px']:.3f} | "
                     f"{r['defocus_rms_A']:.0f} | {r['angle_median_deg']:.2f} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def write_doc(log: dict) -> None:
    cmds = "; ".join(f"`{c}`" for c in log["commands"])
    parts = [f"Commands: {cmds}. Setup: {log['setup']}."]
    parts += [f"{k.split('_')[0]}: {log[k]}." for k in ("frames_setup", "tilts_setup", "multi_setup") if k in log]
    parts.append("")
    for kind in ("frames", "tilts"):
        if kind in log:
            parts += [f"### {kind}", "", table(log[kind]), ""]
    if "multi" in log:
        parts += ["### multi-species (frames)", "", "| refined with | alpha particles | alpha FSC 0.143 (Å) | "
                  "alpha vs truth FSC 0.5 (Å) | alpha mean FSC vs truth, 8 Å–Nyquist | alpha shift RMS (px) | alpha position RMS (px) | alpha median angle (°) |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in log["multi"].values():
            sp = r["species"]["alpha"]
            parts.append(f"| {r['label']} | {sp['particles']} | {sp['fsc_0143_A']:.2f} | {sp['truth_fsc_05_A']:.2f} | "
                         f"{sp.get('truth_fsc_8A_nyquist', float('nan')):.3f} | {r['shift_rms_px']:.3f} | {r['position_rms_px']:.3f} | {r['angle_median_deg']:.2f} |")
        parts += ["", "FSC of alpha at fixed resolutions (half-map FSC / FSC of the half-map average vs the true map):", "",
                  "| refined with | " + " | ".join(f"{r:g} Å" for r in FSC_SHELLS_A) + " |",
                  "| --- |" + " --- |" * len(FSC_SHELLS_A)]
        for r in log["multi"].values():
            sp = r["species"]["alpha"]
            if "half_fsc_at" in sp:
                parts.append(f"| {r['label']} | " + " | ".join(
                    f"{sp['half_fsc_at'][f'{x:g}']:.3f} / {sp['truth_fsc_at'][f'{x:g}']:.3f}" for x in FSC_SHELLS_A) + " |")
        parts.append("")
    text = DOC.read_text() if DOC.exists() else "# Ablation\n\n<!-- bench_ablation -->\n<!-- /bench_ablation -->\n"
    start, end = "<!-- bench_ablation -->", "<!-- /bench_ablation -->"
    if start not in text:
        text += f"\n{start}\n{end}\n"
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    DOC.write_text(head + start + "\n" + "\n".join(parts) + end + tail)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (checks the script, not the science)")
    ap.add_argument("--only", choices=["frames", "tilts", "multi", "full-frames", "full-tilts"], action="append",
                    help="full-*: issue 15's combined run (every effect injected, every model on, vs the oracle); "
                         "writes bench_ablation_full-*.json only, not the doc")
    ap.add_argument("--refine-res", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--full-particles", type=int, default=24, help="particles per frame series (full-*; tilts: half)")
    ap.add_argument("--full-snr", type=float, default=1.0, help="SNR of the simulated data (full-*)")
    ap.add_argument("--full-seeds", type=int, nargs="+", default=[1, 2], help="item seeds (full-*)")
    ap.add_argument("--full-clean", action="store_true",
                    help="full-*: inject none of issue 15's effects (control: the same rows on plain data)")
    ap.add_argument("--full-no-weights", action="store_true",
                    help="full-*: refined rows keep the dose rule (no per-item data-driven weights)")
    ap.add_argument("--full-dome", type=float, default=600.0, help="injected dome, Å (full-frames)")
    ap.add_argument("--full-volume-warp", type=float, default=5.0, help="injected volume deformation, Å (full-tilts)")
    ap.add_argument("--multi-items", type=int, default=6)
    ap.add_argument("--multi-particles", type=int, default=40)
    ap.add_argument("--multi-snr", type=float, default=0.3)
    ap.add_argument("--multi-groups", default="shifts,warp,poses,ctf",
                    help="groups refined in both multi-species rows (shifts,warp,poses,ctf)")
    ap.add_argument("--multi-warp-grid", type=int, nargs=3, default=[3, 3, 3], metavar=("X", "Y", "T"),
                    help="image-warp spline grid refined in multi mode (nodes in x, y, time)")
    ap.add_argument("--multi-first-seed", type=int, default=11, help="item seeds start here (multi mode)")
    ap.add_argument("--multi-frames", type=int, default=6, help="frames per series (multi mode)")
    ap.add_argument("--multi-warp-px", type=float, default=None, help="local warp amplitude (px); simulator default if unset")
    ap.add_argument("--multi-drift-px", type=float, default=None, help="global drift (px); simulator default if unset")
    ap.add_argument("--multi-shift-error", type=float, default=None,
                    help="sigma of the initial per-frame shift errors (px); simulator default if unset")
    ap.add_argument("--multi-pose-error", type=float, nargs=2, default=None, metavar=("MIN", "MAX"),
                    help="initial per-particle rotation error range (°); simulator default if unset")
    ap.add_argument("--multi-position-error", type=float, default=None,
                    help="sigma of the initial particle xy errors (px); simulator default if unset")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    q = a.quick
    base = RefineSettings(resolution_fraction=1.0, lbfgs_iterations=8 if q else 12, rounds=1 if q else 2,
                          defocus_search_range=1000.0, defocus_search_step=100.0, threads=a.threads)
    only = set(a.only or ["frames", "tilts", "multi"])
    full = sorted(o for o in only if o.startswith("full-"))
    if full and len(only) > len(full):
        raise SystemExit("--only full-* runs alone (its results do not go into the doc's tables)")
    log: dict[str, Any] = {"part": "-".join(sorted(only)) if len(only) > 1 else next(iter(only))}
    log["command"] = " ".join(["python benchmarks/bench_ablation.py", *sys.argv[1:]])
    log["setup"] = (f"pixel {PIXEL} Å, box {BOX}, defocus 1 µm, SNR 1, refinement limit {a.refine_res} Å, references = "
                    f"true maps, settings {base.to_json()}")
    if "frames" in only:
        sims = frames_sims([1, 2], 8 if q else 24, 192 if q else 288)
        log["frames_setup"] = f"{len(sims)} frame series x {sims[0].config.n_particles} particles, 6 frames"
        ablation("frames", sims, base, (3, 3, 3), a.refine_res, log)
    if "tilts" in only:
        sims = tilts_sims([1, 2], 6 if q else 12, 192 if q else 256)
        log["tilts_setup"] = f"{len(sims)} tilt series x {sims[0].config.n_particles} particles, 11 tilts ±30°"
        ablation("tilts", sims, base, (3, 3, 1), a.refine_res, log)
    if full and (a.full_snr != 1.0 or a.full_seeds != [1, 2] or a.full_particles != 24):
        log["tag"] = f"_snr{a.full_snr:g}_seeds{'-'.join(map(str, a.full_seeds))}"
        log["tag"] += "" if a.full_particles == 24 else f"_p{a.full_particles}"
    if full and a.full_clean:
        log["tag"] = log.get("tag", "") + "_clean"
    if full and a.full_no_weights:
        log["tag"] = log.get("tag", "") + "_noweights"
    if full and a.refine_res != 5.0:
        log["tag"] = log.get("tag", "") + f"_res{a.refine_res:g}"
    for part in full:
        kind = part.split("-")[1]
        if kind == "frames":
            inject = {} if a.full_clean else {"doming_A": a.full_dome, "aberrations": FULL_OPTICS, "damage": "measured"}
            sims = frames_sims(a.full_seeds, 8 if q else a.full_particles, 192 if q else 288, snr=a.full_snr, **inject)
        else:
            inject = {} if a.full_clean else {"volume_warp_A": a.full_volume_warp, "aberrations": FULL_OPTICS,
                                              "damage": "measured"}
            sims = tilts_sims(a.full_seeds, 6 if q else a.full_particles // 2, 192 if q else 256, snr=a.full_snr,
                              **inject)
        log[f"full_{kind}_setup"] = (f"{len(sims)} {kind} series (seeds {a.full_seeds}) x {sims[0].config.n_particles} "
                                     f"particles, SNR {a.full_snr}; " + ("nothing injected (--full-clean); " if a.full_clean
                                                                         else "") + "injected: "
                                     f"{FULL_OPTICS.to_json()}, measured damage, "
                                     + (f"dome {a.full_dome} Å" if kind == "frames" else
                                        f"volume deformation {a.full_volume_warp} Å"))
        full_ablation(kind, sims, base, (3, 3, 3) if kind == "frames" else (3, 3, 1), a.refine_res, log,
                      weights=not a.full_no_weights)
    if full:
        return
    if "multi" in only:
        seeds = [11, 12] if q else list(range(a.multi_first_seed, a.multi_first_seed + a.multi_items))
        n = 16 if q else a.multi_particles
        size = int(96 + 36 * n ** 0.5)
        pert = Perturbation()
        pert = Perturbation(shift_px=pert.shift_px if a.multi_shift_error is None else a.multi_shift_error,
                            pose_deg=pert.pose_deg if a.multi_pose_error is None else tuple(a.multi_pose_error),
                            position_px=pert.position_px if a.multi_position_error is None else a.multi_position_error)
        motion = {k: v for k, v in (("warp_px", a.multi_warp_px), ("drift_px", a.multi_drift_px)) if v is not None}
        sims = frames_sims(seeds, n, size, fractions=(0.05, 0.95), species=2, snr=a.multi_snr,
                           n_frames=a.multi_frames, perturbation=pert, **motion)
        g = set(a.multi_groups.split(","))
        full = base.replace(image_warp=list(a.multi_warp_grid) if "warp" in g else None, refine_shifts="shifts" in g,
                            refine_poses="poses" in g, refine_defocus="ctf" in g, refine_astigmatism="ctf" in g)
        log["multi_setup"] = (f"{len(sims)} frame series (seeds {seeds[0]}–{seeds[-1]}) x {n} particles ({size}² px), SNR {a.multi_snr}, species "
                              f"fractions 5/95 %, both rows refine {a.multi_groups} (warp grid "
                              f"{'x'.join(map(str, a.multi_warp_grid))}); {a.multi_frames} frames, warp "
                              f"{sims[0].config.warp_px} px, drift {sims[0].config.drift_px} px, initial errors: shifts "
                              f"{pert.shift_px} px, poses {pert.pose_deg[0]}-{pert.pose_deg[1]}°, positions "
                              f"{pert.position_px} px; refinement limit {a.refine_res} Å")
        multi_species(sims, full, a.refine_res, log)
    save(log)
    write_doc(merge_parts())


if __name__ == "__main__":
    main()
