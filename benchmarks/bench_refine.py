"""Per-particle cost of refining one item: time and peak memory vs particles and box (issue 11, item 8).

Each (kind, box, particles) point runs in a fresh subprocess on one thread: a simulated
frame series (6 frames) or tilt series (11 tilts, ±30°), 1.5 Å/px, refinement limit
4 pixels (so every box is refined to the same fraction of Nyquist), shifts + poses +
defocus + astigmatism. Reported per point:

- ``setup_s``: extraction of every particle in every exposure at the aliasing-free box,
  Fourier-cropped per exposure, and the fixed per-group quantities (``_Context.subset_pairs``);
- ``eval_s``: one evaluation of M's target with its gradient (CTF not frozen, so the
  extraction-size FFTs and CTF premultiplication are included), in particle batches of
  ``--batch`` (:func:`mrepo.workers.objective.backward_target`): the dominant cost of
  refinement, done ~(L-BFGS steps × rounds × 1.5) times per item;
- ``patch_mib``: the particle patches the refinement keeps (complex64, per-exposure crops);
- ``peak_rss_mib`` and ``rss_growth_mib``: peak RSS (VmHWM, reset after the simulation) during
  extraction and evaluation, and its growth over the RSS before them (Linux ``/proc``);
- per-particle figures: eval_s / particles and growth / particles (linear cost means these
  stay flat).

Run: ``nice .venv/bin/python benchmarks/bench_refine.py [--kind frames|tilts] [--boxes 64 128]
[--particles 100 200 400]``; writes benchmarks/results/bench_refine_<kind>.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
def simulated_item(kind: str, n: int, box: int, batch: int, seed: int = 5, url: str | None = None,
                   **settings: object):
    """A one-item repository of ``n`` simulated particles (frames: 6 frames; tilts: 11 tilts, ±30°) at
    ``box`` px, 1.5 Å/px, limit 4 px, and the item task refining shifts + poses + defocus + astigmatism
    (``settings`` override RefineSettings fields): (SimRepo, ItemTask, RefineSettings). The micrograph
    grows with the particles (``box * (2 + 0.8 sqrt(n))`` px square). ``url``: where the repository is
    made (default: an in-memory one, for this process only)."""
    from mrepo.sim import FrameSeriesConfig, Optics, TiltSeriesConfig, simulate_frame_series, simulate_tilt_series
    from mrepo.workers.api import ItemTask
    from mrepo.workers.settings import RefineSettings
    from tests.workers.simdata import build_repo, small_species

    pix = 1.5
    size = int(box * (2 + 0.8 * n**0.5))
    sp = small_species(box, pix)[:1]
    if kind == "frames":
        cfg = FrameSeriesConfig(image_size=(size, size), n_frames=6, optics=Optics(pixel_size=pix), species=sp,
                                box=box, n_particles=n, snr=1.0, pad=2, defocus=10000.0, contrast="light")
        sim = simulate_frame_series(cfg, seed)
    else:
        cfg = TiltSeriesConfig(image_size=(size, size), volume_depth_px=2 * box, optics=Optics(pixel_size=pix),
                               species=sp, box=box, n_particles=n, max_tilt=30.0, tilt_step=6.0, snr=1.0, pad=2,
                               slab_thickness=box * pix, defocus=10000.0, contrast="light")
        sim = simulate_tilt_series(cfg, seed)
    sr = build_repo(sim, resolution=4 * pix, url=url)
    pop = sr.repo.population()
    ih = sr.repo.source(pop.sources["sim"]).items[sr.item_key]
    s = RefineSettings(refine_shifts=True, refine_poses=True, refine_defocus=True, refine_astigmatism=True,
                       resolution_fraction=1.0, particle_batch=batch, **settings)
    return sr, ItemTask(sr.repo.url, "sim", sr.item_key, ih, dict(pop.species), s.to_json(), 1, n), s


def peak_reset() -> float:
    """Reset the peak RSS (VmHWM) of this process; returns the current RSS (MiB). Linux ``/proc``."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return proc_status("VmRSS:")


def proc_status(key: str) -> float:
    """A ``/proc/self/status`` memory figure (``VmRSS:``, ``VmHWM:``) in MiB."""
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


CHILD = """
import json, sys, time, torch
sys.path.insert(0, {root!r})
sys.path.insert(0, {root!r} + "/benchmarks")
torch.set_num_threads(1)
from bench_refine import simulated_item
from mrepo.workers.geometry import Parameters
from mrepo.workers.references import load_references_from
from mrepo.workers.refine_item import _Context
kind, n, box, batch = {kind!r}, {n}, {box}, {batch}
sr, task, s = simulated_item(kind, n, box, batch)
ctx = _Context(task, s, sr.repo.objects, load_references_from(sr.repo.objects, task.species, s))
size = int(box * (2 + 0.8 * n ** 0.5))
import gc; gc.collect()
from bench_refine import peak_reset, proc_status
start = peak_reset()  # measure the refinement only, not the simulation
t = time.perf_counter()
params = Parameters.zeros(ctx.model, ctx.particles, None)
params.bounds = dict(ctx.schedule.bounds); params.scales = dict(ctx.schedule.scales)
own, other = ctx.subset_pairs(params)
setup = time.perf_counter() - t
patch = sum(st.group.ft.numel() * 8 for sub in own for st in sub.groups)
params.select(["shifts", "translation", "rotation", "defocus", "astigmatism"])
t = time.perf_counter()
ctx.loss(own, params, ctf_frozen=False)
ev = time.perf_counter() - t
peak = proc_status("VmHWM:")
print(json.dumps({{"kind": kind, "particles": ctx.n_particles, "box": box, "exposures": ctx.model.n, "image_px": size,
                  "setup_s": setup, "eval_s": ev, "patch_mib": patch / 2**20,
                  "peak_rss_mib": peak, "rss_growth_mib": peak - start}}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kind", choices=["frames", "tilts"], default="frames")
    ap.add_argument("--boxes", nargs="*", type=int, default=[64])
    ap.add_argument("--particles", nargs="*", type=int, default=[100, 200, 400])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("sizes", nargs="*", type=int, help="particle counts (same as --particles)")
    a = ap.parse_args()
    if a.sizes:
        a.particles = a.sizes
    rows = []
    path = ROOT / "benchmarks" / "results" / f"bench_refine_{a.kind}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    for box in a.boxes:
        for n in a.particles:
            proc = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT), kind=a.kind, n=n, box=box,
                                                                      batch=a.batch)],
                                  capture_output=True, text=True)
            if proc.returncode:
                print(f"{a.kind} box {box} {n} particles failed: {proc.stderr.strip().splitlines()[-1]}", flush=True)
                continue
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append(row)
            p = row["particles"]
            print(f"{a.kind} box {box:4d} {p:6d} particles  setup {row['setup_s']:7.1f} s  eval {row['eval_s']:7.2f} s "
                  f"({1000 * row['eval_s'] / p:6.1f} ms/particle)  patches {row['patch_mib']:8.1f} MiB  peak "
                  f"{row['peak_rss_mib']:8.1f} MiB  growth {row['rss_growth_mib']:8.1f} MiB "
                  f"({1024 * row['rss_growth_mib'] / p:6.1f} KiB/particle)", flush=True)
            path.write_text(json.dumps({"command": "python benchmarks/bench_refine.py " + " ".join(sys.argv[1:]),
                                        "settings": f"{a.kind}, 1.5 Å/px, limit 4 px, shifts+poses+defocus+astigmatism, "
                                                    f"particle batch {a.batch}, 1 thread", "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
