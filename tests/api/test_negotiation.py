"""How a push asks the server what it lacks (``batch/have``): one request for a small closure, level by
level for a large one, and in both cases only what is missing or damaged crosses; how a clone lists
the refs it copies (with their values, in one request, every name and hash checked) and the records of
a closure (the first levels in one request).

A real ``mrepo serve`` app on 127.0.0.1, wrapped in an ASGI layer that counts the requests it receives.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

from mrepo.api import add_token, create_app
from mrepo.graph import DataSource, Item, Population, RawData, Repository, batch_transfer, push
from mrepo.graph.maintenance import verify
from mrepo.store import MrepoError
from mrepo.store import protocol_names as names
from mrepo.store.objects import object_key
from tests.api.server import thread_server


@contextmanager
def counted_server(tmp_path: Path) -> Iterator[tuple[str, dict, Counter, Path]]:
    """(repository URL, write options, request counter by path, served repository root)."""
    root = tmp_path / "served"
    Repository.init(str(root)).close()
    token = add_token(tmp_path / "tokens.toml", "writer", "write")
    app = create_app(str(root), tmp_path / "tokens.toml", access_log=False)
    calls: Counter = Counter()

    async def counting(scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] == "http":
            calls[scope["path"]] += 1
        await app(scope, receive, send)

    with thread_server(counting) as base:
        yield base + "/repo", {"token": token, "retries": 2, "backoff": 0.05}, calls, root


def _commit(repo: Repository, n_items: int, seed: int, parent_items: dict | None = None,
            blobs: list[str] | None = None) -> dict:
    """Commit ``n_items`` new items (a blob and an array each) on ``dev`` beside ``parent_items``;
    the new blobs' hashes are appended to ``blobs``."""
    rng = np.random.default_rng(seed)
    items = dict(parent_items or {})
    for i in range(n_items):
        raw = rng.integers(0, 255, 2048, dtype=np.uint8).tobytes()
        blob = repo.objects.put_blob(raw)
        if blobs is not None:
            blobs.append(blob)
        item = Item("frames", f"m{seed}-{i}", RawData(blob, len(raw), stored=True),
                    {"pixel_size": 1.0}, {"global_shifts": repo.objects.put_array(rng.normal(size=(8, 2)))})
        items[item.key] = item.save(repo.objects)
    source = DataSource("grid", items)
    repo.commit(Population("p", {"grid": source.save(repo.objects)}, {}), message=f"c{seed}", branch="dev",
                author="t", time="2025-01-01T00:00:00Z")
    return items


HAVE = f"/repo/{names.BATCH_HAVE_PATH}"
UPLOAD = f"/repo/{names.BATCH_UPLOAD_PATH}"


def test_a_small_push_asks_once_and_sends_only_what_is_new(tmp_path: Path) -> None:
    repo = Repository.init(str(tmp_path / "local"))
    items = _commit(repo, 5, 1)
    with counted_server(tmp_path) as (url, opts, calls, root):
        first = push(repo, url, "dev", options=opts)
        assert calls[HAVE] == 1  # commit, population, source, items, blobs and arrays: one question
        assert (first.records, first.blobs, first.arrays) == (8, 5, 5)
        # the new branch's name is checked against the others by the server (409), not listed first
        assert calls[f"/repo/{names.LIST_PATH}"] == 0 and calls[f"/repo/{names.REFS_PATH}"] == 0
        assert calls[UPLOAD] == 1  # a small push: arrays, blobs and records in one pack
        _commit(repo, 1, 2, items)
        calls.clear()
        second = push(repo, url, "dev", options=opts)
        assert calls[HAVE] == 1
        assert (second.records, second.blobs, second.arrays) == (4, 1, 1)  # commit, population, source, item
        assert calls[UPLOAD] == 1  # one array: the blob and records follow it in the same pack
        served = Repository.open(str(root))
        assert served.refs.get("refs/heads/dev") == repo.refs.get("refs/heads/dev")
        assert verify(served.storage).ok


