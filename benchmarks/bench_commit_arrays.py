"""Commit N arrays of S³ float32 (default 200 of 64³): mrepo versus icechunk, on the same
local disk and the same moto S3 server.

mrepo: ``put_arrays`` (Zarr v3, zstd level 1) + a record referencing them + a commit.
icechunk: ``Repository.create`` on local_filesystem_storage / s3_storage, a writable
session, one zarr array per input (one chunk per array, zstd level 1), ``session.commit``.

Usage: .venv/bin/python benchmarks/bench_commit_arrays.py [--quick] [--n 200] [--side 64]
Writes benchmarks/results/bench_commit_arrays.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
BUCKET = "bench-commit"


def mrepo_commit(url: str, arrays: list[np.ndarray]) -> float:
    from mrepo.graph import Population, Repository
    from mrepo.store import array_ref

    repo = Repository.init(url)
    t0 = time.perf_counter()
    hashes = repo.objects.put_arrays(arrays)
    holder = repo.objects.put_record("bench-arrays", {"arrays": [array_ref(h) for h in hashes]})
    repo.commit(Population("bench", metadata={"arrays": {"@record": holder}}), message="arrays")
    elapsed = time.perf_counter() - t0
    repo.close()
    return elapsed


def icechunk_commit(storage, arrays: list[np.ndarray]) -> float:
    import icechunk
    import zarr
    from zarr.codecs import ZstdCodec

    repo = icechunk.Repository.create(storage)
    t0 = time.perf_counter()
    session = repo.writable_session("main")
    root = zarr.group(store=session.store)
    for i, a in enumerate(arrays):
        z = root.create_array(f"a{i:04d}", shape=a.shape, dtype=a.dtype, chunks=a.shape,
                              compressors=[ZstdCodec(level=1)], fill_value=0.0)
        z[...] = a
    session.commit("arrays")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="number of arrays")
    ap.add_argument("--side", type=int, default=64, help="array side (S³ float32)")
    ap.add_argument("--quick", action="store_true", help="50 arrays of 32³")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    if args.quick:
        args.n, args.side = 50, 32
    import icechunk
    from _moto import start_moto

    server, endpoint = start_moto(BUCKET)
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=(args.side,) * 3).astype(np.float32) for _ in range(args.n)]
    tmp = Path(tempfile.mkdtemp(prefix="bench-commit-"))
    rows = []
    try:
        for _ in range(args.repeat):
            tag = uuid.uuid4().hex[:8]
            local_m = mrepo_commit(str(tmp / f"mrepo-{tag}"), arrays)
            local_i = icechunk_commit(icechunk.local_filesystem_storage(str(tmp / f"ic-{tag}")), arrays)
            s3_m = mrepo_commit(f"s3://{BUCKET}/mrepo-{tag}", arrays)
            s3_i = icechunk_commit(icechunk.s3_storage(
                bucket=BUCKET, prefix=f"ic-{tag}", region="us-east-1", endpoint_url=endpoint, allow_http=True,
                access_key_id="bench", secret_access_key="bench", force_path_style=True), arrays)
            rows.append({"local": {"mrepo_s": local_m, "icechunk_s": local_i},
                         "s3": {"mrepo_s": s3_m, "icechunk_s": s3_i}})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        server.stop()

    best = {where: {k: min(r[where][k] for r in rows) for k in ("mrepo_s", "icechunk_s")} for where in ("local", "s3")}
    print(f"commit of {args.n} arrays of {args.side}³ float32 ({args.n * args.side ** 3 * 4 / 2**20:.0f} MiB), "
          f"icechunk {icechunk.__version__}")
    print(f"{'storage':8} {'mrepo (s)':>10} {'icechunk (s)':>13} {'icechunk/mrepo':>15}")
    for where, b in best.items():
        b["speedup"] = b["icechunk_s"] / b["mrepo_s"]
        print(f"{where:8} {b['mrepo_s']:10.2f} {b['icechunk_s']:13.2f} {b['speedup']:15.2f}")
    RESULTS.mkdir(exist_ok=True)
    out = {"n": args.n, "side": args.side, "icechunk_version": icechunk.__version__, "best": best, "runs": rows}
    (RESULTS / "bench_commit_arrays.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
