"""Batch refinement on Ray: throughput against the number of workers, Ray's overhead against
the in-process executor on the same items, and the cost of reducing half-set sums.

Run: ``.venv/bin/python benchmarks/bench_ray.py [--quick]``; prints a table and writes
benchmarks/results/bench_ray.json. Items are small simulated frame series (4 frames of
96x96 px, 2-4 particles, box 24, shifts by 2 L-BFGS iterations, then back-projection),
refined by the real ``refine_item`` with the result cache off. Every timing is of a warm
run (actors started, references resident, one untimed run first), Ray and local runs
interleaved, best of several. The numbers depend on
what else runs on the machine (the load average is recorded). ``OMP_NUM_THREADS=1`` is set
here as Ray sets it in each actor, so both executors compute with the same thread counts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # as Ray gives each num_cpus=1 actor: same BLAS threads both sides

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mrepo.graph import Repository  # noqa: E402
from mrepo.workers.api import HalfSums  # noqa: E402
from mrepo.workers.executors import LocalExecutor, tree_reduce  # noqa: E402
from tests.workers.test_executors import build_population, make_tasks  # noqa: E402


def _time(executor, tasks) -> tuple[float, float]:
    """(wall seconds, seconds spent inside the workers' item runs) of one run."""
    t = time.perf_counter()
    out = executor.run(tasks)
    return time.perf_counter() - t, sum(float(r.stats["seconds_total"]) for r in out.results)


def bench_executors(n_items: int, workers: list[int], repeats: int) -> dict:
    """Warm runs of the same items, Ray and local interleaved so that both see the same machine
    load; best of ``repeats`` each. ``dispatch_overhead`` = (wall - in-worker time / workers) / wall."""
    import ray

    from mrepo.workers.executors import RayExecutor
    from mrepo.workers.ray_pool import local_ray_options

    with tempfile.TemporaryDirectory() as d:
        repo = Repository.init(str(Path(d) / "repo"))
        tasks = make_tasks(repo, build_population(repo, n_items))
        local = LocalExecutor(use_cache=False)
        local.run(tasks)
        ray.init(**local_ray_options(max(workers)))
        rows, local_runs = [], []
        try:
            for w in workers:
                with RayExecutor(workers=w, use_cache=False) as ex:
                    ex.run(tasks)
                    runs = []
                    for _ in range(repeats):
                        runs.append(_time(ex, tasks))
                        local_runs.append(_time(local, tasks))
                t, inner = min(runs)
                rows.append({"workers": w, "seconds": t, "items_per_hour": n_items / t * 3600,
                             "worker_seconds": inner, "dispatch_overhead": (t - inner / w) / t})
        finally:
            ray.shutdown()
            local.close()
    t_local, inner_local = min(local_runs)
    one = next(r for r in rows if r["workers"] == 1)
    return {"items": n_items, "particles": sum(t.particles_total for t in tasks), "local_seconds": t_local,
            "local_items_per_hour": n_items / t_local * 3600, "local_worker_seconds": inner_local, "ray": rows,
            "ray_overhead_1_worker": one["seconds"] / t_local - 1}


def bench_reduction(items: list[int], species: list[int], box: int, pad: int = 2) -> list[dict]:
    """Accumulating per-item sums (in-place add, as each worker does) and tree-reducing per-worker parts."""
    h = pad * box // 2
    grid = (2 * h + 1, 2 * h + 1, h + 1)
    rng = np.random.default_rng(0)
    one = HalfSums(rng.integers(-2**40, 2**40, (2, 2, *grid)), rng.integers(0, 2**40, (2, *grid)), 3)
    rows = []
    for s in species:
        for n in items:
            acc = {f"s{k}": HalfSums.zeros(grid) for k in range(s)}
            t = time.perf_counter()
            for _ in range(n):
                for name in acc:
                    acc[name].add(one)
            t_acc = time.perf_counter() - t
            parts = [{f"s{k}": one for k in range(s)} for _ in range(n)]
            t = time.perf_counter()
            tree_reduce(parts)
            t_tree = time.perf_counter() - t
            rows.append({"box": box, "grid": list(grid), "species": s, "items": n, "accumulate_seconds": t_acc,
                         "tree_reduce_seconds": t_tree, "tree_reduce_ms_per_part_species": 1e3 * t_tree / (n * s)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 items, 2 repeats, box 24 reduction only")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    n_items, repeats = (8, 2) if args.quick else (16, 4)
    load = os.getloadavg()[0]
    ex = bench_executors(n_items, [1, 2], repeats)
    red = bench_reduction([8, 64] if args.quick else [8, 64, 256], [1, 2, 4], 24)
    if not args.quick:
        red += bench_reduction([8, 64], [1, 2], 64)

    print(f"\nexecutors: {ex['items']} items, {ex['particles']} particles (load average {load:.1f} on "
          f"{os.cpu_count()} CPUs)")
    print(f"{'executor':<18}{'seconds':>9}{'items/hour':>12}{'in workers s':>14}{'dispatch %':>12}")
    print(f"{'local (1 thread)':<18}{ex['local_seconds']:>9.2f}{ex['local_items_per_hour']:>12.0f}"
          f"{ex['local_worker_seconds']:>14.2f}{'':>12}")
    for r in ex["ray"]:
        print(f"{'ray, ' + str(r['workers']) + ' worker(s)':<18}{r['seconds']:>9.2f}{r['items_per_hour']:>12.0f}"
              f"{r['worker_seconds']:>14.2f}{100 * r['dispatch_overhead']:>12.1f}")
    print(f"Ray overhead at 1 worker vs local: {100 * ex['ray_overhead_1_worker']:+.1f} %")
    print(f"\nreduction of int64 fixed-point half-set sums\n{'box':>4}{'species':>9}{'items':>7}"
          f"{'accumulate s':>14}{'tree s':>10}{'ms/part/species':>17}")
    for r in red:
        print(f"{r['box']:>4}{r['species']:>9}{r['items']:>7}{r['accumulate_seconds']:>14.3f}"
              f"{r['tree_reduce_seconds']:>10.3f}{r['tree_reduce_ms_per_part_species']:>17.2f}")
    path = ROOT / "benchmarks" / "results" / "bench_ray.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"quick": args.quick, "load_average": load, "cpus": os.cpu_count(),
                                "executors": ex, "reduction": red}, indent=1) + "\n")


if __name__ == "__main__":
    main()
