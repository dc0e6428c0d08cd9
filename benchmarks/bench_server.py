"""Throughput of ``mrepo serve`` (batch protocol) versus the same store directly, small reads, and
server memory under many concurrent readers.

    .venv/bin/python benchmarks/bench_server.py [--items 2000] [--arrays 3] [--array-mb 64]
                                                [--clients 8] [--load-clients 64] [--seconds 5] [--repeat 3]

Two payloads, each pushed and then cloned (pulled) directly (local folder to local folder) and
through a server (uvicorn subprocess on 127.0.0.1 over a local folder, batch protocol), ``--repeat``
times with fresh targets, alternating which goes first; the best time of each is compared (a shared machine
is noisy), and beside it the median over repetitions of each one's server/direct ratio ("paired": the two
run back to back, so a moment when the whole machine is fast or slow moves both; on this virtual machine a
page the host has to fault in again costs two to three times a warm one, and which transfer meets such
pages changes from run to run, so a best time can be one path's lucky moment):

- ``small``: many small objects: ``--items`` items, each with a 4 KiB raw blob and a small model
  array, in one data source (about 3 objects per item);
- ``large``: ``--arrays`` species maps of ``--array-mb`` MiB each (float32 volumes).

The same stored files cross either way (no re-encoding), with the same checks: the receiving side
verifies everything in full (records by hash, form and schema; blobs by hash; arrays by each chunk's
digest, decoding and the array's hash), the direct push into a local folder as the server does on
upload and every clone on receipt (issue 13 item 1; until 2026-11-29 a direct push checked array
chunks against their digests only, and a ``push checked`` arm timed the full check beside it).

Before the timed transfers each fresh target (served and direct alike) receives an untimed warm-up push
(``warmup`` branch: one array of ``--array-mb`` MiB, a blob and a few records), and the ``warmup`` branch is
then deleted on both (through the server for the served one), so the timed clones carry only ``dev``. The
timed push thus meets a server that has handled an upload of that size before, as a long-running
``mrepo serve`` has: its lazily imported modules, thread pool and heap are in place, as they are in this
long-lived benchmark process for the direct push. Without it, each fresh server process grew its heap
during the timed push, and on this virtual machine a fresh page costs a zero-fill and a host fault: 20-40 %
of the server's CPU (perf: ``clear_page_erms``), a cost a long-running server pays once (it keeps freed
memory, :func:`mrepo.store.heap.keep_freed_memory`). Until 2026-11-30 the warm-up array was 2 MiB.

Wall time is the goal's measure; CPU seconds (this process plus the server process, median of the
runs) are printed beside it, as a load-robust view of the work each path does.
Then requests/s for small-object GETs with ``--clients`` threads, and the server's resident memory
(VmRSS, sampled every 50 ms) before and during ``--load-clients`` concurrent readers (for twice
``--seconds``) that fetch records and the files of the large arrays (chunks of up to 4 MiB).
Prints a table and writes benchmarks/results/bench_server.json.
Goal: push and pull through the server within 1.5x of direct (ideally 1.2x).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
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
from mrepo.graph import (
    DataSource,
    Item,
    ParticleTable,
    Population,
    RawData,
    Repository,
    Species,
    clone,
    push,
)

#: The server as ``mrepo serve`` runs it (mrepo.api.serving: uvicorn, h11 with the header deadline).
LAUNCH = ("import sys; from mrepo.api import create_app; from mrepo.api.serving import run; "
          "run(create_app(sys.argv[1], sys.argv[2], access_log=False), '127.0.0.1', int(sys.argv[3]))")


def small_population(repo: Repository, n_items: int) -> Population:
    """``n_items`` items, each with a 4 KiB raw blob and a (40, 2) float32 model array."""
    rng = np.random.default_rng(0)
    items = []
    for i in range(n_items):
        raw = rng.integers(0, 255, 4096, dtype=np.uint8).tobytes()
        h = repo.objects.put_blob(raw)
        shifts = repo.objects.put_array(rng.normal(size=(40, 2)).astype(np.float32))
        items.append(Item("frames", f"m{i:05d}", RawData(h, len(raw), stored=True), {"pixel_size": 1.0},
                          {"global_shifts": shifts}))
    source = DataSource("grid", {it.key: it.save(repo.objects) for it in items})
    return Population("small", {"grid": source.save(repo.objects)}, {})


def large_population(repo: Repository, n_arrays: int, mb: int, seed: int = 1) -> Population:
    """One species whose half-maps/mask (and further species) are ``mb`` MiB float32 volumes."""
    rng = np.random.default_rng(seed)
    box = round((mb * 2 ** 20 / 4) ** (1 / 3))
    raw = rng.integers(0, 255, 4096, dtype=np.uint8).tobytes()
    item = Item("frames", "m0", RawData(repo.objects.put_blob(raw), len(raw), stored=True), {"pixel_size": 1.0}, {})
    source = DataSource("grid", {item.key: item.save(repo.objects)})
    maps = [repo.objects.put_array(rng.normal(size=(box, box, box)).astype(np.float32)) for _ in range(n_arrays)]
    species = {}
    for s in range(0, n_arrays, 3):
        trio = (maps[s:s + 3] * 3)[:3]
        table = ParticleTable.build(np.arange(10) + 100 * s, [item.key] * 10, rng.uniform(0, 400, (10, 3)),
                                    rng.uniform(-180, 180, (10, 3)), 1 + np.arange(10) % 2)
        species[f"s{s}"] = Species(f"s{s}", 150.0, "C1", 1.0, box, *trio, table.save(repo.objects)).save(repo.objects)
    return Population("large", {"grid": source.save(repo.objects)}, species)


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


def rss_mb(pid: int) -> float:
    """Resident set size of a process in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def sample_rss(pid: int, stop: threading.Event, out: list[float]) -> None:
    """Append the RSS of ``pid`` (MiB) to ``out`` every 50 ms until ``stop`` is set."""
    while not stop.is_set():
        out.append(rss_mb(pid))
        time.sleep(0.05)


