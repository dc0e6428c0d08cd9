"""ArrayStaging stays bounded: publication locks go when no one holds them, the staging folders of
finished or swept uploads are removed, and a damaged present array is replaced from a staged
upload (real local store)."""

from __future__ import annotations

import gc
import os
import threading
import time
from pathlib import Path

import numpy as np

from mrepo.api.staging import ArrayStaging
from mrepo.graph import Repository
from mrepo.store import zarr_codec
from mrepo.store.hashing import hash_array
from mrepo.store.objects import array_prefix
from mrepo.store.soundness import array_sound


def _files(seed: int) -> tuple[str, dict[str, bytes], bytes]:
    arr = np.random.default_rng(seed).normal(size=(64, 256)).astype(np.float32)
    h = hash_array(arr)
    files = dict(zarr_codec.encode_chunks(arr, (16, 256)))
    meta = zarr_codec.metadata_document(arr, (16, 256), h, {k: zarr_codec.chunk_digest(v) for k, v in files.items()})
    return h, files, meta


def _upload(staging: ArrayStaging, h: str, files: dict[str, bytes], meta: bytes, upload: str) -> bool:
    for key, data in files.items():
        staging.stage(h, upload, key, data)
    return staging.publish(h, upload, meta)


def test_locks_are_freed_after_use(tmp_path: Path) -> None:
    staging = ArrayStaging(Repository.init(str(tmp_path / "r")).storage)
    for seed in range(20):
        h, files, meta = _files(seed)
        assert _upload(staging, h, files, meta, "u")
    held = staging.lock("a" * 64)
    assert held is staging.lock("a" * 64)  # one lock per hash while referenced
    gc.collect()
    assert list(staging._locks) == ["a" * 64]
    del held
    gc.collect()
    assert len(staging._locks) == 0


def test_a_waiting_publisher_shares_the_holders_lock(tmp_path: Path) -> None:
    staging = ArrayStaging(Repository.init(str(tmp_path / "r")).storage)
    h = "b" * 64
    order: list[str] = []
    with staging.lock(h):
        waiter = threading.Thread(target=lambda: (staging.lock(h).acquire(), order.append("waiter")))
        waiter.start()
        time.sleep(0.2)
        order.append("holder")
    waiter.join(5)
    assert order == ["holder", "waiter"]


def test_sweep_removes_empty_staging_folders(tmp_path: Path) -> None:
    repo = Repository.init(str(tmp_path / "r"))
    staging = ArrayStaging(repo.storage)
    h, files, meta = _files(1)
    assert _upload(staging, h, files, meta, "done")
    h2, files2, _ = _files(2)
    staging.stage(h2, "abandoned", next(iter(files2)), next(iter(files2.values())))
    root = tmp_path / "r" / "staging"
    assert (root / h).is_dir()  # the finished upload left its empty folders
    past = time.time() - 3600
    for dirpath, _, _ in os.walk(root):
        os.utime(dirpath, (past, past))
    assert staging.sweep(max_age_seconds=7200) == 0  # the abandoned chunk is young: it stays
    assert not (root / h).exists()
    assert (root / h2 / "abandoned").is_dir()
    assert staging.sweep(max_age_seconds=0, folder_grace_seconds=0) == 1
    assert root.is_dir() and list(root.iterdir()) == []


def test_publish_replaces_a_damaged_present_array(tmp_path: Path) -> None:
    repo = Repository.init(str(tmp_path / "r"))
    staging = ArrayStaging(repo.storage)
    h, files, meta = _files(3)
    assert _upload(staging, h, files, meta, "u")
    assert not _upload(staging, h, files, meta, "again")  # intact: nothing stored
    assert not (tmp_path / "r" / "staging" / h / "again").exists() or \
        not any((tmp_path / "r" / "staging" / h / "again").iterdir())
    key = sorted(files)[1]
    path = tmp_path / "r" / array_prefix(h) / key
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    assert not array_sound(repo.storage.backend, h)
    staged = [staging.stage(h, "fix", k, v) for k, v in files.items()]
    assert staged == [k == key for k in files]  # only the chunk that differs from the stored file
    assert staging.publish(h, "fix", meta)
    assert array_sound(repo.storage.backend, h)
