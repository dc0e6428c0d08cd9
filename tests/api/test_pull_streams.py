"""A pull's arrays are dealt to its download streams by the sizes the server declares (``batch/sizes``).

Dealt by hash order, the three large maps of one species could all land in one stream, and a pull of
~100 MB then ran as one stream (measured: 101.9 MB in one, 2.1 MB in the other)."""

from __future__ import annotations

import httpx
import numpy as np
from fastapi import FastAPI

from mrepo.graph.batch_transfer import PULL_STREAMS, _pull_groups
from mrepo.store import protocol_names as names
from mrepo.store.http_backend import HttpBackend
from tests.api.server import thread_server


def _held_arrays(served) -> tuple[list[str], list[str], dict[str, int]]:  # noqa: ANN001
    """Three 1 MiB maps and five small arrays stored on the served repository: (large, small, bytes)."""
    objects = served.repo().objects
    rng = np.random.default_rng(3)
    large = [objects.put_array(rng.normal(size=(64, 64, 64)).astype(np.float32)) for _ in range(3)]
    small = [objects.put_array(rng.normal(size=(40, 2)).astype(np.float32)) for _ in range(5)]
    return large, small, {**{h: 64 ** 3 * 4 for h in large}, **{h: 40 * 2 * 4 for h in small}}


def test_sizes_answers_the_bytes_each_held_array_declares(served) -> None:  # noqa: ANN001
    large, small, nbytes = _held_arrays(served)
    unknown = "0" * 64

    with httpx.Client(base_url=served.base, timeout=30) as c:
        r = c.post(f"/repo/{names.BATCH_SIZES_PATH}", json={names.F_ARRAYS: [*large, *small, unknown]},
                   headers=served.auth("read"))
        assert r.status_code == 200, r.text
        assert r.json()[names.F_SIZES] == nbytes  # the unknown array is left out
        assert c.post(f"/repo/{names.BATCH_SIZES_PATH}", json={names.F_ARRAYS: large}).status_code == 401
        bad = c.post(f"/repo/{names.BATCH_SIZES_PATH}", json={names.F_ARRAYS: ["../x"]}, headers=served.auth("read"))
        assert bad.status_code == 400  # not a hash: refused before any file is touched


def test_a_pull_deals_the_large_maps_to_separate_streams(served) -> None:  # noqa: ANN001
    large, small, _ = _held_arrays(served)
    http = HttpBackend(served.url, served.opts("read"))
    groups = _pull_groups(http, sorted([*large, *small]))
    assert len(groups) == PULL_STREAMS == 3
    assert sorted(len(set(g) & set(large)) for g in groups) == [1, 1, 1]  # one large map per stream
    assert sorted(h for g in groups for h in g) == sorted([*large, *small])


def _bare_app() -> FastAPI:
    """A server with only ``/health`` (what the test server waits for)."""
    app = FastAPI()
    app.get("/health")(lambda: {"ok": True})
    return app


def test_sizes_from_a_lying_server_only_shape_the_balance() -> None:
    """A hostile server's answer: entries not asked for, negative, non-integer and boolean sizes are
    dropped; the arrays still all go to some stream."""
    asked = [f"{i:064x}" for i in range(1, 5)]
    app = _bare_app()

    @app.post(f"/repo/{names.BATCH_SIZES_PATH}")
    def lie() -> dict:
        return {names.F_SIZES: {"f" * 64: 10 ** 9, asked[0]: -5, asked[1]: "12", asked[2]: True, asked[3]: 7}}

    with thread_server(app) as base:
        http = HttpBackend(base + "/repo", {"retries": 1})
        assert http.batch.sizes(asked) == {asked[3]: 7}
        groups = _pull_groups(http, asked)
        assert sorted(h for g in groups for h in g) == asked


def test_many_arrays_are_dealt_round_robin_without_asking() -> None:
    """More than SIZED_PULL arrays: no batch/sizes request reaches the server, round-robin streams; a few
    arrays: one request."""
    from mrepo.graph.batch_transfer import SIZED_PULL

    calls = []
    app = _bare_app()

    @app.post(f"/repo/{names.BATCH_SIZES_PATH}")
    def counted() -> dict:
        calls.append(1)
        return {names.F_SIZES: {}}

    hashes = [f"{i:064x}" for i in range(1, SIZED_PULL + 2)]
    with thread_server(app) as base:
        http = HttpBackend(base + "/repo", {"retries": 1})
        assert _pull_groups(http, hashes) == [hashes[i::2] for i in range(2)]
        assert calls == []
        _pull_groups(http, hashes[:5])
        assert calls == [1]


def test_a_server_without_sizes_gets_round_robin_streams() -> None:
    app = _bare_app()  # answers 404 to batch/sizes, as a server before it did
    hashes = [f"{i:064x}" for i in range(1, 6)]
    with thread_server(app) as base:
        http = HttpBackend(base + "/repo", {"retries": 1})
        assert http.batch.sizes(hashes) == {}
        assert _pull_groups(http, hashes) == [hashes[0::2], hashes[1::2]]
