"""Cost of refining one item vs number of particles: wall time, peak RSS and patch memory.

Each size runs in a fresh subprocess: a frame series (6 frames, 1.5 Å/px, box 48, 5 Å
refinement limit) refined with shifts, poses, defocus and astigmatism (M's staged order),
1 thread. Reported per size: refine_item wall time (its L-BFGS iteration counts vary); the
time of one evaluation of the target with its gradient (CTF not frozen: extraction-size
FFTs included); peak RSS of the process and its growth
during refine_item (ru_maxrss after minus before); and the bytes of the extracted particle
patches the target keeps (complex64, all crop groups) with per-exposure Fourier cropping,
next to what they would take without it (every exposure at the full extraction box).

Run: ``.venv/bin/python benchmarks/bench_refine.py [N ...]``; writes
benchmarks/results/bench_refine.json.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import json, resource, sys, time, torch
sys.path.insert(0, {root!r})
torch.set_num_threads(1)
from mrepo.sim import FrameSeriesConfig, Optics, simulate_frame_series
from tests.workers.simdata import build_repo, small_species
from mrepo.workers.api import ItemTask
from mrepo.workers.geometry import Parameters
from mrepo.workers.references import load_references_from
from mrepo.workers.refine_item import _Context, refine_item
from mrepo.workers.settings import RefineSettings
n = {n}
size = int(96 + 48 * n ** 0.5)
cfg = FrameSeriesConfig(image_size=(size, size), n_frames=6, optics=Optics(pixel_size=1.5),
                        species=small_species(48, 1.5)[:1], box=48, n_particles=n, snr=1.0, pad=3, defocus=10000.0)
sim = simulate_frame_series(cfg, 5)
sr = build_repo(sim, resolution=5.0)
pop = sr.repo.population(); ih = sr.repo.source(pop.sources["sim"]).items[sr.item_key]
s = RefineSettings(refine_shifts=True, refine_poses=True, refine_defocus=True, refine_astigmatism=True,
                   resolution_fraction=1.0, lbfgs_iterations=10, rounds=1, defocus_search_range=600.0)
task = ItemTask(sr.repo.url, "sim", sr.item_key, ih, dict(pop.species), s.to_json(), 1, n)
ctx = _Context(task, s, sr.repo.objects, load_references_from(sr.repo.objects, task.species, s))
subs = ctx.subsets(Parameters.zeros(ctx.model, ctx.particles, None))
cropped = sum(st.group.ft.numel() * 8 for sub in subs for st in sub.groups)
full = sum(len(sub.index) * ctx.model.n * (sub.groups[0].group.big * sub.box // sub.groups[0].group.size) ** 2 * 4
           for sub in subs)  # complex64 rfft2 (M, M // 2 + 1) ~ M^2 / 2 values of 8 bytes
params = Parameters.zeros(ctx.model, ctx.particles, None)
ctx.sums(subs, params, ctf_frozen=False).target()  # warm-up
tensors = params.select(["shifts", "translation", "rotation", "defocus", "astigmatism"])
t = time.perf_counter()
for _ in range(3):
    ctx.sums(subs, params, ctf_frozen=False).target().backward()
per_eval = (time.perf_counter() - t) / 3
del ctx, subs, params, tensors
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t = time.perf_counter()
refine_item(task)
sec = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"particles": n, "image_px": size, "seconds": sec, "peak_rss_mib": peak,
                  "rss_growth_mib": peak - before, "seconds_per_evaluation": per_eval, "patch_mib": cropped / 2**20,
                  "patch_uncropped_mib": full / 2**20}}))
"""


def main(sizes: list[int]) -> None:
    rows = []
    for n in sizes:
        out = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT), n=n)], capture_output=True,
                             text=True, check=True).stdout.strip().splitlines()[-1]
        row = json.loads(out)
        rows.append(row)
        print(f"{n:6d} particles  {row['seconds']:8.2f} s  {row['seconds_per_evaluation']:6.3f} s/eval  peak {row['peak_rss_mib']:8.1f} MiB  growth "
              f"{row['rss_growth_mib']:7.1f} MiB  patches {row['patch_mib']:6.2f} MiB "
              f"(uncropped {row['patch_uncropped_mib']:6.2f} MiB)", flush=True)
    path = ROOT / "benchmarks" / "results" / "bench_refine.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"settings": "frames, 6 frames, 1.5 Å/px, box 48, 5 Å limit, shifts+poses+defocus+"
                                            "astigmatism, 10 L-BFGS its, 1 round, search ±600 Å, 1 thread",
                                "command": "python benchmarks/bench_refine.py " + " ".join(map(str, sizes)),
                                "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[8, 16, 32, 64, 128], help="particle counts")
    main(parser.parse_args().sizes)
