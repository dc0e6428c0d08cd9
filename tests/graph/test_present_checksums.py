"""A push checks the arrays already in an S3 bucket through S3's own checksums (size, and the CRC32
S3 verified on upload or the MD5 ETag) against the local source's chunk files, instead of
downloading them (:func:`mrepo.store.soundness.array_sound` with a source): a chunk overwritten in
the bucket by other bytes of the same length, or truncated, is still found and replaced, and an
intact array costs no chunk download. Real moto S3 server; requests counted by an event handler
on the aiobotocore session the backend's s3fs client is made from."""

from __future__ import annotations

import collections
from collections.abc import Callable

import pytest

from mrepo.graph import Repository, push, verify
from mrepo.store.backends import open_backend
from mrepo.store.objects import array_prefix
from mrepo.store.soundness import array_sound
from tests.graph.test_repair_present import T1, big_population, next_commit

pytestmark = pytest.mark.s3


class RequestCounter:
    """Counts the S3 API calls (operation name, key) a client made from :attr:`session` sends."""

    def __init__(self) -> None:
        import aiobotocore.session

        self.calls: collections.Counter[tuple[str, str]] = collections.Counter()
        self.session = aiobotocore.session.AioSession()
        self.session.register("before-parameter-build.s3", self._count)

    def _count(self, params: dict, model, **_: object) -> None:  # noqa: ANN001 - botocore's OperationModel
        self.calls[(model.name, str(params.get("Key", "")))] += 1

    def count(self, operation: str, key_prefix: str = "") -> int:
        return sum(n for (op, key), n in self.calls.items() if op == operation and key_prefix in key)


def pushed(make_url: Callable[[str], str]) -> tuple[Repository, str, str, object]:
    """A local repository with a 3.4 MiB array (six chunks) pushed to a new S3 repository:
    (source, S3 URL, array hash, population)."""
    src = Repository.init(make_url("local"))
    pop, h = big_population(src)
    src.commit(pop, message="first", time=T1)
    url = make_url("s3")
    Repository.init(url).close()
    push(src, url, "main")
    return src, url, h, pop


@pytest.mark.parametrize("damage", ["same-size-crc32", "same-size-no-checksum", "truncated"])
def test_push_replaces_a_chunk_overwritten_in_the_bucket(make_url: Callable[[str], str], s3_client,
                                                         damage: str) -> None:
    import boto3
    from botocore.config import Config

    src, url, h, pop = pushed(make_url)
    dst = Repository.open(url)
    bucket, root = url[len("s3://"):].split("/", 1)
    chunk = sorted(src.objects.array_meta(h).chunk_digests)[2]
    key = f"{root}/{array_prefix(h)}{chunk}"
    good = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0x01
    if damage == "truncated":
        bad = bad[:-1]
    client = s3_client
    if damage == "same-size-no-checksum":  # stored with no checksum but its ETag: the MD5 is compared
        client = boto3.client("s3", endpoint_url=s3_client.meta.endpoint_url,
                              config=Config(request_checksum_calculation="when_required"))
    client.put_object(Bucket=bucket, Key=key, Body=bytes(bad))
    head = s3_client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    assert ("ChecksumCRC32" in head) == (damage != "same-size-no-checksum")
    assert not array_sound(dst.storage.backend, h, src.storage.backend)
    assert not array_sound(dst.storage.backend, h)
    assert not verify(dst.storage).ok

    new_head = next_commit(src, pop)
    stats = push(src, url, "main")
    assert stats.arrays == 1 and stats.array_bytes > 1 << 20
    dst = Repository.open(url)
    assert dst.head() == new_head
    assert array_sound(dst.storage.backend, h, src.storage.backend)
    assert array_sound(dst.storage.backend, h)
    assert verify(dst.storage).ok, verify(dst.storage).problems


def test_present_arrays_are_checked_without_downloading_their_chunks(make_url: Callable[[str], str]) -> None:
    src, url, h, _ = pushed(make_url)
    n_chunks = len(src.objects.array_meta(h).chunk_digests)
    chunks = array_prefix(h) + "c"  # chunk keys: arrays/<h>/c/..., zarr.json apart

    # the counter sees the downloads of the full check (no source): one GET per chunk
    full = RequestCounter()
    assert array_sound(open_backend(url, {"session": full.session}), h)
    assert full.count("GetObject", chunks) == n_chunks

    # a resumed push: every record gone from the bucket, the arrays still there
    backend = open_backend(url)
    for entry in list(backend.list("objects/")):
        backend.delete(entry.key)
    cheap = RequestCounter()
    stats = push(src, url, "main", force=True, options={"session": cheap.session})
    assert stats.arrays == 0 and stats.records > 0
    assert cheap.count("GetObject", chunks) == 0, cheap.calls
    assert cheap.count("HeadObject", chunks) == n_chunks
    assert cheap.count("PutObject", chunks) == 0
    dst = Repository.open(url)
    assert verify(dst.storage).ok, verify(dst.storage).problems


def test_a_damaged_source_chunk_is_not_trusted(make_url: Callable[[str], str]) -> None:
    """The source's copy is compared only when it has the recorded digest: a damaged local chunk
    makes the check read the stored one (intact here), not declare a match or a mismatch."""
    src, url, h, _ = pushed(make_url)
    key = array_prefix(h) + sorted(src.objects.array_meta(h).chunk_digests)[1]
    data = bytearray(src.storage.backend.get(key))
    data[0] ^= 0xFF
    src.storage.backend.put(key, bytes(data))
    counter = RequestCounter()
    assert array_sound(open_backend(url, {"session": counter.session}), h, src.storage.backend)
    assert counter.count("GetObject", array_prefix(h) + "c") == 1
