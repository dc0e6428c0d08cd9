"""Backends (local, memory, S3 on moto): put/get/list/delete and compare-and-swap of refs."""

from __future__ import annotations

import pytest

from mrepo.store import InvalidInput, ObjectNotFound, RefConflict, RepositoryNotFound, Storage, open_backend
from mrepo.store.refs import RefStore

H1 = "1" * 64
H2 = "2" * 64


@pytest.mark.s3
def test_moto_honours_conditional_put(s3_client) -> None:
    """The S3 server used by the suite refuses If-None-Match/If-Match mismatches with 412,
    which is what mrepo's S3 refs rely on (checked with plain boto3, not mrepo code)."""
    from botocore.exceptions import ClientError

    key = "conditional-put-check"
    first = s3_client.put_object(Bucket="mrepo-tests", Key=key, Body=b"a", IfNoneMatch="*")
    with pytest.raises(ClientError) as created_twice:
        s3_client.put_object(Bucket="mrepo-tests", Key=key, Body=b"b", IfNoneMatch="*")
    assert created_twice.value.response["Error"]["Code"] == "PreconditionFailed"
    with pytest.raises(ClientError) as stale:
        s3_client.put_object(Bucket="mrepo-tests", Key=key, Body=b"b", IfMatch='"0123456789abcdef"')
    assert stale.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    second = s3_client.put_object(Bucket="mrepo-tests", Key=key, Body=b"c", IfMatch=first["ETag"])
    assert s3_client.get_object(Bucket="mrepo-tests", Key=key)["Body"].read() == b"c"
    assert second["ETag"] != first["ETag"]


def test_put_get_list_delete(backend_kind: str, make_url) -> None:
    b = open_backend(make_url(backend_kind))
    b.put("objects/ab/cd", b"hello")
    b.put("objects/ab/ef", b"")
    b.put("arrays/x/c/0", b"\x00" * 10)
    assert b.get("objects/ab/cd") == b"hello"
    assert b.exists("objects/ab/ef") and not b.exists("objects/ab/zz")
    assert {(e.key, e.size) for e in b.list("objects/")} == {("objects/ab/cd", 5), ("objects/ab/ef", 0)}
    assert [e.key for e in b.list("arrays/")] == ["arrays/x/c/0"]
    assert list(b.list("nothing/")) == []
    b.put("objects/ab/cd", b"overwritten")
    assert b.get("objects/ab/cd") == b"overwritten"
    b.delete("objects/ab/cd")
    b.delete("objects/ab/cd")  # missing keys are ignored
    with pytest.raises(ObjectNotFound, match="objects/ab/cd"):
        b.get("objects/ab/cd")


def test_cas_create_update_delete(backend_kind: str, make_url) -> None:
    b = open_backend(make_url(backend_kind))
    assert b.read_versioned("refs/heads/main") == (None, None)
    t1 = b.cas("refs/heads/main", None, b"one\n")
    with pytest.raises(RefConflict):
        b.cas("refs/heads/main", None, b"again\n")  # must not exist
    data, token = b.read_versioned("refs/heads/main")
    assert data == b"one\n" and token == t1
    t2 = b.cas("refs/heads/main", t1, b"two\n")
    with pytest.raises(RefConflict):
        b.cas("refs/heads/main", t1, b"stale\n")  # token is out of date
    assert b.get("refs/heads/main") == b"two\n"
    with pytest.raises(RefConflict):
        b.cas("refs/heads/main", t1, None)
    assert b.cas("refs/heads/main", t2, None) is None
    assert b.read_versioned("refs/heads/main") == (None, None)


def test_refstore_update_checks_expected_value(backend_kind: str, make_url) -> None:
    refs = RefStore(open_backend(make_url(backend_kind)))
    refs.update("refs/heads/main", H1, None)
    with pytest.raises(RefConflict, match="another writer"):
        refs.update("refs/heads/main", H2, None)
    with pytest.raises(RefConflict):
        refs.update("refs/heads/main", H2, H2)
    refs.update("refs/heads/main", H2, H1)
    assert refs.get("refs/heads/main") == H2
    assert list(refs.list()) == [("refs/heads/main", H2)]
    with pytest.raises(InvalidInput, match="not-a-hash"):
        refs.update("refs/heads/main", "not-a-hash", H2)


def test_refstore_update_against_an_earlier_read(backend_kind: str, make_url) -> None:
    """``update(token=...)`` swaps against the caller's own read of the ref: it succeeds while the
    ref is unchanged and is refused once another writer moved it (or created it) since."""
    refs = RefStore(open_backend(make_url(backend_kind)))
    absent, token = refs.read("refs/heads/main")
    assert absent is None
    refs.update("refs/heads/main", H1, None, token=token)
    current, token = refs.read("refs/heads/main")
    refs.update("refs/heads/main", H2, current, operation="other writer")  # moves it after our read
    with pytest.raises(RefConflict, match="another writer"):
        refs.update("refs/heads/main", H1, current, token=token)
    assert refs.get("refs/heads/main") == H2
    stale_absent, absent_token = refs.read("refs/heads/dev")
    refs.update("refs/heads/dev", H1, None)  # created by someone else after our read
    with pytest.raises(RefConflict):
        refs.update("refs/heads/dev", H2, stale_absent, token=absent_token)
    assert refs.get("refs/heads/dev") == H1


