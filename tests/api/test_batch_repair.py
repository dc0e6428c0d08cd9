"""The batch protocol repairs the server: a record, blob or array the server holds but that fails
its check is reported missing by ``batch/have`` and replaced by the verified upload (real server
on 127.0.0.1, real files; the damage is done to the server's own store)."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from mrepo.graph import Repository, push, verify
from mrepo.graph.transfer import copy_closure
from mrepo.store import CorruptObject, ObjectNotFound, pack, zarr_codec
from mrepo.store.hashing import hash_array
from mrepo.store.integrity import chunk_keys
from mrepo.store.objects import array_prefix, object_key
from tests.api.conftest import Served
from tests.factories import make_population


def _flip(root: Path, key: str) -> None:
    """Flip one bit in the middle of a stored file (its size unchanged)."""
    path = root / key
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))


def _array_pack(arr: np.ndarray, chunks: tuple[int, ...]) -> tuple[str, list[str], bytes]:
    """(hash, chunk keys in grid order, pack of the whole array) of ``arr`` stored in ``chunks``."""
    h = hash_array(arr)
    files = dict(zarr_codec.encode_chunks(arr, chunks))
    meta = zarr_codec.metadata_document(arr, chunks, h, {k: zarr_codec.chunk_digest(v) for k, v in files.items()})
    keys = chunk_keys(zarr_codec.parse_metadata(meta, h))
    return (
        h,
        keys,
        b"".join(pack.encode([(f"arrays/{h}/zarr.json", meta)] + [(f"arrays/{h}/{k}", files[k]) for k in keys])),
    )


def verify_array(root: Path, h: str) -> bool:
    """The server's stored array ``h`` reads back and hashes to its name."""
    try:
        return hash_array(Repository.open(str(root)).objects.get_array(h)) == h
    except (CorruptObject, ObjectNotFound):
        return False


@pytest.mark.parametrize("damage", ["flip", "delete"])
@pytest.mark.parametrize("shape", [(12, 10, 8), (512, 1024)])
def test_have_reports_a_damaged_array_missing_and_the_upload_replaces_it(
    served: Served, shape: tuple[int, ...], damage: str
) -> None:
    """A flipped bit in a chunk and a missing chunk file are found by ``batch/have`` for an array of
    any size (every chunk file against its digest, :func:`mrepo.store.soundness.array_sound`) and
    the upload replaces the array."""
    arr = np.random.default_rng(3).normal(size=shape).astype(np.float32)
    h, keys, body = _array_pack(arr, (4, 5, 8) if len(shape) == 3 else (128, 1024))
    with httpx.Client(base_url=served.base, timeout=60, headers=served.auth("write")) as c:
        assert c.post("/repo/batch/upload", content=body).json()["stored"] == 1
        have = {"objects": [], "arrays": [h]}
        assert c.post("/repo/batch/have", json=have).json()["missing_arrays"] == []
        key = array_prefix(h) + keys[len(keys) // 2]
        if damage == "delete":
            (served.path / key).unlink()
        else:
            _flip(served.path, key)
        assert not verify_array(served.path, h)
        assert c.post("/repo/batch/have", json=have).json()["missing_arrays"] == [h]
        r = c.post("/repo/batch/upload", content=body)
        assert r.status_code == 200 and r.json()["stored"] == 1, r.text
        assert c.post("/repo/batch/have", json=have).json()["missing_arrays"] == []
    assert verify_array(served.path, h)
    np.testing.assert_array_equal(Repository.open(str(served.path)).objects.get_array(h), arr)
    assert not [p for p in (served.path / "staging").rglob("*") if p.is_file()]


def test_a_push_by_batch_repairs_damaged_objects_on_the_server(served: Served, tmp_path: Path) -> None:
    """A record, a blob and one chunk of an array damaged on the server are sent again by a push
    through the batch protocol and replaced: the server's store verifies afterwards."""
    local = Repository.init(str(tmp_path / "local"))
    local.commit(make_population(local, n_items=2), message="m", time="2024-06-01T00:00:01Z")
    push(local, served.url, "main", options=served.opts("maintain"))
    pop = local.population()
    sp_hash = pop.species["apo"]
    species = local.species(sp_hash)
    item_hash = next(iter(local.source(pop.sources["grid1"]).items.values()))
    blob = local.item(item_hash).raw.hash
    chunk = array_prefix(species.half1) + sorted(local.objects.array_meta(species.half1).chunk_digests)[0]
    for key in (object_key(sp_hash), object_key(item_hash), object_key(blob), chunk):
        _flip(served.path, key)
    damaged = {h for _, h in verify(Repository.open(str(served.path)).storage).damaged}
    assert damaged == {sp_hash, item_hash}  # verify does not descend into a damaged record

    # the damaged records are negotiated as missing, so the walk descends into them and offers
    # the array and blob they name; those are negotiated as missing too and replaced
    remote = Repository.open(served.url, served.opts("write"))
    stats = copy_closure(local.storage, remote.storage, [sp_hash, item_hash])
    assert (stats.records, stats.blobs, stats.arrays) == (2, 1, 1), stats
    assert verify(Repository.open(str(served.path)).storage).ok
