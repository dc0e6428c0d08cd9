"""Arrays through the batch upload of a real server on 127.0.0.1: chunks checked and written once as
they arrive, slab order enforced, nothing left behind by a refused array, and two uploads of the
same array at once (one holds the array, the other stages its chunks and publishes after it)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from mrepo.graph import Repository
from mrepo.store import pack, zarr_codec
from mrepo.store.hashing import hash_array
from mrepo.store.integrity import chunk_keys


def _array(seed: int = 0) -> tuple[np.ndarray, str, bytes, dict[str, bytes]]:
    arr = np.random.default_rng(seed).normal(size=(12, 10, 8)).astype(np.float32)
    h = hash_array(arr)
    files = dict(zarr_codec.encode_chunks(arr, (4, 5, 8)))  # 3 slabs of 2 chunks
    meta = zarr_codec.metadata_document(arr, (4, 5, 8), h, {k: zarr_codec.chunk_digest(v) for k, v in files.items()})
    return arr, h, meta, files


def _frames(h: str, meta: bytes, files: dict[str, bytes], order: list[str]) -> list[tuple[str, bytes]]:
    return [(f"arrays/{h}/zarr.json", meta)] + [(f"arrays/{h}/{k}", files[k]) for k in order]


def _files_under(root: Path, h: str) -> list[Path]:
    return [p for p in (root / "arrays" / h).rglob("*") if p.is_file()] if (root / "arrays" / h).exists() else []


def test_chunks_out_of_slab_order_are_refused_and_leave_nothing(writer_client) -> None:
    c, root = writer_client
    arr, h, meta, files = _array()
    keys = chunk_keys(zarr_codec.parse_metadata(meta, h))
    late = keys[2:4] + keys[:2] + keys[4:]  # slab 1 before slab 0
    r = c.post("/repo/batch/upload", content=b"".join(pack.encode(_frames(h, meta, files, late))))
    assert r.status_code == 400 and "chunks must come slab by slab" in r.json()["detail"], r.text
    assert _files_under(root, h) == []
    twice = keys[:1] + keys
    r = c.post("/repo/batch/upload", content=b"".join(pack.encode(_frames(h, meta, files, twice))))
    assert r.status_code == 400 and "arrives twice" in r.json()["detail"], r.text
    # the array's lock was released: a well-formed upload goes through
    r = c.post("/repo/batch/upload", content=b"".join(pack.encode(_frames(h, meta, files, keys))))
    assert r.status_code == 200 and r.json()["stored"] == 1, r.text
    np.testing.assert_array_equal(Repository.open(str(root)).objects.get_array(h), arr)


def test_an_array_that_fails_its_hash_leaves_no_chunk_files(writer_client) -> None:
    c, root = writer_client
    arr, h, _, _ = _array()
    _, _, _, other = _array(seed=1)  # consistent digests, other content: only the array hash can tell
    lie = zarr_codec.metadata_document(arr, (4, 5, 8), h, {k: zarr_codec.chunk_digest(v) for k, v in other.items()})
    keys = chunk_keys(zarr_codec.parse_metadata(lie, h))
    r = c.post("/repo/batch/upload", content=b"".join(pack.encode(_frames(h, lie, other, keys))))
    assert r.status_code == 400 and "does not match its hash" in r.json()["detail"], r.text
    assert _files_under(root, h) == []
    assert not [p for p in (root / "staging").rglob("*") if p.is_file()] if (root / "staging").exists() else True


@pytest.mark.parametrize("second_lies", [False, True])
def test_two_uploads_of_one_array_at_once(writer_client, second_lies: bool) -> None:
    """Upload A holds the array (its chunks go to their final names) and stalls mid-array; upload B
    of the same array stages its chunks and publishes only after A. A refused B changes nothing."""
    c, root = writer_client
    arr, h, meta, files = _array()
    keys = chunk_keys(zarr_codec.parse_metadata(meta, h))
    resume = threading.Event()

    def stalled() -> Iterator[bytes]:
        frames = _frames(h, meta, files, keys)
        yield b"".join(pack.encode(frames[:2]))[: -len(pack.END)]  # magic, zarr.json, first chunk
        resume.wait(30)
        yield b"".join(pack.frame(k, d) for k, d in frames[2:]) + pack.END

    answers: dict[str, httpx.Response] = {}
    a = threading.Thread(
        target=lambda: answers.update(
            a=c.post("/repo/batch/upload", content=stalled(), headers={"X-Mrepo-Upload": "a"})
        )
    )
    a.start()
    try:
        deadline = time.monotonic() + 30
        while not _files_under(root, h):  # A's first chunk is written under its final name
            assert time.monotonic() < deadline
            time.sleep(0.05)
        b_files = files
        if second_lies:
            _, _, _, b_files = _array(seed=2)
            b_meta = zarr_codec.metadata_document(
                arr, (4, 5, 8), h, {k: zarr_codec.chunk_digest(v) for k, v in b_files.items()}
            )
        else:
            b_meta = meta
        b = threading.Thread(
            target=lambda: answers.update(
                b=c.post(
                    "/repo/batch/upload",
                    content=b"".join(pack.encode(_frames(h, b_meta, b_files, keys))),
                    headers={"X-Mrepo-Upload": "b"},
                )
            )
        )
        b.start()
        if second_lies:  # refused by the array hash, without waiting for A
            b.join(30)
            assert answers["b"].status_code == 400 and "does not match its hash" in answers["b"].text
        else:  # B stages every chunk, then waits for A's publication
            staged = root / "staging" / h / "b"
            while len([p for p in staged.rglob("*") if p.is_file()]) < len(keys):
                assert b.is_alive() and time.monotonic() < deadline
                time.sleep(0.05)
            b.join(0.5)
            assert b.is_alive() and "b" not in answers
    finally:
        resume.set()
        a.join(30)
    b.join(30)
    assert answers["a"].status_code == 200 and answers["a"].json()["stored"] == 1, answers["a"].text
    if not second_lies:
        assert answers["b"].status_code == 200 and answers["b"].json() == {
            **answers["b"].json(),
            "stored": 0,
            "present": 1,
        }, answers["b"].text
    np.testing.assert_array_equal(Repository.open(str(root)).objects.get_array(h), arr)
    assert not [p for p in (root / "staging").rglob("*") if p.is_file()]


def test_chunks_of_an_array_the_server_holds_are_dropped(writer_client) -> None:
    """A client that learnt too late that the array arrived meanwhile sends it whole: accepted."""
    c, root = writer_client
    arr, h, meta, files = _array()
    keys = chunk_keys(zarr_codec.parse_metadata(meta, h))
    r = c.post("/repo/batch/upload", content=b"".join(pack.encode(_frames(h, meta, files, keys))))
    assert r.status_code == 200 and (r.json()["stored"], r.json()["present"]) == (1, 0), r.text
    r = c.post("/repo/batch/upload", content=b"".join(pack.encode(_frames(h, meta, files, keys))))
    assert r.status_code == 200 and (r.json()["stored"], r.json()["present"]) == (0, 1), r.text
    np.testing.assert_array_equal(Repository.open(str(root)).objects.get_array(h), arr)


def test_arrays_are_dealt_to_streams_by_size() -> None:
    from mrepo.graph.batch_transfer import _balanced

    sizes = {"a": 100, "b": 100, "c": 100, "d": 1, "e": 1, "f": 1, "g": 1, "h": 1}
    groups = _balanced(sizes, 2)
    loads = sorted(sum(sizes[h] for h in g) for g in groups)
    assert loads == [105, 200] and sorted(h for g in groups for h in g) == sorted(sizes)
    assert _balanced({"x": 5}, 2) == [["x"]] and _balanced({}, 2) == []
