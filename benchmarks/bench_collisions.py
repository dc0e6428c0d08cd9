"""Benchmark of the pull-request collision check (mrepo.graph.collisions.check_collisions).

Workload: ``--items`` fields of view (default 1,000), each with E existing particles of
species A (diameter 150 Å) and ``--incoming`` (default 100) particles of an incoming
species B (diameter 100 Å), uniformly random in a 4,000 × 4,000 × 1,000 Å tilt-series
volume (or in 4,000 × 4,000 Å frame series with ``--kind frames``); overlap factor 0.5.
E runs over ``--existing`` (default 250 500 1000 2000). Timed: the whole check (trees,
collisions, duplicates, reclassification matching, report), best of ``--repeats``, on one
core (BLAS/OpenMP threads pinned to 1; scipy's KD-tree is single-threaded).

    .venv/bin/python benchmarks/bench_collisions.py            # table + benchmarks/results/bench_collisions.json
    .venv/bin/python benchmarks/bench_collisions.py --existing 1000 --kind tilts --end-to-end   # + repository check
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from mrepo.graph import ParticleTable, Species  # noqa: E402
from mrepo.graph.collisions import check_collisions  # noqa: E402

H = "0" * 64
BOX = np.array([4000.0, 4000.0, 1000.0])


def particles(rng: np.random.Generator, keys: list[str], per_item: int, first_id: int, kind: str) -> ParticleTable:
    n = len(keys) * per_item
    coords = rng.uniform(0.0, BOX, (n, 1, 3))
    if kind == "frames":
        coords[..., 2] = 0.0
    item = np.repeat(np.arange(len(keys)), per_item)
    return ParticleTable.build(np.arange(first_id, first_id + n), np.asarray(keys, dtype=object)[item], coords,
                               np.zeros_like(coords), 1 + (np.arange(n) % 2))


def run_case(n_items: int, n_existing: int, n_incoming: int, kind: str, repeats: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    keys = [f"{i:064x}" for i in range(n_items)]
    kinds = {k: kind for k in keys}
    existing = {"A": (Species("A", 150.0, "C1", 1.0, 16, H, H, H, H), particles(rng, keys, n_existing, 0, kind))}
    incoming = {"B": (Species("B", 100.0, "C1", 1.0, 16, H, H, H, H),
                      particles(rng, keys, n_incoming, 10**9, kind))}
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        report = check_collisions(incoming, existing, kinds, overlap_factor=0.5)
        times.append(time.perf_counter() - t0)
    return {"kind": kind, "items": n_items, "existing_per_item": n_existing, "incoming_per_item": n_incoming,
            "particles": n_items * (n_existing + n_incoming), "seconds_best": min(times),
            "seconds_all": times, "collisions": len(report.collisions), "duplicates": len(report.duplicates)}


def run_end_to_end(n_items: int, n_existing: int, n_incoming: int, seed: int) -> dict:
    """``check_pull`` on a ``memory://`` repository: loading records, tables and items included."""
    import uuid

    from mrepo.graph import DataSource, Item, Population, RawData, Repository
    from mrepo.graph.pulls import check_pull, open_pull

    rng = np.random.default_rng(seed)
    repo = Repository.init(f"memory://bench-{uuid.uuid4().hex[:8]}")
    items = {}
    for i in range(n_items):
        raw = f"item {i}".encode()
        key = repo.objects.put_blob(raw)
        items[key] = Item("tilts", f"ts{i}", RawData(key, len(raw), stored=True)).save(repo.objects)
    keys = sorted(items)
    vol = repo.objects.put_array(np.ones((4, 4, 4), np.float32))

    def species(name: str, diameter: float, per_item: int, first: int) -> str:
        t = particles(rng, keys, per_item, first, "tilts").save(repo.objects)
        return Species(name, diameter, "C1", 1.0, 4, vol, vol, vol, t).save(repo.objects)

    src = {"grid": DataSource("grid", items).save(repo.objects)}
    repo.commit(Population("pop", src, {"A": species("A", 150.0, n_existing, 0)}), message="base", author="b",
                time="2024-01-01T00:00:00Z")
    repo.create_branch("feature")
    pop = repo.population("feature")
    repo.commit(Population("pop", src, {**pop.species, "B": species("B", 100.0, n_incoming, 10**9)}),
                message="B", branch="feature", author="b", time="2024-01-02T00:00:00Z")
    open_pull(repo, "feature", "main", "bench")
    t0 = time.perf_counter()
    c = check_pull(repo, 1)
    return {"kind": "end-to-end", "items": n_items, "existing_per_item": n_existing, "incoming_per_item": n_incoming,
            "particles": n_items * (n_existing + n_incoming), "seconds_best": time.perf_counter() - t0,
            "collisions": len(c.report.collisions), "duplicates": len(c.report.duplicates)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=1000)
    p.add_argument("--existing", type=int, nargs="+", default=[250, 500, 1000, 2000])
    p.add_argument("--incoming", type=int, default=100)
    p.add_argument("--kind", choices=["tilts", "frames", "both"], default="both",
                   help="both: every size for tilts, plus frames at 1,000 existing")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--end-to-end", action="store_true",
                   help="also time check_pull on a memory:// repository (1,000 existing per item)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_collisions.json"))
    a = p.parse_args()
    cases = [("tilts", e) for e in a.existing] if a.kind in ("tilts", "both") else []
    if a.kind == "frames":
        cases += [("frames", e) for e in a.existing]
    elif a.kind == "both":
        cases.append(("frames", 1000))
    rows = []
    print(f"{'kind':7} {'items':>6} {'existing':>9} {'incoming':>9} {'particles':>10} {'best s':>8} "
          f"{'collisions':>11} {'duplicates':>11}")
    for kind, e in cases:
        r = run_case(a.items, e, a.incoming, kind, a.repeats, seed=e)
        rows.append(r)
        print(f"{kind:7} {r['items']:6d} {e:9d} {a.incoming:9d} {r['particles']:10d} {r['seconds_best']:8.2f} "
              f"{r['collisions']:11d} {r['duplicates']:11d}", flush=True)
    if a.end_to_end:
        r = run_end_to_end(a.items, 1000, a.incoming, seed=7)
        rows.append(r)
        print(f"{'pr check':7} {r['items']:6d} {1000:9d} {a.incoming:9d} {r['particles']:10d} {r['seconds_best']:8.2f} "
              f"{r['collisions']:11d} {r['duplicates']:11d}", flush=True)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "collision check", "goal_seconds": 5.0,
                               "machine": {"python": platform.python_version(), "processor": platform.processor(),
                                           "cpus_visible": os.cpu_count()},
                               "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
