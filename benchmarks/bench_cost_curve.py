"""Per-particle cost curve of one refinement iteration per item: CPU time and peak memory vs particles and box
(issue 11: "100 → 2,000 particles, box 64 → 256: time and peak memory, linear in particles").

Each (box, particles) point runs in a fresh subprocess on one thread: the simulated frame series of
:func:`bench_refine.simulated_item` (6 frames, 1.5 Å/px, limit 4 px, so every box is refined to the same
fraction of Nyquist), then one full :func:`mrepo.workers.refine_item.refine_item` — what the driver runs per
item and iteration: extraction, the L-BFGS stages (shifts, image warp, poses, then defocus search, defocus +
astigmatism), the acceptance checks, NC spectra and back-projection. Reported per point:

- ``cpu_s``: CPU time (user + system) of refine_item; ``wall_s``;
- ``evaluations``: target evaluations (with and without gradient) the iteration made — the L-BFGS line
  search makes this vary a little between points, so ``cpu_per_eval_ms`` is reported too;
- ``peak_rss_mib``: peak RSS (VmHWM, reset after the simulation) during refine_item, and ``growth_mib``
  over the RSS before it (Linux ``/proc``).

``--device cuda`` (or ``cuda:N``) runs refine_item on that GPU (``RefineSettings.device``): each row then
also records ``device``, the GPU's name and ``peak_gpu_mib`` (``torch.cuda.max_memory_allocated`` during
refine_item); ``wall_s`` is the figure to compare (the CPU time is the host's share), and the time is taken
after ``torch.cuda.synchronize``.

Per box, a least-squares line ``cpu = a + b · particles`` (and the same for the growth) is fitted; the
curve is called linear when every point lies within ``--tolerance`` (default 15 %) of the line. Points
that were not run (``--extrapolate``) are predicted from the fitted lines and the measured box scaling,
and marked as extrapolated.

Run: ``nice .venv/bin/python benchmarks/bench_cost_curve.py [--kind frames|tilts] [--boxes 64 128]
[--particles 100 200 400] [--lbfgs 20] [--extrapolate 2000:256] [--device cpu|cuda] [--out FILE] [--append]``; writes
benchmarks/results/bench_cost_curve.json (``--append`` adds to its rows; each row records the commit it ran,
``BENCH_COMMIT`` when run from an exported copy of the tree).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "bench_cost_curve.json"

CHILD = """
import gc, json, sys, time, torch
sys.path.insert(0, {root!r})
sys.path.insert(0, {root!r} + "/benchmarks")
torch.set_num_threads({threads})
from bench_refine import peak_reset, proc_status, simulated_item
import mrepo.workers.objective as objective
refine_module = sys.modules["mrepo.workers.refine_item"]  # the package re-exports a function of that name
from mrepo.workers.refine_item import refine_item
{setup}
gc.collect()
cuda = {device!r}.startswith("cuda")
if cuda:
    torch.cuda.reset_peak_memory_stats({device!r})
counts = {{"grad": 0, "nograd": 0}}
evaluate = objective.evaluate
def counted(*args, **kw):
    counts["grad" if torch.is_grad_enabled() else "nograd"] += 1
    return evaluate(*args, **kw)
objective.evaluate = refine_module.evaluate = counted  # counts calls only; the computation is the real one
paths = set()
fits = objective.joint_pass_fits
def recorded(*args, **kw):
    joint = fits(*args, **kw)
    paths.add("joint" if joint else "batched")
    return joint
objective.joint_pass_fits = recorded  # records which gradient path backward_target took
start = peak_reset()
c0, t0 = time.process_time(), time.perf_counter()
result = refine_item(task)
if cuda:
    torch.cuda.synchronize({device!r})
