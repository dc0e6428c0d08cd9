"""A transfer replaces a present array that fails its check, whatever its size: one flipped byte
inside a chunk of an array over 1 MiB (every chunk file still there) at the destination of a
fetch, pull or push is found when the walk reaches the array (a new record names it) and the
array is copied again (real local, in-memory and moto S3 stores)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest

from mrepo.graph import Population, Repository, clone, fetch, pull, push, verify
from mrepo.store.objects import array_prefix
from mrepo.store.soundness import array_sound
from tests.factories import make_population

T1, T2 = "2024-05-01T00:00:01Z", "2024-05-01T00:00:02Z"


def big_population(repo: Repository) -> tuple[Population, str]:
    """The factory population with a 96³ float32 half-map (3.4 MiB, six chunks of 16 x 96 x 96);
    the population and that array's hash."""
    pop = make_population(repo, n_items=2)
    sp = repo.species(pop.species["apo"])
    vol = np.random.default_rng(7).normal(size=(96, 96, 96)).astype(np.float32)
    half1 = repo.objects.put_array(vol, chunks=(16, 96, 96))
    new = dataclasses.replace(sp, half1=half1).save(repo.objects)
    return dataclasses.replace(pop, species={"apo": new}), half1


def next_commit(repo: Repository, pop: Population) -> str:
    """A second commit whose new species record names the same arrays (the walk reaches them)."""
    sp = repo.species(pop.species["apo"])
    new = dataclasses.replace(sp, resolution=4.2).save(repo.objects)
    return repo.commit(dataclasses.replace(pop, species={"apo": new}), message="second", time=T2)


def damage_chunk(repo: Repository, h: str) -> None:
    """Flip one byte in the middle of one chunk file of array ``h`` (size unchanged)."""
    meta = repo.objects.array_meta(h)
    key = array_prefix(h) + sorted(meta.chunk_digests)[2]
    data = bytearray(repo.storage.backend.get(key))
    data[len(data) // 2] ^= 0x01
    repo.storage.backend.put(key, bytes(data))
    assert not array_sound(repo.storage.backend, h)


def test_array_sound_checks_every_chunk_digest(make_url: Callable[[str], str]) -> None:
    repo = Repository.init(make_url("local"))
    _, h = big_population(repo)
    assert sum(e.size for e in repo.storage.backend.list(array_prefix(h))) > 1 << 20
    assert array_sound(repo.storage.backend, h)
    damage_chunk(repo, h)


@pytest.mark.parametrize("how", ["fetch", "pull"])
def test_fetch_and_pull_replace_a_damaged_large_array(make_url: Callable[[str], str], how: str) -> None:
    src = Repository.init(make_url("local"))
    pop, h = big_population(src)
    src.commit(pop, message="first", time=T1)
    dst, _ = clone(src.url, make_url("local"))
    damage_chunk(dst, h)
    assert not verify(dst.storage).ok
    head = next_commit(src, pop)
    stats = fetch(dst, "origin") if how == "fetch" else pull(dst, "origin")[0]
    assert stats.arrays == 1 and stats.array_bytes > 1 << 20
    assert array_sound(dst.storage.backend, h)
    assert verify(dst.storage).ok, verify(dst.storage).problems
    if how == "pull":
        assert dst.head() == head


@pytest.mark.parametrize("dst_kind", ["local", "memory", pytest.param("s3", marks=pytest.mark.s3)])
def test_push_replaces_a_damaged_large_array(make_url: Callable[[str], str], dst_kind: str) -> None:
    src = Repository.init(make_url("local"))
    pop, h = big_population(src)
    src.commit(pop, message="first", time=T1)
    url = make_url(dst_kind)
    Repository.init(url).close()
    push(src, url, "main")
    dst = Repository.open(url)
    damage_chunk(dst, h)
    assert not verify(dst.storage).ok
    head = next_commit(src, pop)
    stats = push(src, url, "main")
    assert stats.arrays == 1
    dst = Repository.open(url)
    assert dst.head() == head
    assert array_sound(dst.storage.backend, h)
    assert verify(dst.storage).ok, verify(dst.storage).problems