@pytest.mark.s3
def test_s3_list_pages_and_sends_the_body_crc32(make_url, s3_client, monkeypatch) -> None:
    """S3 listings go page by page and never name the prefix's own key; a PUT carries the CRC32
    of its body (computed by mrepo, stored by the server as the object's checksum)."""
    import base64
    import zlib

    from mrepo.store.backends import S3Backend

    backend = open_backend(make_url("s3"))
    assert isinstance(backend, S3Backend)
    monkeypatch.setattr(S3Backend, "list_page", 2)
    keys = [f"objects/aa/{i}" for i in range(5)]
    for i, key in enumerate(keys):
        backend.put(key, b"x" * (i + 1))
    backend.put("refs/heads/main", b"h\n")
    assert [(e.key, e.size) for e in backend.list("objects/")] == [(k, i + 1) for i, k in enumerate(keys)]
    assert sorted(e.key for e in backend.list("")) == sorted([*keys, "refs/heads/main"])
    assert list(backend.list("refs/heads/main/")) == []
    assert list(backend.list("nothing/")) == []

    data = bytes(range(256)) * 100
    backend.put("objects/bb/crc", data)
    bucket, key = backend.url[len("s3://"):].split("/", 1)
    head = s3_client.head_object(Bucket=bucket, Key=f"{key}/objects/bb/crc", ChecksumMode="ENABLED")
    assert head["ChecksumCRC32"] == base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def test_storage_create_and_open(backend_kind: str, make_url) -> None:
    url = make_url(backend_kind)
    with pytest.raises(RepositoryNotFound, match="no mrepo repository"):
        Storage.open(url)
    Storage.create(url)
    with pytest.raises(InvalidInput, match="already exists"):
        Storage.create(url)
    assert Storage.open(url).refs.default_branch() == "main"


@pytest.mark.parametrize("url", ["ftp://host/x", "gopher://x", ""])
def test_unknown_scheme_is_refused(url: str) -> None:
    with pytest.raises(InvalidInput):
        open_backend(url)


def test_local_cas_breaks_lock_of_dead_process(tmp_path) -> None:
    """A lock file left by a process that no longer exists does not block writers."""
    import socket

    b = open_backend(str(tmp_path))
    lock = tmp_path / "refs" / "heads" / ".main.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text(f"{socket.gethostname()} 999999999\n")  # no such pid
    b.cas("refs/heads/main", None, b"x\n")
    assert b.get("refs/heads/main") == b"x\n" and not lock.exists()


@pytest.mark.s3
def test_s3_content_addressed_puts_skip_the_payload_sha256_refs_keep_it(make_url, s3_client) -> None:
    """Over plain http botocore signs a SHA-256 of every body; an object or array file (named by its
    content hash, checked by every reader) goes up unsigned-payload with its CRC32, as botocore
    sends a PutObject over https, and S3 still stores that CRC32; a ref's conditional PUT and a
    reflog entry keep the signed SHA-256 of their body. Headers as sent, seen by an event handler
    on the aiobotocore session both of the backend's clients are made from."""
    import base64
    import hashlib
    import zlib

    import aiobotocore.session

    url = make_url("s3")
    bucket, root = url[len("s3://"):].split("/", 1)
    sent: dict[str, dict[str, str]] = {}

    def record(request, **_: object) -> None:  # noqa: ANN001 - botocore's AWSPreparedRequest
        if request.method == "PUT" and f"/{root}/" in request.url:
            key = request.url.split(f"/{root}/", 1)[1].split("?", 1)[0]
            sent[key] = {k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}

    session = aiobotocore.session.AioSession()
    session.register("before-send.s3", record)
    backend = open_backend(url, {"session": session})
    data = bytes(range(256)) * 64
    backend.put("objects/ab/cdef", data)
    backend.put("arrays/ab12/zarr.json", data)
    backend.put("logs/refs/heads/main", b"entry\n")
    backend.cas("refs/heads/main", None, b"h\n")

    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    for key in ("objects/ab/cdef", "arrays/ab12/zarr.json"):
        assert sent[key]["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD", key
        assert sent[key]["x-amz-checksum-crc32"] == crc
        assert "x-amz-content-sha256" in sent[key]["authorization"]  # the header itself is signed
    for key, body in (("logs/refs/heads/main", b"entry\n"), ("refs/heads/main", b"h\n")):
        assert sent[key]["x-amz-content-sha256"] == hashlib.sha256(body).hexdigest(), key
    head = s3_client.head_object(Bucket=bucket, Key=f"{root}/objects/ab/cdef", ChecksumMode="ENABLED")
    assert head["ChecksumCRC32"] == crc
    assert backend.get("objects/ab/cdef") == data