cpu, wall = time.process_time() - c0, time.perf_counter() - t0
peak = proc_status("VmHWM:")
row = {{"kind": {kind!r}, "particles": result.stats["particles"], "box": {box}, "cpu_s": cpu, "wall_s": wall,
       "evaluations": counts, "peak_rss_mib": peak, "growth_mib": peak - start, "device": {device!r},
       "patch_memory_mib": {patch_memory}, "graph_memory_mib": {graph_memory},
       "gradient_path": "+".join(sorted(paths))}}
if cuda:
    row["gpu"] = torch.cuda.get_device_name({device!r})
    row["peak_gpu_mib"] = torch.cuda.max_memory_allocated({device!r}) / 2**20
print(json.dumps(row))
"""

#: The simulation, in the measuring process (its memory stays in that process's heap) ...
SIMULATE = """sr, task, s = simulated_item({kind!r}, {n}, {box}, {batch}, image_warp=(3, 3, 3), lbfgs_iterations={lbfgs},
                             device={device!r}, patch_memory_mib={patch_memory}, graph_memory_mib={graph_memory},
                             threads={threads}{url})"""
#: ... or in a process of its own, which writes the repository to a folder and the task beside it
SIM_ONLY = """
import pickle, sys
sys.path.insert(0, {root!r})
sys.path.insert(0, {root!r} + "/benchmarks")
from bench_refine import simulated_item
""" + SIMULATE + """
pickle.dump((task, s), open({task_file!r}, "wb"))
"""
#: which the measuring process then reads (raw exposures from that folder, as a user's refinement does)
LOAD = "import pickle\ntask, s = pickle.load(open({task_file!r}, 'rb'))"


def run_point(n: int, box: int, batch: int, lbfgs: int, timeout: float, kind: str = "frames",
              device: str = "cpu", patch_memory: float = 2048.0, graph_memory: float = 512.0, threads: int = 1,
              sim_dir: Path | None = None) -> dict | None:
    """One (box, particles) point in fresh subprocesses; None when it failed or ran out of time.
    ``sim_dir``: simulate in a process of its own, the repository written to a folder below it (removed
    after the point), so that the measured process holds no simulation memory."""
    fields = dict(root=str(ROOT), n=n, box=box, batch=batch, lbfgs=lbfgs, kind=kind, device=device,
                  patch_memory=float(patch_memory), graph_memory=float(graph_memory), threads=threads)
    where = None if sim_dir is None else sim_dir / f"{kind}-{box}-{n}"
    if where is None:
        setup = SIMULATE.format(**fields, url="")
    else:
        shutil.rmtree(where, ignore_errors=True)
        where.mkdir(parents=True)
        task_file = str(where / "task.pickle")
        sim = SIM_ONLY.format(**fields, url=f", url={str(where / 'repo')!r}", task_file=task_file)
        made = subprocess.run([sys.executable, "-c", sim], capture_output=True, text=True)
        if made.returncode:
            print(f"box {box} {n} particles: simulation failed: {(made.stderr.strip().splitlines() or ['?'])[-1]}",
                  flush=True)
            return None
        setup = LOAD.format(task_file=task_file)
    code = CHILD.format(**fields, setup=setup)
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"box {box} {n} particles: no result within {timeout:.0f} s", flush=True)
        return None
    finally:
        if where is not None:
            shutil.rmtree(where, ignore_errors=True)
    if proc.returncode:
        last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode} (killed?)"])[-1]
        print(f"box {box} {n} particles failed: {last}", flush=True)
        return None
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    ev = row["evaluations"]
    row["cpu_per_eval_ms"] = 1000 * row["cpu_s"] / max(1, ev["grad"] + ev["nograd"])
    row["threads"] = threads
    row["simulation"] = "in the measured process" if sim_dir is None else "separate process, repository on disk"
    return row


def fit(rows: list[dict], key: str, tolerance: float) -> dict:
    """Least-squares ``key = a + b · particles`` over ``rows``; linear when every point is within ``tolerance``."""
    n = np.array([r["particles"] for r in rows], float)
    y = np.array([r[key] for r in rows], float)
    if len(rows) < 2:
        return {"points": len(rows)}
    b, a = np.polyfit(n, y, 1)
    dev = np.abs(a + b * n - y) / np.maximum(np.abs(y), 1e-9)
    return {"points": len(rows), "intercept": float(a), "per_particle": float(b),
            "max_deviation": float(dev.max()), "linear": bool(dev.max() <= tolerance and b > 0)}


def extrapolate(fits: dict[int, dict], key: str, n: int, box: int) -> tuple[float, str] | None:
    """``key`` at (n, box) from the fitted lines: the box's own line when it was measured, else the largest
    measured box's line scaled in box by the power law between the two largest measured boxes at ``n``."""
    boxes = sorted(b for b, f in fits.items() if "per_particle" in f[key])
    if not boxes:
        return None
    if box in boxes:
        own = fits[box][key]["intercept"] + fits[box][key]["per_particle"] * n
        return (own, f"line of box {box}") if own > 0 else None
    top = boxes[-1]
    f = fits[top][key]
    value = f["intercept"] + f["per_particle"] * n
    if len(boxes) < 2:
        return None
    lo = boxes[-2]
    p_lo, p_hi = (fits[b][key]["intercept"] + fits[b][key]["per_particle"] * n for b in (lo, top))
    if p_lo <= 0 or p_hi <= 0 or value <= 0:
        return None  # a line that does not stay positive there: no honest extrapolation
    power = float(np.log(p_hi / p_lo) / np.log(top / lo))
    return value * (box / top) ** power, f"line of box {top} x (box/{top})^{power:.2f} (from boxes {lo}, {top})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--boxes", nargs="*", type=int, default=[64, 128])
    ap.add_argument("--particles", nargs="*", type=int, default=[100, 200, 400])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lbfgs", type=int, default=20, help="L-BFGS iterations per stage (RefineSettings default 20)")
    ap.add_argument("--tolerance", type=float, default=0.15)
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per point")
    ap.add_argument("--extrapolate", nargs="*", default=["2000:64", "2000:128", "2000:256"],
                    help="particles:box points to predict from the fitted lines")
    ap.add_argument("--kind", choices=("frames", "tilts"), default="frames",
                    help="frame series (6 frames) or tilt series (11 tilts, ±30°) of bench_refine.simulated_item")
    ap.add_argument("--device", default="cpu", help="refinement device: cpu, cuda or cuda:N (RefineSettings.device)")
    ap.add_argument("--patch-memory", type=float, default=2048.0, metavar="MIB",
                    help="RefineSettings.patch_memory_mib (mrepo refine --patch-memory): patches kept up to this "
                         "estimate, re-extracted per evaluation above it")
    ap.add_argument("--graph-memory", type=float, default=512.0, metavar="MIB",
                    help="RefineSettings.graph_memory_mib (mrepo refine --graph-memory): all particle batches "
                         "back-propagated in one pass up to this graph estimate, one at a time above it (0: always)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads of the measured process (RefineSettings.threads); CPU time is their sum")
    ap.add_argument("--sim-dir", type=Path, default=None, metavar="DIR",
                    help="simulate each point in a process of its own, its repository written below DIR and read "
                         "from there (the measured process then holds no simulation memory; removed after)")
    ap.add_argument("--out", type=Path, default=RESULT, help="result JSON")
    ap.add_argument("--append", action="store_true", help="keep the rows already in --out and add the new ones")
    ap.add_argument("--refit", action="store_true",
                    help="fit and extrapolate the rows already in the result file (no new runs)")
    a = ap.parse_args()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = json.loads(a.out.read_text())["rows"] if a.append and a.out.exists() else []
    log = {"command": "python benchmarks/bench_cost_curve.py " + " ".join(sys.argv[1:]),
           "settings": f"frames (6), 1.5 Å/px, limit 4 px, shifts + 3x3x3 image warp + poses + defocus + astigmatism, "
                       f"L-BFGS {a.lbfgs}, particle batch {a.batch}, {a.threads} thread{'s' if a.threads > 1 else ''}, one refine_item per point"}
    if a.kind == "tilts":
        log["settings"] = log["settings"].replace("frames (6)", "tilts (11, ±30°)")
    if a.device != "cpu":
        log["settings"] = log["settings"].replace("1 thread,", f"device {a.device} (1 host thread),")
    if a.refit:
        log = json.loads(a.out.read_text())
        rows = [r for r in log["rows"] if r.get("kind", "frames") == a.kind and r.get("device", "cpu") == a.device]
        a.boxes = sorted({r["box"] for r in rows})
        log["refit"] = "python benchmarks/bench_cost_curve.py " + " ".join(sys.argv[1:])
    commit = os.environ.get("BENCH_COMMIT") or subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    for box in a.boxes if not a.refit else []:
        for n in a.particles:
            row = run_point(n, box, a.batch, a.lbfgs, a.timeout, a.kind, a.device, a.patch_memory,
                            a.graph_memory, a.threads, a.sim_dir)
            if row is None:
                continue
            row["commit"] = commit
            rows.append(row)
            ev = row["evaluations"]
            print(f"box {box:4d} {row['particles']:6d} particles  CPU {row['cpu_s']:8.1f} s "
                  f"({1000 * row['cpu_s'] / row['particles']:7.1f} ms/particle, {ev['grad']}+{ev['nograd']} evaluations, "
                  f"{row['cpu_per_eval_ms']:7.1f} ms/evaluation)  wall {row['wall_s']:7.1f} s  peak "
                  f"{row['peak_rss_mib']:7.0f} MiB  growth {row['growth_mib']:7.0f} MiB"
                  + (f"  GPU peak {row['peak_gpu_mib']:7.0f} MiB ({row['gpu']})" if "gpu" in row else ""), flush=True)
            log["rows"] = rows
            a.out.write_text(json.dumps(log, indent=1) + "\n")
    mine = [r for r in rows if r.get("kind", "frames") == a.kind and r.get("device", "cpu") == a.device]
    fits = {box: {key: fit([r for r in mine if r["box"] == box], key, a.tolerance)
                  for key in ("cpu_s", "cpu_per_eval_ms", "growth_mib")} for box in a.boxes}
    log["fits"] = {str(b): f for b, f in fits.items()}
    print("\nper box: cpu = a + b · particles (linear: every point within "
          f"{100 * a.tolerance:.0f} % of the line)")
    for box, f in fits.items():
        for key in ("cpu_s", "cpu_per_eval_ms", "growth_mib"):
            g = f[key]
            if "per_particle" in g:
                print(f"  box {box:4d} {key:16s} a {g['intercept']:9.2f}  b {g['per_particle']:9.4f} /particle  "
                      f"max deviation {100 * g['max_deviation']:5.1f} %  linear {g['linear']}")
    preds = []
    for spec in a.extrapolate:
        n, box = (int(x) for x in spec.split(":"))
        pred = {"particles": n, "box": box, "extrapolated": True}
        for key in ("cpu_s", "growth_mib"):
            got = extrapolate(fits, key, n, box)
            if got is not None:
                pred[key], pred[f"{key}_from"] = got
        preds.append(pred)
        if "cpu_s" in pred:
            growth = f"~{pred['growth_mib']:.0f} MiB" if "growth_mib" in pred else "not extrapolated"
            print(f"  extrapolated: {n} particles box {box}: CPU ~{pred['cpu_s']:.0f} s ({pred['cpu_s_from']}), "
                  f"growth {growth}")
    log["extrapolated"] = preds
    a.out.write_text(json.dumps(log, indent=1) + "\n")


if __name__ == "__main__":
    main()
