"""Reading a tilt series for refinement: mrepo's lazy, verified, normalised reader vs reading it whole.

Workload: one tilt series of ``--tilts`` images of ``--size``² float32 pixels (one MRC stack, in
place), and ``--particles`` particle regions of ``--patch``² pixels in every tilt — what a worker
extracts. Modes, each in a fresh process (time and memory after the imports; memory = tracemalloc's peak
of allocations, and the VmHWM rise, which also counts touched memory-mapped file pages):

- ``mrcfile``: the peer — ``mrcfile.read`` of the whole stack, then per-tilt mean/std normalisation
  and inversion in numpy, then the patches (what a reader without lazy access does);
- ``mrepo-lazy``: :func:`mrepo.workers.raw_data.open_exposures` (streamed BLAKE3 verification,
  memory-mapped statistics pass) and ``region()`` reads of the patches only;
- ``mrepo-full``: :func:`mrepo.workers.raw_data.read_exposures` (the whole normalised stack, as the
  refinement worker uses it today).

    .venv/bin/python benchmarks/bench_raw_read.py                 # table + benchmarks/results/bench_raw_read.json
    .venv/bin/python benchmarks/bench_raw_read.py --tilts 41 --size 2048
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _centres(args: argparse.Namespace) -> np.ndarray:
    rng = np.random.default_rng(0)
    half = args.patch // 2
    return rng.integers(half, args.size - half, (args.particles, 2))


def run_mode(args: argparse.Namespace) -> dict:
    """Run one mode in this process; returns seconds, patches checksum and max RSS (MiB)."""
    import mrcfile

    from mrepo.graph import Item, RawData, Repository
    from mrepo.store import hash_file
    from mrepo.workers.raw_data import open_exposures, read_exposures

    path = Path(args.stack)
    centres = _centres(args)
    half = args.patch // 2
    base = _status_mib("VmRSS")
    tracemalloc.start()  # numpy's allocations (all three modes hold their arrays in numpy)
    t0 = time.perf_counter()  # imports excluded
    total = 0.0
    if args.mode == "mrcfile":
        data = mrcfile.read(path).astype(np.float32)
        for i in range(len(data)):
            data[i] = -(data[i] - data[i].mean()) / data[i].std()
        for i in range(len(data)):
            for x, y in centres:
                total += float(data[i, y - half:y + half, x - half:x + half].sum())
    else:
        repo = Repository.init(f"memory://bench-raw-{time.time_ns()}")
        item = Item("tilts", "ts", RawData(hash_file(path), path.stat().st_size, uri=path.resolve().as_uri()))
        if args.mode == "mrepo-lazy":
            ex = open_exposures(repo.objects, item, "dark")
            for i in range(ex.n):
                for x, y in centres:
                    total += float(ex.region(i, slice(y - half, y + half), slice(x - half, x + half)).sum())
        else:
            data = read_exposures(repo.objects, item, "dark").numpy()
            for i in range(len(data)):
                for x, y in centres:
                    total += float(data[i, y - half:y + half, x - half:x + half].sum())
    seconds = time.perf_counter() - t0
    # VmHWM: this process's peak resident memory (ru_maxrss would carry the parent's peak across exec)
    rss = _status_mib("VmHWM")
    allocated = tracemalloc.get_traced_memory()[1] / 2**20
    return {"mode": args.mode, "seconds": seconds, "checksum": total, "max_rss_MiB": rss,
            "rss_above_imports_MiB": rss - base, "peak_allocated_MiB": allocated}


def _status_mib(field: str) -> float:
    status = Path("/proc/self/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith(field + ":")) / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tilts", type=int, default=41)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--particles", type=int, default=200)
    p.add_argument("--patch", type=int, default=192)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    p.add_argument("--stack", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.mode:
        print(json.dumps(run_mode(args)))
        return
    from mrepo.io.mrc import write_mrc

    with tempfile.TemporaryDirectory() as d:
        stack = Path(d) / "ts.mrcs"
        rng = np.random.default_rng(1)
        data = rng.poisson(19.0, (args.tilts, args.size, args.size)).astype(np.float32)
        write_mrc(stack, data, 2.0, volume=False)
        del data
        size_mib = stack.stat().st_size / 2**20
        rows = []
        for mode in ("mrcfile", "mrepo-lazy", "mrepo-full"):
            cmd = [sys.executable, __file__, "--mode", mode, "--stack", str(stack), "--tilts", str(args.tilts),
                   "--size", str(args.size), "--particles", str(args.particles), "--patch", str(args.patch)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    peer = rows[0]
    print(f"tilt series {args.tilts} x {args.size}² float32 ({size_mib:.0f} MiB), {args.particles} patches of "
          f"{args.patch}² per tilt")
    print(f"{'mode':12} {'seconds':>8} {'peak allocated MiB':>19} {'RSS above imports':>18} {'time/peer':>10} "
          f"{'alloc/peer':>11}")
    for r in rows:
        r["time_ratio"] = r["seconds"] / peer["seconds"]
        r["allocated_ratio"] = r["peak_allocated_MiB"] / peer["peak_allocated_MiB"]
        print(f"{r['mode']:12} {r['seconds']:8.2f} {r['peak_allocated_MiB']:19.1f} {r['rss_above_imports_MiB']:18.0f} "
              f"{r['time_ratio']:10.2f} {r['allocated_ratio']:11.2f}")
    print("RSS counts the memory-mapped file pages the statistics pass touched (clean page cache, reclaimable);"
          " peak allocated is what the process itself holds.")
    result = {"workload": {**{k: getattr(args, k) for k in ("tilts", "size", "particles", "patch")},
                           "stack_MiB": size_mib}, "rows": rows, "python": platform.python_version(),
              "machine": platform.machine()}
    out = ROOT / "benchmarks/results/bench_raw_read.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