def test_a_large_push_sends_its_arrays_in_parallel_streams(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past STREAM_BYTES of arrays a push opens a second stream; the blobs and records follow in a
    pack of their own once both arrays' streams are stored."""
    monkeypatch.setattr(batch_transfer, "STREAM_BYTES", 100)  # bytes: each (8, 2) float64 array is 128
    repo = Repository.init(str(tmp_path / "local"))
    _commit(repo, 5, 1)
    with counted_server(tmp_path) as (url, opts, calls, root):
        first = push(repo, url, "dev", options=opts)
        assert calls[UPLOAD] == 3 and (first.records, first.blobs, first.arrays) == (8, 5, 5)
        assert verify(Repository.open(str(root)).storage).ok


def test_a_large_closure_is_negotiated_level_by_level(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch_transfer, "ONE_ROUND_RECORDS", 3)
    repo = Repository.init(str(tmp_path / "local"))
    items = _commit(repo, 5, 1)
    with counted_server(tmp_path) as (url, opts, calls, root):
        first = push(repo, url, "dev", options=opts)
        assert calls[HAVE] == 5  # commit, population, source, items, then the blobs and arrays
        assert (first.records, first.blobs, first.arrays) == (8, 5, 5)
        _commit(repo, 2, 2, items)
        second = push(repo, url, "dev", options=opts)
        assert (second.records, second.blobs, second.arrays) == (5, 2, 2)  # present items not descended into
        assert verify(Repository.open(str(root)).storage).ok


def test_a_damaged_blob_under_a_present_record_is_sent_again(tmp_path: Path) -> None:
    """The one-request negotiation asks about every blob of the closure, also below records the server
    holds, so a push repairs a blob that was damaged on the server since."""
    repo = Repository.init(str(tmp_path / "local"))
    blobs: list[str] = []
    _commit(repo, 3, 1, blobs=blobs)
    with counted_server(tmp_path) as (url, opts, _, root):
        push(repo, url, "dev", options=opts)
        path = root / object_key(blobs[0])
        good = path.read_bytes()
        path.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
        assert not verify(Repository.open(str(root)).storage).ok
        again = push(repo, url, "dev", options=opts)  # the branch is where it was: only the repair
        assert (again.records, again.blobs, again.arrays) == (0, 1, 0)
        assert path.read_bytes() == good
        assert verify(Repository.open(str(root)).storage).ok


CLOSURE = f"/repo/{names.BATCH_CLOSURE_PATH}"
DOWNLOAD = f"/repo/{names.BATCH_DOWNLOAD_PATH}"


def test_a_clone_lists_refs_with_their_values_and_gets_a_small_closure_at_once(tmp_path: Path) -> None:
    """clone reads every ref in one request (``GET refs``: not a listing plus a read per ref, nor one
    request per namespace) and the records of a small closure in one (``batch/closure``), then only
    the arrays and blobs (no download per record level)."""
    from mrepo.graph import clone

    repo = Repository.init(str(tmp_path / "local"))
    _commit(repo, 2, 1)
    with counted_server(tmp_path) as (url, opts, calls, _):
        push(repo, url, "dev", options=opts)
        push(repo, url, "dev", remote_branch="second", options=opts)
        calls.clear()
        copy, stats = clone(url, str(tmp_path / "copy"), src_options=opts)
        assert sorted(copy.branches()) == ["dev", "second"]
        assert calls[f"/repo/{names.REFS_PATH}"] == 1
        assert not [p for p in calls if p.startswith(f"/repo/{names.REFS_PATH}/heads/")]
        assert calls[f"/repo/{names.LIST_PATH}"] == 0
        assert calls[CLOSURE] == 1 and calls[DOWNLOAD] == 2  # the records; then the two arrays, a stream each
        assert stats.records == 5 and verify(copy.storage).ok


def test_a_large_closure_comes_in_part_at_once_and_the_rest_by_level(tmp_path: Path) -> None:
    """A closure of more records than one closure answer holds: the first come at once, the rest
    level by level; a fetch of one new commit on top takes the new records from one answer and
    downloads no record it already has."""
    from mrepo.graph import clone, fetch

    repo = Repository.init(str(tmp_path / "local"))
    items = _commit(repo, names.CLOSURE_RECORDS + 20, 1)
    with counted_server(tmp_path) as (url, opts, calls, _):
        push(repo, url, "dev", options=opts)
        calls.clear()
        copy, stats = clone(url, str(tmp_path / "copy"), src_options=opts)
        assert stats.records == names.CLOSURE_RECORDS + 23 and verify(copy.storage).ok
        assert calls[CLOSURE] == 1 and calls[DOWNLOAD] >= 2  # the items past the answer's end, then the data
        _commit(repo, 1, 2, items)
        push(repo, url, "dev", options=opts)
        copy.add_remote("server", url)
        calls.clear()
        got = fetch(copy, "server", options=opts)
        assert got.records == 4 and calls[CLOSURE] == 1  # commit, population, source, one item
        assert verify(Repository.open(str(tmp_path / "copy")).storage).ok


def _ref_server(answer) -> FastAPI:  # noqa: ANN001
    """A server whose ref listing (``GET /repo/refs``) is ``answer(prefix, after)``."""
    app = FastAPI()
    app.get("/health")(lambda: {"ok": True})

    @app.get(f"/repo/{names.REFS_PATH}")
    def refs(prefix: str = "refs/", after: str | None = None) -> dict:
        return answer(prefix, after)

    return app


GOOD = "ab" * 32


@pytest.mark.parametrize("refs,message", [
    ([{"name": "refs/tags/v1", "hash": GOOD}], "under 'refs/heads/'"),
    ([{"name": "refs/heads/../x", "hash": GOOD}], "invalid ref"),
    ([{"name": "refs/heads/dev", "hash": "../../etc"}], "not a hash"),
    ([{"name": "refs/heads/dev", "hash": 5}], "not a hash"),
    ([{"name": 7, "hash": GOOD}], "refused"),
])
def test_a_lying_ref_listing_is_refused(refs: list, message: str) -> None:
    from mrepo.store.http_backend import HttpBackend

    with thread_server(_ref_server(lambda prefix, after: {"refs": refs, "next": None})) as base:
        http = HttpBackend(base + "/repo", {"retries": 1})
        with pytest.raises(MrepoError, match=message):
            list(http.list_refs("refs/heads/"))


def test_a_ref_listing_that_pages_backwards_is_refused() -> None:
    from mrepo.store.http_backend import HttpBackend

    def answer(prefix: str, after: str | None) -> dict:  # the same page for ever
        return {"refs": [{"name": "refs/heads/a", "hash": GOOD}], "next": "refs/heads/a"}

    with thread_server(_ref_server(answer)) as base:
        with pytest.raises(MrepoError, match="goes backwards"):
            list(HttpBackend(base + "/repo", {"retries": 1}).list_refs("refs/heads/"))


def test_a_server_without_the_ref_listing_is_read_ref_by_ref() -> None:
    from mrepo.store.http_backend import HttpBackend
    from mrepo.store.refs import RefStore

    app = FastAPI()
    app.get("/health")(lambda: {"ok": True})
    app.get(f"/repo/{names.LIST_PATH}")(lambda prefix, after=None, limit=1000: {
        "entries": [{"key": "refs/heads/dev", "size": 65, "mtime": 0.0}] if prefix == "refs/heads/" else [],
        "next": None})
    app.get(f"/repo/{names.REFS_PATH}/heads/dev")(lambda: PlainTextResponse(GOOD + "\n", headers={"etag": '"e"'}))
    with thread_server(app) as base:
        http = HttpBackend(base + "/repo", {"retries": 1})
        assert http.list_refs("refs/heads/") is None
        assert list(RefStore(http).list("refs/heads/")) == [("refs/heads/dev", GOOD)]


@contextmanager
def closure_rewriting_server(tmp_path: Path, rewrite) -> Iterator[tuple[str, dict]]:  # noqa: ANN001
    """A real ``mrepo serve`` app whose ``batch/closure`` answers pass through ``rewrite(frames) -> frames``
    (a hostile or broken server); every other request is served as it is."""
    from mrepo.store import pack

    root = tmp_path / "served"
    Repository.init(str(root)).close()
    token = add_token(tmp_path / "tokens.toml", "writer", "write")
    app = create_app(str(root), tmp_path / "tokens.toml", access_log=False)

    async def rewriting(scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http" or scope["path"] != CLOSURE:
            await app(scope, receive, send)
            return
        start, body = {}, bytearray()

        async def keep(message) -> None:  # noqa: ANN001
            if message["type"] == "http.response.start":
                start.update(message)
            else:
                body.extend(message.get("body", b""))

        await app(scope, receive, keep)
        if start.get("status") != 200:
            await send(start)
            await send({"type": "http.response.body", "body": bytes(body)})
            return
        out = b"".join(pack.encode(rewrite(list(pack.decode([bytes(body)], 1 << 30)))))
        await send({**start, "headers": [(k, v) for k, v in start["headers"] if k != b"content-length"]})
        await send({"type": "http.response.body", "body": out})

    with thread_server(rewriting) as base:
        yield base + "/repo", {"token": token, "retries": 0}


def _flip_first_record(frames: list) -> list:
    key, data = frames[0]
    return [(key, data[:-3] + bytes([data[-3] ^ 1]) + data[-2:]), *frames[1:]]


@pytest.mark.parametrize("rewrite, message", [
    (_flip_first_record, "does not match its hash"),
    (lambda frames: [(f"arrays/{'e' * 64}/zarr.json", b"{}"), *frames], "in a closure of"),
    (lambda frames: frames * (names.CLOSURE_RECORDS // max(len(frames), 1) + 1), "in a closure of"),
])
def test_a_tampered_closure_is_refused_and_nothing_is_written(tmp_path: Path, rewrite, message: str) -> None:  # noqa: ANN001
    """A closure answer with a changed byte, a key that is not an object's, or more frames than an
    answer may hold: the clone fails with a one-line error and writes no record."""
    from mrepo.graph import clone

    repo = Repository.init(str(tmp_path / "local"))
    _commit(repo, 2, 1)
    with closure_rewriting_server(tmp_path, rewrite) as (url, opts):
        push(repo, url, "dev", options=opts)
        with pytest.raises(MrepoError, match=message) as err:
            clone(url, str(tmp_path / "copy"), src_options=opts)
        assert "\n" not in str(err.value)
    left = Repository.open(str(tmp_path / "copy")) if (tmp_path / "copy").exists() else None
    assert left is None or not list(left.storage.backend.list("objects/"))


def test_a_closure_that_leaves_records_out_is_completed_level_by_level(tmp_path: Path) -> None:
    """A server that sends only part of a closure (here: none of the items): what is missing is
    downloaded level by level, and the clone is complete and verified."""
    from mrepo.graph import clone

    repo = Repository.init(str(tmp_path / "local"))
    _commit(repo, 3, 1)
    with closure_rewriting_server(tmp_path, lambda frames: frames[:2]) as (url, opts):
        push(repo, url, "dev", options=opts)
        copy, stats = clone(url, str(tmp_path / "copy"), src_options=opts)
        assert stats.records == 6 and verify(copy.storage).ok


def test_a_server_without_the_closure_endpoint_is_walked_level_by_level(tmp_path: Path) -> None:
    from mrepo.graph import clone

    repo = Repository.init(str(tmp_path / "local"))
    _commit(repo, 3, 1)
    root = tmp_path / "served"
    Repository.init(str(root)).close()
    token = add_token(tmp_path / "tokens.toml", "writer", "write")
    app = create_app(str(root), tmp_path / "tokens.toml", access_log=False)

    async def older(scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] == "http" and scope["path"] == CLOSURE:
            await PlainTextResponse("Not Found", status_code=404)(scope, receive, send)
            return
        await app(scope, receive, send)

    with thread_server(older) as base:
        opts = {"token": token}
        push(repo, base + "/repo", "dev", options=opts)
        copy, stats = clone(base + "/repo", str(tmp_path / "copy"), src_options=opts)
        assert stats.records == 6 and verify(copy.storage).ok
