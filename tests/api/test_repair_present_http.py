"""Repair through ``mrepo serve`` (a real server on 127.0.0.1, real files): one flipped byte in a
chunk of an array over 1 MiB, every chunk file still there, is found and the array replaced, by a
batch push (damage on the server), a batch pull (damage in the local clone) and by the
per-object upload path (``PUT /repo/arrays/<h>/...``), which follows the same rule as the batch."""

from __future__ import annotations

import httpx
import numpy as np

from mrepo.graph import Repository, clone, pull, push, verify
from mrepo.store import zarr_codec
from mrepo.store.hashing import hash_array
from mrepo.store.integrity import chunk_keys
from mrepo.store.objects import array_prefix
from mrepo.store.soundness import array_sound
from tests.api.conftest import Served
from tests.graph.test_repair_present import T1, big_population, damage_chunk, next_commit


def test_batch_push_replaces_a_damaged_large_array_on_the_server(served: Served, tmp_path) -> None:
    local = Repository.init(str(tmp_path / "local"))
    pop, h = big_population(local)
    local.commit(pop, message="first", time=T1)
    push(local, served.url, "main", options=served.opts("maintain"))
    damage_chunk(served.repo(), h)
    assert not verify(served.repo().storage).ok
    head = next_commit(local, pop)  # main is protected: the second commit goes to another branch
    stats = push(local, served.url, "main", remote_branch="next", options=served.opts("write"))
    assert stats.arrays == 1, stats
    server = served.repo()
    assert server.head("next") == head
    assert array_sound(server.storage.backend, h)
    assert verify(server.storage).ok, verify(server.storage).problems
    assert not [p for p in (served.path / "staging").rglob("*") if p.is_file()]


def test_batch_pull_replaces_a_damaged_large_array_in_the_clone(served: Served, tmp_path) -> None:
    local = Repository.init(str(tmp_path / "local"))
    pop, h = big_population(local)
    local.commit(pop, message="first", time=T1)
    push(local, served.url, "main", options=served.opts("maintain"))
    dst, _ = clone(served.url, str(tmp_path / "dst"), src_options=served.opts("read"))
    damage_chunk(dst, h)
    assert not verify(dst.storage).ok
    head = next_commit(local, pop)
    push(local, served.url, "main", remote_branch="next", options=served.opts("write"))
    stats, _ = pull(dst, "origin", remote_branch="next", options=served.opts("read"))
    assert stats.arrays == 1, stats
    assert dst.head() == head
    assert array_sound(dst.storage.backend, h)
    assert verify(dst.storage).ok, verify(dst.storage).problems


def _files(arr: np.ndarray, chunks: tuple[int, ...]) -> tuple[str, dict[str, bytes], bytes]:
    """(hash, chunk files by key, zarr.json) of ``arr`` stored in ``chunks``."""
    h = hash_array(arr)
    files = dict(zarr_codec.encode_chunks(arr, chunks))
    meta = zarr_codec.metadata_document(arr, chunks, h, {k: zarr_codec.chunk_digest(v) for k, v in files.items()})
    return h, files, meta


def _put_array(c: httpx.Client, h: str, files: dict[str, bytes], meta: bytes, upload: str) -> httpx.Response:
    """Upload an array file by file (chunks, then ``zarr.json``); the answer to ``zarr.json``."""
    headers = {"x-mrepo-upload": upload}
    for key, data in files.items():
        r = c.put(f"/repo/arrays/{h}/{key}", content=data, headers=headers)
        assert r.status_code in (200, 202), r.text
    return c.put(f"/repo/arrays/{h}/zarr.json", content=meta, headers=headers)


def test_per_object_upload_replaces_a_damaged_large_array(served: Served) -> None:
    arr = np.random.default_rng(5).normal(size=(512, 1024)).astype(np.float32)
    h, files, meta = _files(arr, (128, 1024))
    with httpx.Client(base_url=served.base, timeout=60, headers=served.auth("write")) as c:
        r = _put_array(c, h, files, meta, "first")
        assert r.status_code == 201 and r.json()["stored"] is True, r.text
        r = _put_array(c, h, files, meta, "again")  # intact: nothing stored
        assert r.status_code == 200 and r.json()["stored"] is False, r.text
        server = served.repo()
        key = array_prefix(h) + chunk_keys(server.objects.array_meta(h))[2]
        data = bytearray((served.path / key).read_bytes())
        data[len(data) // 2] ^= 1
        (served.path / key).write_bytes(bytes(data))
        assert not array_sound(server.storage.backend, h)
        r = _put_array(c, h, files, meta, "repair")
        assert r.status_code == 201 and r.json()["stored"] is True, r.text
    assert array_sound(served.repo().storage.backend, h)
    np.testing.assert_array_equal(served.repo().objects.get_array(h), arr)
    assert not [p for p in (served.path / "staging").rglob("*") if p.is_file()]
