"""What checking present objects costs a fetch: a local clone of bench_transfer's population
(``--gib`` of 256³ float32 maps) fetched again (1) with nothing changed (the walk stops at the
present head) and (2) with every record deleted from the clone, so that the walk reaches every
array present there and checks it (:func:`mrepo.store.soundness.array_sound`: since issue 13's
repair, every chunk file against its recorded digest; before, ``zarr.json`` and a listing).
Both stores are local folders (the check reads the destination's files: hot page cache, as
right after a clone). With ``--s3``, also a push to a moto S3 server (own process) and the same
two cases on that side: a push with nothing changed, and a push after every record was deleted
from the bucket (each present array is checked: with the local source, through S3's own checksum of
each chunk, one HEAD per chunk and no download, :mod:`mrepo.store.stored_checksums`; before that
rule its chunks were downloaded). Best of ``--repeat``.

Usage: .venv/bin/python benchmarks/bench_present_check.py [--gib 1.0] [--repeat 3] [--s3]
Writes benchmarks/results/bench_present_check.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--s3", action="store_true")
    args = ap.parse_args()

    from bench_transfer import build_source

    from mrepo.graph import Repository, clone, fetch

    tmp = Path(tempfile.mkdtemp(prefix="mrepo-present-"))
    try:
        head, n_species = build_source(str(tmp / "src"), args.gib)
        t0 = time.perf_counter()
        dst, stats = clone(str(tmp / "src"), str(tmp / "dst"))
        clone_s = time.perf_counter() - t0
        objects = tmp / "dst" / "objects"

        def timed(fn) -> float:  # noqa: ANN001
            t = time.perf_counter()
            fn()
            return time.perf_counter() - t

        noop = [timed(lambda: fetch(dst, "origin")) for _ in range(args.repeat)]
        resume = []
        for _ in range(args.repeat):
            shutil.rmtree(objects)  # records (and the one small blob): every array is reached, present
            dst = Repository.open(str(tmp / "dst"))
            t = time.perf_counter()
            got = fetch(dst, "origin")
            resume.append(time.perf_counter() - t)
            assert got.arrays == 0, got
        out = {"gib": args.gib, "species": n_species, "array_bytes": stats.array_bytes, "clone_s": clone_s,
               "noop_fetch_s": min(noop), "all_arrays_present_fetch_s": min(resume),
               "runs": {"noop": noop, "all_arrays_present": resume}}
        if args.s3:
            out["s3"] = s3_push(Repository.open(str(tmp / "src")), args.repeat, timed)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_present_check.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


def s3_push(src, repeat: int, timed) -> dict:  # noqa: ANN001
    """Push ``src`` to moto S3, then time a push with nothing changed and a push after the bucket's
    records were deleted (every array present there is reached and checked)."""
    from _moto import start_moto

    from mrepo.graph import Repository, push

    server, _ = start_moto("bench-present")
    try:
        url = "s3://bench-present/repo"
        Repository.init(url).close()
        first = timed(lambda: push(src, url))
        backend = Repository.open(url).storage.backend
        noop = [timed(lambda: push(src, url)) for _ in range(repeat)]
        resume = []
        for _ in range(repeat):
            for e in list(backend.list("objects/")):
                backend.delete(e.key)
            resume.append(timed(lambda: push(src, url, force=True)))
        return {"push_s": first, "noop_push_s": min(noop), "all_arrays_present_push_s": min(resume),
                "runs": {"noop": noop, "all_arrays_present": resume}}
    finally:
        server.stop()


if __name__ == "__main__":
    main()