def cpu_s(pid: int | None = None) -> float:
    """CPU seconds (user + system) used so far by this process (all threads), or by process ``pid``."""
    if pid is None:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(fn, server_pid: int | None = None) -> tuple[float, float]:  # noqa: ANN001
    """(wall seconds, CPU seconds of this process plus the server's) of ``fn()``."""
    cpu0, srv0, start = cpu_s(), cpu_s(server_pid) if server_pid else 0.0, time.perf_counter()
    fn()
    wall = time.perf_counter() - start
    return wall, cpu_s() - cpu0 + ((cpu_s(server_pid) - srv0) if server_pid else 0.0)


def read_rps(base: str, token: str, paths: list[str], clients: int, seconds: float) -> tuple[float, float]:
    """(requests per second, median latency ms) for GETs of ``paths`` from ``clients`` threads."""
    counts = [0] * clients
    latencies: list[list[float]] = [[] for _ in range(clients)]
    stop = time.monotonic() + seconds

    def worker(k: int) -> None:
        rnd = random.Random(k)
        with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                r = c.get(f"{base}{rnd.choice(paths)}")
                latencies[k].append(time.perf_counter() - t0)
                assert r.status_code == 200, r.status_code
                counts[k] += 1

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    return sum(counts) / elapsed, 1000 * float(np.median([x for lat in latencies for x in lat]))


def warmup_source(tmp: Path, mb: int = 2) -> Repository:
    """A repository (branch ``warmup``: one ``mb`` MiB array, a blob, a few records) pushed, untimed,
    to every fresh target before the timed transfers (then that branch is deleted there)."""
    repo = Repository.init(str(tmp / "warmup-src"))
    repo.commit(large_population(repo, 1, mb, seed=7), message="warm-up", branch="warmup", author="b",
                time="2025-01-01T00:00:00Z")
    return repo


def maintainer_token(tmp: Path) -> str:
    """A maintain-role token in ``tmp``'s token file (made once)."""
    path = tmp / "maintainer.token"
    if not path.exists():
        path.write_text(add_token(tmp / "tokens.toml", "bench-maintainer", "maintain"))
    return path.read_text()


