"""Cost of refining one item vs number of particles: wall time and peak RSS per run.

Run: ``.venv/bin/python benchmarks/bench_refine.py [N ...]``; each size runs in a fresh
subprocess (peak memory = ru_maxrss of that process); writes benchmarks/results/bench_refine.json.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import resource, sys, time, torch
sys.path.insert(0, {root!r})
torch.set_num_threads(1)
from tests.workers.simdata import build_repo, frames_sim
from mrepo.workers.api import ItemTask
from mrepo.workers.refine_item import refine_item
from mrepo.workers.settings import RefineSettings
n = {n}
sim = frames_sim(n_particles=n, size=int(96 + 24 * n ** 0.5 * 2), snr=0.5)
sr = build_repo(sim)
pop = sr.repo.population(); ih = sr.repo.source(pop.sources["sim"]).items[sr.item_key]
s = RefineSettings(refine_shifts=True, lbfgs_iterations=10, rounds=1)
t = time.perf_counter()
refine_item(ItemTask(sr.repo.url, "sim", sr.item_key, ih, dict(pop.species), s.to_json(), 1, n))
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def main(sizes: list[int]) -> None:
    rows = []
    for n in sizes:
        out = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT), n=n)], capture_output=True,
                             text=True, check=True).stdout.split()
        rows.append({"particles": n, "seconds": float(out[0]), "peak_rss_mib": float(out[1])})
        print(f"{n:6d} particles  {float(out[0]):8.2f} s  {float(out[1]):8.1f} MiB", flush=True)
    path = ROOT / "benchmarks" / "results" / "bench_refine.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"settings": "frames, 6 frames, box 32, shifts only, 10 L-BFGS its, 1 thread",
                                "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [4, 8, 16])
