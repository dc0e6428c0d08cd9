"""Throughput of ``mrepo serve``: push/pull through the server versus directly to a local store,
and requests per second for small-object reads with several concurrent clients.

    .venv/bin/python benchmarks/bench_server.py [--species 6] [--box 48] [--clients 8] [--seconds 5]

The server runs as a subprocess (uvicorn, one process) on 127.0.0.1 over a local folder.
Prints a table and writes benchmarks/results/bench_server.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from mrepo.api import add_token
from mrepo.graph import DataSource, Item, ParticleTable, Population, RawData, Repository, Species, clone, push

LAUNCH = ("import sys, uvicorn; from mrepo.api import create_app; "
          "uvicorn.run(create_app(sys.argv[1], sys.argv[2], access_log=False), host='127.0.0.1', "
          "port=int(sys.argv[3]), log_level='warning', access_log=False)")


def population(repo: Repository, n_species: int, box: int, n_items: int = 20) -> Population:
    """Items with small models, and species with (box³ float32) half-maps and masks."""
    rng = np.random.default_rng(0)
    items = []
    for i in range(n_items):
        raw = rng.integers(0, 255, 4096, dtype=np.uint8).tobytes()
        h = repo.objects.put_blob(raw)
        shifts = repo.objects.put_array(rng.normal(size=(40, 2)).astype(np.float32))
        items.append(Item("frames", f"m{i:03d}", RawData(h, len(raw), stored=True), {"pixel_size": 1.0},
                          {"global_shifts": shifts}))
    source = DataSource("grid", {it.key: it.save(repo.objects) for it in items})
    species = {}
    for s in range(n_species):
        n = 500
        table = ParticleTable.build(np.arange(n) + 10_000 * s, [items[i % n_items].key for i in range(n)],
                                    rng.uniform(0, 4000, (n, 3)), rng.uniform(-180, 180, (n, 3)), 1 + np.arange(n) % 2)
        maps = [repo.objects.put_array(rng.normal(size=(box, box, box)).astype(np.float32)) for _ in range(3)]
        species[f"s{s}"] = Species(f"s{s}", 150.0, "C1", 1.0, box, *maps, table.save(repo.objects)).save(repo.objects)
    return Population("bench", {"grid": source.save(repo.objects)}, species)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(root: Path, tokens: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", LAUNCH, str(root), str(tokens), str(port)])
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                return proc, base
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise TimeoutError("server did not start")


def timed(fn) -> float:  # noqa: ANN001
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def read_rps(base: str, token: str, hashes: list[str], clients: int, seconds: float) -> tuple[float, float]:
    """(requests per second, median latency ms) for GET /repo/objects/<hash> from ``clients`` threads."""
    counts = [0] * clients
    latencies: list[list[float]] = [[] for _ in range(clients)]
    stop = time.monotonic() + seconds

    def worker(k: int) -> None:
        rnd = random.Random(k)
        with httpx.Client(headers={"Authorization": f"Bearer {token}"}) as c:
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                r = c.get(f"{base}/repo/objects/{rnd.choice(hashes)}")
                latencies[k].append(time.perf_counter() - t0)
                assert r.status_code == 200
                counts[k] += 1

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    return sum(counts) / elapsed, 1000 * float(np.median([x for lat in latencies for x in lat]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--species", type=int, default=6)
    ap.add_argument("--box", type=int, default=48)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mrepo-bench-server-"))
    src = Repository.init(str(tmp / "src"))
    src.commit(population(src, args.species, args.box), message="bench", branch="dev", author="b",
               time="2025-01-01T00:00:00Z")
    Repository.init(str(tmp / "served")).close()
    token = add_token(tmp / "tokens.toml", "bench", "write")
    proc, base = start_server(tmp / "served", tmp / "tokens.toml")
    opts = {"token": token}
    try:
        Repository.init(str(tmp / "direct")).close()
        t_push_direct = timed(lambda: push(src, str(tmp / "direct"), "dev"))
        holder = {}
        t_push_server = timed(lambda: holder.setdefault("stats", push(src, base + "/repo", "dev", options=opts)))
        stats = holder["stats"]
        total_mb = stats.bytes / 1e6
        t_pull_direct = timed(lambda: clone(str(tmp / "direct"), str(tmp / "pull-direct")))
        t_pull_server = timed(lambda: clone(base + "/repo", str(tmp / "pull-server"), src_options=opts))
        records = [e.key.removeprefix("objects/").replace("/", "") for e in
                   Repository.open(str(tmp / "served")).storage.backend.list("objects/")]
        rps, latency = read_rps(base, token, records, args.clients, args.seconds)
        rps1, latency1 = read_rps(base, token, records, 1, min(args.seconds, 3.0))
    finally:
        proc.kill()
        proc.wait()
    n_objects = stats.records + stats.blobs + stats.arrays
    result = {
        "setup": {"species": args.species, "box": args.box, "bytes": stats.bytes, "objects": n_objects,
                  "clients": args.clients, "cpu_count": __import__("os").cpu_count(),
                  "python": platform.python_version()},
        "push": {"direct_s": t_push_direct, "server_s": t_push_server,
                 "direct_MBps": total_mb / t_push_direct, "server_MBps": total_mb / t_push_server,
                 "ratio_server_over_direct_time": t_push_server / t_push_direct},
        "pull": {"direct_s": t_pull_direct, "server_s": t_pull_server,
                 "direct_MBps": total_mb / t_pull_direct, "server_MBps": total_mb / t_pull_server,
                 "ratio_server_over_direct_time": t_pull_server / t_pull_direct},
        "small_reads": {"clients": args.clients, "rps": rps, "median_ms": latency, "rps_1_client": rps1,
                        "median_ms_1_client": latency1},
    }
    out = Path(__file__).parent / "results" / "bench_server.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"payload: {total_mb:.1f} MB in {n_objects} objects ({args.species} species, box {args.box})")
    print(f"{'operation':<12}{'direct s':>10}{'server s':>10}{'direct MB/s':>13}{'server MB/s':>13}{'time ratio':>12}")
    for name in ("push", "pull"):
        r = result[name]
        print(f"{name:<12}{r['direct_s']:>10.2f}{r['server_s']:>10.2f}{r['direct_MBps']:>13.1f}"
              f"{r['server_MBps']:>13.1f}{r['ratio_server_over_direct_time']:>12.2f}")
    s = result["small_reads"]
    print(f"small-object GETs: {s['rps']:.0f} req/s with {s['clients']} clients (median {s['median_ms']:.1f} ms), "
          f"{s['rps_1_client']:.0f} req/s with 1 client (median {s['median_ms_1_client']:.1f} ms)")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