def transfer_pair(tmp: Path, name: str, src: Repository, token: str, repeat: int, warm: Repository) -> dict:
    """Push then clone ``src``'s ``dev`` directly and through a server, ``repeat`` times with fresh targets
    (a fresh served repository and server each time, each target first given ``warm``'s ``warmup`` branch,
    untimed), alternating direct and server; the best wall
    time of each, and the median CPU seconds (client and server together: a steadier measure than
    wall time on a loaded machine, where a lucky moment makes a best time)."""
    opts = {"token": token}
    maintainer = maintainer_token(tmp)  # before any server starts: servers read the token file then
    ops = ("push_direct", "push_server", "pull_direct", "pull_server")
    times: dict[str, list[float]] = {k: [] for k in ops}
    cpu: dict[str, list[float]] = {k: [] for k in ops}
    holder: dict = {}
    for r in range(repeat):
        tag = f"{name}-{r}"
        Repository.init(str(tmp / f"{tag}-served")).close()
        proc, base = start_server(tmp / f"{tag}-served", tmp / "tokens.toml")
        try:
            Repository.init(str(tmp / f"{tag}-direct")).close()
            push(warm, str(tmp / f"{tag}-direct"), "warmup")
            push(warm, base + "/repo", "warmup", options=opts)
            admin = {"token": maintainer}  # deleting a branch on a server takes the maintain role
            for target, options in ((str(tmp / f"{tag}-direct"), None), (base + "/repo", admin)):
                with Repository.open(target, options) as done:
                    done.delete_branch("warmup")  # the timed clones carry dev only
            steps = {
                "push_direct": lambda t=tag: timed(lambda: push(src, str(tmp / f"{t}-direct"), "dev")),
                "push_server": lambda b=base, p=proc: timed(lambda: holder.update(s=push(src, b + "/repo", "dev", options=opts)),
                                                    p.pid),
                "pull_direct": lambda t=tag: timed(lambda: clone(str(tmp / f"{t}-direct"), str(tmp / f"{t}-pull-direct"))),
                "pull_server": lambda t=tag, b=base, p=proc: timed(lambda: clone(b + "/repo", str(tmp / f"{t}-pull-server"),
                                                                         src_options=opts), p.pid),
            }
            # Direct first in even repetitions, the server first in odd ones: whichever runs first meets
            # the memory the last repetition freed, the other fresh pages (on this VM a fresh page costs
            # a host fault: the same push took 0.23 s or 0.43 s by its place in the order).
            order = ops if r % 2 == 0 else ("push_server", "push_direct", "pull_server", "pull_direct")
            for k in order:
                wall, seconds = steps[k]()
                times[k].append(wall)
                cpu[k].append(seconds)
        finally:
            proc.kill()
            proc.wait()
        if r:  # the first repetition's repositories serve the read tests; the others go at once, so that
            # every repetition meets the page cache as the first did (a machine short of free memory
            # reclaims cache for each fresh page, which costs the server and the direct path alike)
            for suffix in ("served", "direct", "pull-direct", "pull-server"):
                shutil.rmtree(tmp / f"{tag}-{suffix}", ignore_errors=True)
    stats = holder["s"]
    best = {k: min(v) for k, v in times.items()}
    mid = {k: float(np.median(v)) for k, v in cpu.items()}
    paired = {op: float(np.median([s / d for s, d in zip(times[f"{op}_server"], times[f"{op}_direct"])]))
              for op in ("push", "pull")}
    return {"objects": stats.records + stats.blobs + stats.arrays, "MB": stats.bytes / 1e6, "runs": times,
            "cpu_runs": cpu,
            **{op: {"direct_s": best[f"{op}_direct"], "server_s": best[f"{op}_server"],
                    "ratio": best[f"{op}_server"] / best[f"{op}_direct"], "paired_ratio": paired[op],
                    "direct_cpu_s": mid[f"{op}_direct"], "server_cpu_s": mid[f"{op}_server"],
                    "cpu_ratio": mid[f"{op}_server"] / mid[f"{op}_direct"]} for op in ("push", "pull")}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--arrays", type=int, default=3)
    ap.add_argument("--array-mb", type=int, default=64)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--load-clients", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--repeat", type=int, default=4,
                    help="Transfers per payload (best time kept; even: as many with the server first as direct first).")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mrepo-bench-server-"))
    try:
        run_all(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # about 2 GiB of repositories per run


def run_all(args: argparse.Namespace, tmp: Path) -> None:
    """Every measurement of the benchmark, in ``tmp``; prints the table and writes the JSON."""
    small = Repository.init(str(tmp / "small-src"))
    small.commit(small_population(small, args.items), message="small", branch="dev", author="b",
                 time="2025-01-01T00:00:00Z")
    large = Repository.init(str(tmp / "large-src"))
    large.commit(large_population(large, args.arrays, args.array_mb), message="large", branch="dev", author="b",
                 time="2025-01-01T00:00:00Z")
    token = add_token(tmp / "tokens.toml", "bench", "write")
    warm = warmup_source(tmp, args.array_mb)
    results: dict = {}
    for name, src in (("small", small), ("large", large)):
        results[name] = transfer_pair(tmp, name, src, token, args.repeat, warm)
        proc, base = start_server(tmp / f"{name}-0-served", tmp / "tokens.toml")
        try:
            if name == "small":
                served = Repository.open(str(tmp / "small-0-served"))
                paths = ["/repo/objects/" + e.key.removeprefix("objects/").replace("/", "")
                         for e in served.storage.backend.list("objects/")]
                rps, lat = read_rps(base, token, paths, args.clients, args.seconds)
                rps1, lat1 = read_rps(base, token, paths, 1, min(args.seconds, 3.0))
                results["small_reads"] = {"clients": args.clients, "rps": rps, "median_ms": lat,
                                          "rps_1_client": rps1, "median_ms_1_client": lat1}
            else:
                served = Repository.open(str(tmp / "large-0-served"))
                arrays = sorted({e.key.split("/")[1] for e in served.storage.backend.list("arrays/")})
                chunk_paths = [f"/repo/{e.key}" for e in served.storage.backend.list("arrays/")]
                chunk_paths += ["/repo/objects/" + e.key.removeprefix("objects/").replace("/", "")
                                for e in served.storage.backend.list("objects/")]
                idle = rss_mb(proc.pid)
                peak = [idle]
                stop = threading.Event()

                sampler = threading.Thread(target=sample_rss, args=(proc.pid, stop, peak))
                sampler.start()
                try:
                    rps64, lat64 = read_rps(base, token, chunk_paths, args.load_clients, 2 * args.seconds)
                finally:
                    stop.set()
                    sampler.join()
                results["read_load"] = {"clients": args.load_clients, "arrays": len(arrays),
                                        "files": len(chunk_paths), "rps": rps64, "median_ms": lat64,
                                        "rss_idle_MiB": idle, "rss_peak_MiB": max(peak)}
        finally:
            proc.kill()
            proc.wait()
    results["setup"] = {"items": args.items, "arrays": args.arrays, "array_MiB": args.array_mb, "repeat": args.repeat,
                        "load_average": os.getloadavg(),
                        "cpu_count": os.cpu_count(), "python": platform.python_version()}
    out = Path(__file__).parent / "results" / "bench_server.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"{'payload':<8}{'objects':>9}{'MB':>8}{'op':>6}{'direct s':>10}{'server s':>10}{'server/direct':>15}"
          f"{'paired':>8}{'CPU direct':>12}{'CPU server':>12}{'CPU ratio':>11}")
    for name in ("small", "large"):
        r = results[name]
        for op in ("push", "pull"):
            print(f"{name:<8}{r['objects']:>9}{r['MB']:>8.1f}{op:>6}{r[op]['direct_s']:>10.2f}"
                  f"{r[op]['server_s']:>10.2f}{r[op]['ratio']:>15.2f}{r[op]['paired_ratio']:>8.2f}"
                  f"{r[op]['direct_cpu_s']:>12.2f}{r[op]['server_cpu_s']:>12.2f}{r[op]['cpu_ratio']:>11.2f}")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; server/direct: best times; paired: median "
          "of each repetition's server/direct; CPU: median seconds, client and server")
    s = results["small_reads"]
    print(f"small-object GETs: {s['rps']:.0f} req/s with {s['clients']} clients (median {s['median_ms']:.1f} ms), "
          f"{s['rps_1_client']:.0f} req/s with 1 client (median {s['median_ms_1_client']:.1f} ms)")
    load = results["read_load"]
    print(f"{load['clients']} clients reading array files: {load['rps']:.0f} req/s; server RSS "
          f"{load['rss_idle_MiB']:.0f} MiB idle, {load['rss_peak_MiB']:.0f} MiB peak")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
