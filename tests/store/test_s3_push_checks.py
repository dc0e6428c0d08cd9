"""A push to S3 (a real moto server on 127.0.0.1) checks every chunk it sends: the chunk files of an
array go up under their final keys before the array is complete (with an unsigned payload, see
:meth:`mrepo.store.backends.S3Backend.put`), but ``zarr.json``, which makes the array visible, only
after every chunk matched its digest and the decoded array hashed to its name; a refused array leaves
no chunk file, no record and no ref move (blobs and other arrays, checked, may stay: nothing names them) at the remote, and the same push, once the source is
repaired, completes."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest

from mrepo.graph import DataSource, Population, Repository, push, verify
from mrepo.store import CorruptObject
from mrepo.store.hashing import RECORD_TAG
from mrepo.store.objects import array_prefix
from tests.factories import make_item

pytestmark = pytest.mark.s3


def _source(make_url: Callable[[str], str]) -> tuple[Repository, str, str]:
    """A local repository whose head names a 16-chunk float32 array (plain chunks): (repo, head, array)."""
    src = Repository.init(make_url("local"))
    arr = np.random.default_rng(7).normal(size=(64, 32, 16)).astype(np.float32)
    h = src.objects.put_array(arr, chunks=(16, 16, 8))
    item = dataclasses.replace(make_item(src, "fov"), models={"map": h})
    head = src.commit(Population("p", {"g": DataSource("g", {item.key: item.save(src.objects)}).save(src.objects)}),
                      message="m", time="2024-05-01T00:00:01Z")
    return src, head, h


@pytest.mark.parametrize("damage", ["flipped byte", "truncated"])
def test_push_to_s3_refuses_a_damaged_source_chunk_and_shows_none_of_it(make_url: Callable[[str], str],
                                                                       damage: str) -> None:
    src, head, h = _source(make_url)
    key = array_prefix(h) + "c/3/1/1"  # the last chunk in grid order: the other 15 went up before it
    good = src.storage.backend.get(key)
    bad = bytearray(good)
    if damage == "truncated":
        del bad[-4:]
    else:
        bad[len(bad) // 3] ^= 0x04
    src.storage.backend.put(key, bytes(bad))
    url = make_url("s3")
    Repository.init(url).close()

    with pytest.raises(CorruptObject, match=f"array {h} chunk c/3/1/1"):
        push(src, url)
    remote = Repository.open(url)
    assert remote.head() is None
    assert list(remote.storage.backend.list(array_prefix(h))) == []  # no zarr.json, no chunk file left
    stored = [remote.storage.backend.get(e.key) for e in remote.storage.backend.list("objects/")]
    assert not any(data.startswith(RECORD_TAG) for data in stored)  # no record (a checked blob may be there)
    assert not remote.objects.has_object(head)
    assert verify(remote.storage).ok

    src.storage.backend.put(key, good)  # repaired: the same push now completes
    stats = push(src, url)
    assert stats.arrays == 1 and stats.array_bytes == 64 * 32 * 16 * 4  # the map; the shifts were complete
    assert remote.head() == head
    assert remote.objects.has_array(h)
    np.testing.assert_array_equal(remote.objects.get_array(h), src.objects.get_array(h))
    assert verify(remote.storage).ok
