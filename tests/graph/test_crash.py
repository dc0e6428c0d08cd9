"""A push killed with SIGKILL at a random point leaves the destination consistent (it
verifies, every complete object is intact and every stored record has its closure);
running the push again completes it and copies exactly what was still missing."""

from __future__ import annotations

import dataclasses
import random
import signal
import subprocess
import sys
from collections.abc import Callable

import numpy as np
import pytest

from mrepo.graph import DataSource, Population, Repository, push, verify
from mrepo.store import references
from mrepo.store.objects import array_prefix
from tests.factories import make_item

MODELS_PER_ITEM, SIDE = 5, 32  # arrays of 32³ float32, 2 chunk files each


def big_population(repo: Repository, n_items: int) -> str:
    """Commit a population whose items hold 5 incompressible arrays each; returns the commit."""
    rng = np.random.default_rng(7)
    items = {}
    for i in range(n_items):
        item = make_item(repo, f"fov{i:02d}", seed=i)
        models = {f"m{k}": repo.objects.put_array(rng.normal(size=(SIDE,) * 3).astype(np.float32),
                                                  chunks=(SIDE // 2, SIDE, SIDE)) for k in range(MODELS_PER_ITEM)}
        item = dataclasses.replace(item, models={**item.models, **models})
        items[item.key] = item.save(repo.objects)
    pop = Population("crash", {"grid": DataSource("grid", items).save(repo.objects)})
    return repo.commit(pop, message="many arrays")


def complete_state(dst: Repository) -> tuple[set[str], set[str]]:
    """(complete arrays, stored records and blobs) at ``dst``, checking each is intact and
    that every stored record has its whole closure."""
    arrays = {e.key.split("/")[1] for e in dst.storage.backend.list("arrays/") if e.key.endswith("/zarr.json")}
    for h in arrays:
        assert dst.objects.verify_object("array", h) is None, f"complete-looking array {h} is damaged"
    objects = {e.key.removeprefix("objects/").replace("/", "") for e in dst.storage.backend.list("objects/")}
    for h in objects:
        data = dst.storage.backend.get(f"objects/{h[:2]}/{h[2:]}")
        kind = "blob" if data.startswith(b"blob\0") else "record"
        assert dst.objects.verify_object(kind, h) is None, f"{kind} {h} is damaged"
        if kind == "record":
            for child_kind, child in references(dst.objects.get_record(h)):
                present = child in arrays if child_kind == "array" else child in objects
                assert present, f"record {h} is stored but its {child_kind} {child} is not"
    return arrays, objects


#: The push subprocess: ``push`` with a progress callback that reports every copied file
#: and waits for the test's go-ahead, so the kill lands at a chosen point of the transfer
#: while the other copy threads are mid-write.
PUSH_SCRIPT = """
import sys
from mrepo.graph import Repository, push

def progress(phase, done, total):
    print(done, total, flush=True)
    sys.stdin.readline()

push(Repository.open(sys.argv[1]), sys.argv[2], workers=4, progress=progress)
print("done", flush=True)
"""


def push_and_kill(src_url: str, dst_url: str, kill_at: int) -> tuple[int, int]:
    """Push in a subprocess and SIGKILL it right after it reports file ``kill_at`` copied.
    Returns (files reported, total files)."""
    proc = subprocess.Popen([sys.executable, "-c", PUSH_SCRIPT, src_url, dst_url], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while True:
            line = proc.stdout.readline()
            if not line or line.startswith("done"):
                pytest.fail(f"push ended before the kill point {kill_at}: {line!r} {proc.stderr.read()[-500:]}")
            done, total = map(int, line.split())
            if done >= kill_at:
                proc.send_signal(signal.SIGKILL)
                return done, total
            proc.stdin.write("\n")
            proc.stdin.flush()
    finally:
        proc.kill()
        proc.wait(timeout=30)


@pytest.mark.parametrize("kind,seed,n_items", [("local", 0, 8), ("local", 1, 8),
                                               pytest.param("s3", 2, 3, marks=[pytest.mark.s3, pytest.mark.slow])])
def test_killed_push_is_consistent_and_resumes(make_url: Callable[[str], str], kind: str, seed: int,
                                               n_items: int) -> None:
    src = Repository.init(make_url("local"))
    first = src.commit(Population("crash"), message="empty start")
    dst_url = make_url(kind)
    dst = Repository.init(dst_url)
    push(src, dst_url)  # the destination has history that verify will walk
    head = big_population(src, n_items)

    files = n_items * (MODELS_PER_ITEM * 3 + 2 + 2) + 2  # arrays (chunks, zarr.json), blobs, records
    kill_at = random.Random(seed).randint(1, files - 2)
    done, total = push_and_kill(src.url, dst_url, kill_at)
    assert done == kill_at < total
    assert dst.head("main") == first  # the ref moves last: still the old head

    report = verify(dst.storage, workers=2)
    assert report.ok, report.problems
    arrays_before, objects_before = complete_state(dst)

    stats = push(src, dst_url, workers=4)
    all_arrays, all_objects = complete_state(dst)
    assert dst.head("main") == head
    assert stats.arrays == len(all_arrays - arrays_before)
    assert 0 < stats.arrays + stats.records + stats.blobs == len(all_arrays - arrays_before) + len(
        all_objects - objects_before)
    new_files = [e for h in all_arrays - arrays_before for e in dst.storage.backend.list(array_prefix(h))]
    chunk_bytes = sum(e.size for e in new_files if not e.key.endswith("zarr.json"))
    object_bytes = sum(dst.storage.backend.get_size(f"objects/{h[:2]}/{h[2:]}") for h in all_objects - objects_before)
    assert stats.array_bytes == chunk_bytes  # array data: chunk files
    assert stats.bytes == sum(e.size for e in new_files) + object_bytes
    assert verify(dst.storage, workers=2).ok
    again = push(src, dst_url)
    assert (again.bytes, again.arrays, again.records) == (0, 0, 0)
