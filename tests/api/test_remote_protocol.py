"""clone / fetch / push / pull through the server behave as against a local or S3 remote."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from mrepo.graph import Population, Repository, clone, fetch, pull, push, verify
from mrepo.store import RefConflict, hash_array, hash_bytes
from mrepo.store.hashing import record_bytes
from mrepo.store.http_backend import HttpBackend
from tests.api.conftest import Served
from tests.factories import make_population


def _local(tmp_path, name: str = "local") -> Repository:
    repo = Repository.init(str(tmp_path / name))
    repo.commit(make_population(repo), message="first", branch="dev", author="t", time="2025-01-01T00:00:00Z")
    return repo


def test_push_clone_fetch_pull_roundtrip(served: Served, tmp_path) -> None:
    local = _local(tmp_path)
    local.add_remote("origin", served.url)
    stats = push(local, "origin", "dev", options=served.opts("write"))
    assert stats.records > 0 and stats.arrays > 0
    assert served.repo().head("dev") == local.head("dev")
    assert verify(served.repo().storage).ok

    # A second push of the same head copies nothing.
    again = push(local, "origin", "dev", options=served.opts("write"))
    assert (again.records, again.arrays, again.blobs) == (0, 0, 0)

    copy, cstats = clone(served.url, str(tmp_path / "copy"), src_options=served.opts("read"))
    assert copy.branches() == {"dev": local.head("dev")}
    assert cstats.records == stats.records and cstats.arrays == stats.arrays
    assert verify(copy.storage).ok
    assert copy.population("dev") == local.population("dev")

    # The clone commits, pushes; the original fetches and pulls (fast-forward).
    pop = copy.population("dev")
    copy.commit(pop, message="second", branch="dev", author="t", time="2025-01-02T00:00:00Z")
    push(copy, served.url, "dev", options=served.opts("write"))
    fstats = fetch(local, "origin", options=served.opts("read"))
    assert fstats.refs["refs/remotes/origin/dev"] == copy.head("dev")
    _, result = pull(local, "origin", "dev", options=served.opts("read"))
    assert result.kind == "fast-forward" and local.head("dev") == copy.head("dev")


def test_stale_push_is_rejected_with_conflict(served: Served, tmp_path) -> None:
    a = _local(tmp_path, "a")
    push(a, served.url, "dev", options=served.opts("write"))
    b, _ = clone(served.url, str(tmp_path / "b"), src_options=served.opts("read"))
    b.commit(b.population("dev"), message="b", branch="dev", author="t", time="2025-01-03T00:00:00Z")
    push(b, served.url, "dev", options=served.opts("write"))
    a.commit(a.population("dev"), message="a", branch="dev", author="t", time="2025-01-04T00:00:00Z")
    with pytest.raises(RefConflict):
        push(a, served.url, "dev", options=served.opts("write"))
    assert served.repo().head("dev") == b.head("dev")


def test_ref_compare_and_swap_over_http(served: Served, tmp_path) -> None:
    local = _local(tmp_path)
    push(local, served.url, "dev", options=served.opts("write"))
    head = local.head("dev")
    be = HttpBackend(served.url, served.opts("write"))
    data, token = be.read_versioned("refs/heads/dev")
    assert data == (head + "\n").encode() and token
    # Creating an existing ref and updating with a stale token both conflict (409).
    with pytest.raises(RefConflict):
        be.cas("refs/heads/dev", None, data)
    with pytest.raises(RefConflict):
        be.cas("refs/heads/dev", '"' + "0" * 64 + '"', data)
    new_token = be.cas("refs/heads/feature", None, data)
    assert be.read_versioned("refs/heads/feature") == (data, new_token)
    be.close()


def test_uploads_are_verified_and_idempotent(served: Served) -> None:
    body = b"blob\0hello"
    h = hash_bytes(body)
    url = f"{served.url}/objects/{h}"
    with httpx.Client(headers=served.auth("write")) as c:
        assert c.put(url, content=body[:-1] + b"!").status_code == 400
        assert c.head(url).status_code == 404
        assert c.put(url, content=body).status_code == 201
        assert c.put(url, content=body).status_code == 200  # already present: nothing stored
        assert c.get(url).content == body
        # A record whose children are absent is refused: the closure invariant holds.
        rec = record_bytes("population", Population("p", {"s": "a" * 64}, {}).to_body())
        r = c.put(f"{served.url}/objects/{hash_bytes(rec)}", content=rec)
        assert r.status_code == 400 and r.json()["error"] == "missing-object"
        # Well-formed history only: unknown kinds, non-canonical JSON, NaN and duplicate keys are refused.
        for bad in (b"record\0thing\0" + json.dumps({"x": {"@record": "a" * 64}}, separators=(",", ":")).encode(),
                    b'record\0population\0{"name": "p", "sources": {}, "species": {}}',
                    b'record\0population\0{"metadata":{"x":NaN},"name":"p","sources":{},"species":{}}',
                    b'record\0population\0{"name":"p","name":"q","sources":{},"species":{}}'):
            r = c.put(f"{served.url}/objects/{hash_bytes(bad)}", content=bad)
            assert r.status_code == 400 and r.json()["error"] == "invalid-record", (bad, r.text)
            assert c.head(f"{served.url}/objects/{hash_bytes(bad)}").status_code == 404


def test_array_is_staged_until_it_verifies(served: Served, tmp_path) -> None:
    """Chunks are invisible until zarr.json arrives; a bad chunk makes the array never appear."""
    src = Repository.init(str(tmp_path / "src"))
    arr = np.arange(3 * 40 * 40, dtype=np.float32).reshape(3, 40, 40)
    h = src.objects.put_array(arr, chunks=(1, 40, 40))
    keys = src.objects.array_keys(h)
    be = HttpBackend(served.url, served.opts("write"))
    chunk_keys = keys[:-1]
    for k in chunk_keys:
        be.put(k, src.storage.backend.get(k))
    assert not be.exists(f"arrays/{h}/zarr.json") and not be.exists(chunk_keys[0])
    # Tamper: replace one staged chunk with another chunk's bytes, then send zarr.json.
    be.put(chunk_keys[0], src.storage.backend.get(chunk_keys[1]))
    with pytest.raises(Exception, match="corrupt|does not|400"):
        be.put(keys[-1], src.storage.backend.get(keys[-1]))
    assert not served.repo().objects.has_array(h)
    assert not list(served.repo().storage.backend.list("staging/"))  # the failed upload was discarded
    # A correct upload (new session) publishes it and the server's copy hashes right.
    be2 = HttpBackend(served.url, served.opts("write"))
    for k in keys:
        be2.put(k, src.storage.backend.get(k))
    assert hash_array(served.repo().objects.get_array(h)) == h
    be.close()
    be2.close()


def test_zarr_client_reads_array_over_http(served: Served, tmp_path) -> None:
    import zarr

    local = Repository.init(str(tmp_path / "z"))
    arr = np.random.default_rng(1).normal(size=(7, 33, 20)).astype(np.float32)
    h = local.objects.put_array(arr, chunks=(4, 16, 16))
    be = HttpBackend(served.url, served.opts("write"))
    for k in local.objects.array_keys(h):
        be.put(k, local.storage.backend.get(k))
    be.close()
    z = zarr.open_array(f"{served.url}/arrays/{h}", mode="r",
                        storage_options={"client_kwargs": {"headers": served.auth("read")}})
    got = z[...]
    assert got.dtype == arr.dtype and np.array_equal(got, arr)
    assert hash_array(got) == h
