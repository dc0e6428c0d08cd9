"""Push and pull of a population of ~1 GiB (species with 256³ float32 half-maps and particle
tables) to/from a moto S3 server, against raw s3fs put/get of the same files with the same
concurrency; and a push with nothing changed (array bytes sent, goal 0).

mrepo checks every object it transfers while it streams through; raw s3fs only moves bytes.
Raw is s3fs's own ``pipe_file`` / ``cat_file`` with s3fs's and botocore's defaults (``cat_file``
sends a HEAD for the size, then the GET, and botocore checks a CRC32 of every response). mrepo's S3
backend reads an object with one GET and leaves the response CRC out, since it checks every byte
against content hashes anyway. For reference, a raw read done the same way (one ``get_object`` per
file, no response CRC: mrepo's s3fs client) is timed too (``raw_get_1req``, ``ratio_vs_1req``);
the goal is stated against s3fs's defaults.
mrepo sends its content-addressed PUTs unsigned-payload (botocore's ``payload_signing_enabled``
off: no SHA-256 of each body on plain http, as botocore does on https anyway); a raw put with that
option too is timed for reference (``raw_put_unsigned``, ``ratio_vs_unsigned``): the push's own
cost, verification included, against the same requests.
Push and pull both verify every object they move in full: records and blobs by hash, every
array chunk against its digest in the array's canonical zarr.json, and every array's hash
recomputed from its decoded chunks (push since 6be65ff, 2026-11-29, issue 13 item 1; before, it
checked chunk digests only, without decoding). Each side runs
``--repeat`` times, alternating, and the best time of each is compared (the machine is shared).

Usage: .venv/bin/python benchmarks/bench_transfer.py [--gib 1.0] [--quick] [--workers 16] [--repeat 3]
(--quick = --gib 0.25). Writes benchmarks/results/bench_transfer.json (``bench_transfer_<gib>.json``
for a size other than 1 GiB).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import s3fs

RESULTS = Path(__file__).parent / "results"
BUCKET = "bench-transfer"
SIDE = 256


def build_source(url: str, gib: float) -> tuple[str, int]:
    """A local repository with ceil(gib * 8) species (two 256³ float32 half-maps each, a mask
    and 5000 particles); returns (head commit, number of species)."""
    from mrepo.graph import DataSource, Item, ParticleTable, Population, RawData, Repository, Species

    repo = Repository.init(url)
    rng = np.random.default_rng(0)
    n_species = max(1, int(np.ceil(gib * 8)))
    raw = rng.integers(0, 255, 4096, dtype=np.uint8).tobytes()
    item = Item("frames", "fov", RawData(repo.objects.put_blob(raw), len(raw), stored=True), {"pixel_size": 1.0})
    items = {item.key: item.save(repo.objects)}
    species = {}
    for s in range(n_species):
        n = 5000
        table = ParticleTable.build(np.arange(n) + s * n, [item.key] * n, rng.uniform(0, 4000, (n, 3)),
                                    rng.uniform(-180, 180, (n, 3)), 1 + np.arange(n) % 2)
        halves = [repo.objects.put_array(rng.standard_normal((SIDE,) * 3, dtype=np.float32)) for _ in range(2)]
        mask = repo.objects.put_array(np.ones((SIDE,) * 3, np.float32))
        species[f"sp{s:02d}"] = Species(f"sp{s:02d}", 150.0, "C1", 1.0, SIDE, halves[0], halves[1], mask,
                                        table.save(repo.objects)).save(repo.objects)
    head = repo.commit(Population("bench", {"grid": DataSource("grid", items).save(repo.objects)}, species),
                       message="bench population")
    repo.close()
    return head, n_species


def raw_put(fs, root: Path, prefix: str, keys: list[str], workers: int) -> float:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda k: fs.pipe_file(f"{prefix}/{k}", (root / k).read_bytes()), keys))
    return time.perf_counter() - t0


def raw_get(fs, dest: Path, prefix: str, keys: list[str], workers: int, one_request: bool = False) -> float:
    """Seconds to read ``keys`` below ``prefix`` into files below ``dest``: s3fs ``cat_file`` (a HEAD,
    then the GET), or with ``one_request`` a single ``get_object`` per file."""
    from fsspec.asyn import sync

    async def get_object(path: str) -> bytes:
        bucket, key, _ = fs.split_path(path)
        resp = await fs._call_s3("get_object", Bucket=bucket, Key=key)
        async with resp["Body"] as body:
            return await body.read()

    def get(k: str) -> None:
        data = sync(fs.loop, get_object, f"{prefix}/{k}") if one_request else fs.cat_file(f"{prefix}/{k}")
        path = dest / k
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(get, keys))
    return time.perf_counter() - t0


def timed(runs: list[float], stats: dict, name: str, fn) -> None:  # noqa: ANN001
    t0 = time.perf_counter()
    stats[name] = fn()
    runs.append(time.perf_counter() - t0)


def pull_into(path: Path, url: str, head: str, workers: int):  # noqa: ANN201
    """Pull ``url`` into a new repository at ``path``; returns the transfer stats."""
    from mrepo.graph import Repository, pull

    back = Repository.init(str(path))
    stats, _ = pull(back, url, workers=workers)
    assert back.head() == head
    back.close()
    return stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=float, default=1.0, help="population size in GiB of map data")
    ap.add_argument("--quick", action="store_true", help="same as --gib 0.25")
    ap.add_argument("--workers", type=int, default=16, help="parallel transfers (mrepo and raw alike)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each, alternating; the best of each is compared")
    args = ap.parse_args()
    if args.quick:
        args.gib = 0.25

    from _moto import start_moto

    from mrepo.graph import Repository, push
    from mrepo.store.backends import S3Backend

    server, endpoint = start_moto(BUCKET)
    tmp = Path(tempfile.mkdtemp(prefix="bench-transfer-"))
    try:
        src_url = str(tmp / "src")
        t0 = time.perf_counter()
        head, n_species = build_source(src_url, args.gib)
        build_s = time.perf_counter() - t0
        keys = sorted(str(p.relative_to(src_url)) for sub in ("arrays", "objects")
                      for p in (Path(src_url) / sub).rglob("*") if p.is_file() and not p.name.startswith("."))
        total = sum((Path(src_url) / k).stat().st_size for k in keys)

        src = Repository.open(src_url)
        fs = None
        push_runs, raw_put_runs, pull_runs, raw_get_runs, raw_get1_runs = [], [], [], [], []
        raw_put_us_runs: list[float] = []
        fs_us = None
        stats = {}
        for rep in range(args.repeat):  # alternate which side goes first; the machine's load varies
            tag = uuid.uuid4().hex[:8]
            dst_url, raw_prefix = f"s3://{BUCKET}/mrepo-{tag}", f"{BUCKET}/raw-{tag}"
            Repository.init(dst_url).close()
            fs = fs or s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True)
            fs_us = fs_us or s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True,
                                               config_kwargs={"s3": {"payload_signing_enabled": False}})
            fs_1req = S3Backend(dst_url).fs  # mrepo's client: no response CRC
            steps = {
                "push": lambda u=dst_url: timed(push_runs, stats, "push", lambda: push(src, u, workers=args.workers)),
                "raw_put": lambda p=raw_prefix, f=fs: raw_put_runs.append(raw_put(f, Path(src_url), p, keys, args.workers)),
                "raw_put_unsigned": lambda p=raw_prefix + "-u", f=fs_us: raw_put_us_runs.append(
                    raw_put(f, Path(src_url), p, keys, args.workers)),
                "pull": lambda u=dst_url, r=rep: timed(pull_runs, stats, "pull", lambda: pull_into(tmp / f"back{r}", u,
                                                                                                  head, args.workers)),
                "raw_get": lambda p=raw_prefix, r=rep, f=fs: raw_get_runs.append(
                    raw_get(f, tmp / f"rawget{r}", p, keys, args.workers)),
                "raw_get_1req": lambda p=raw_prefix, r=rep, f=fs_1req: raw_get1_runs.append(
                    raw_get(f, tmp / f"rawget1-{r}", p, keys, args.workers, one_request=True)),
            }
            order = (["push", "raw_put", "raw_put_unsigned", "pull", "raw_get", "raw_get_1req"] if rep % 2 == 0
                     else ["raw_put_unsigned", "raw_put", "push", "raw_get_1req", "raw_get", "pull"])
            for name in order[:3]:
                steps[name]()
            if rep == 0:
                stats["again"] = push(src, dst_url, workers=args.workers)
            for name in order[3:]:
                steps[name]()
            for prefix in (raw_prefix, raw_prefix + "-u", dst_url[len("s3://"):]):  # keep moto's memory flat
                fs.rm(prefix, recursive=True)
            shutil.rmtree(tmp / f"back{rep}", ignore_errors=True)
            shutil.rmtree(tmp / f"rawget{rep}", ignore_errors=True)
            shutil.rmtree(tmp / f"rawget1-{rep}", ignore_errors=True)
        pushed, pulled, again = stats["push"], stats["pull"], stats["again"]
        push_s, raw_put_s, pull_s, raw_get_s, raw_get1_s, raw_put_us_s = (
            min(r) for r in (push_runs, raw_put_runs, pull_runs, raw_get_runs, raw_get1_runs, raw_put_us_runs))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        server.stop()

    mib = total / 2**20
    res = {
        "gib_requested": args.gib, "species": n_species, "files": len(keys), "bytes": total,
        "workers": args.workers, "build_s": build_s, "repeat": args.repeat,
        "checks": {"pull": "records/blobs by hash; arrays: canonical zarr.json, chunk digests, array hash recomputed",
                   "push": "records/blobs by hash; arrays: canonical zarr.json, chunk digests, array hash recomputed"},
        "raw": "s3fs pipe_file / cat_file at s3fs and botocore defaults (cat_file: HEAD + GET per file, "
               "response CRC32 checked); raw_get_1req: one get_object per file, no response CRC (as mrepo reads); "
               "raw_put_unsigned: pipe_file with botocore's s3 payload_signing_enabled off (as mrepo puts objects)",
        "runs_s": {"push": push_runs, "raw_put": raw_put_runs, "raw_put_unsigned": raw_put_us_runs,
                   "pull": pull_runs, "raw_get": raw_get_runs, "raw_get_1req": raw_get1_runs},
        "push": {"mrepo_s": push_s, "raw_s": raw_put_s, "mrepo_bytes": pushed.bytes,
                 "mrepo_MiB_s": pushed.bytes / 2**20 / push_s, "raw_MiB_s": mib / raw_put_s},
        "pull": {"mrepo_s": pull_s, "raw_s": raw_get_s, "mrepo_bytes": pulled.bytes,
                 "mrepo_MiB_s": pulled.bytes / 2**20 / pull_s, "raw_MiB_s": mib / raw_get_s},
        "push_unchanged": {"bytes": again.bytes, "array_bytes": again.array_bytes},
    }
    for op in ("push", "pull"):
        res[op]["ratio"] = res[op]["mrepo_MiB_s"] / res[op]["raw_MiB_s"]
    res["push"]["raw_unsigned_s"] = raw_put_us_s
    res["push"]["ratio_vs_unsigned"] = pushed.bytes / push_s / (total / raw_put_us_s)
    res["pull"]["raw_1req_s"] = raw_get1_s
    res["pull"]["ratio_vs_1req"] = pulled.bytes / pull_s / (total / raw_get1_s)
    print(f"{n_species} species, {len(keys)} files, {mib:.0f} MiB stored; moto S3; {args.workers} workers; "
          f"every object checked in full (push and pull: array content recomputed); "
          f"best of {args.repeat} alternating runs")
    print(f"{'op':6} {'mrepo (s)':>10} {'mrepo MiB/s':>12} {'raw s3fs (s)':>13} {'raw MiB/s':>10} {'ratio':>6}")
    for op in ("push", "pull"):
        r = res[op]
        print(f"{op:6} {r['mrepo_s']:10.2f} {r['mrepo_MiB_s']:12.1f} {r['raw_s']:13.2f} {r['raw_MiB_s']:10.1f} "
              f"{r['ratio']:6.2f}")
    print(f"push against a raw put with unsigned payload, as mrepo puts objects ({raw_put_us_s:.2f} s): "
          f"{res['push']['ratio_vs_unsigned']:.2f}")
    print(f"pull against a raw one-request GET per file without response CRC ({raw_get1_s:.2f} s): "
          f"{res['pull']['ratio_vs_1req']:.2f}")
    print(f"push with nothing changed: {again.array_bytes} array bytes, {again.bytes} bytes in all")
    RESULTS.mkdir(exist_ok=True)
    name = "bench_transfer.json" if args.gib == 1.0 else f"bench_transfer_{args.gib:g}.json"
    (RESULTS / name).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
