"""clone / fetch / push / pull between local, memory and S3 (moto) repositories."""

from __future__ import annotations

import pytest

from mrepo.graph import Population, Repository, clone, fetch, pull, push, verify
from mrepo.store import RefConflict
from tests.factories import make_population

PAIRS = [("local", "memory"), pytest.param("memory", "s3", marks=pytest.mark.s3),
         pytest.param("s3", "local", marks=pytest.mark.s3)]


def t(n: int) -> str:
    return f"2024-02-01T00:00:{n:02d}Z"


@pytest.mark.parametrize("src_kind,dst_kind", PAIRS)
def test_clone_fetch_push_pull_round_trip(make_url, src_kind: str, dst_kind: str) -> None:
    src = Repository.init(make_url(src_kind))
    first = src.commit(make_population(src, n_items=2), message="first", time=t(1))
    src.create_tag("v1", first)

    dst_url = make_url(dst_kind)
    dst, stats = clone(src.url, dst_url)
    assert stats.arrays > 0 and stats.records > 0 and stats.blobs > 0
    assert dst.head() == first and dst.tags() == {"v1": first}
    assert dst.remotes() == {"origin": src.url}
    assert dst.population() == src.population()
    assert verify(dst.storage, workers=4).ok

    # push from the clone: only the new objects travel; pushing again sends nothing
    pop = make_population(dst, n_items=2, species=("apo", "holo"))
    second = dst.commit(pop, message="second", time=t(2))
    sent = push(dst, "origin")
    assert src.head() == second and sent.refs == {"refs/heads/main": second}
    assert 0 < sent.arrays < stats.arrays + 10
    nothing = push(dst, "origin")
    assert (nothing.bytes, nothing.array_bytes, nothing.arrays, nothing.records) == (0, 0, 0, 0)

    # fetch / pull the other way
    third = src.commit(Population(pop.name, pop.sources, pop.species, {"note": 3}), message="third", time=t(3))
    fetched = fetch(dst, "origin")
    assert dst.refs.get("refs/remotes/origin/main") == third and dst.head() == second
    assert fetched.records >= 2 and fetched.arrays == 0  # metadata-only change: no array data
    _, merged = pull(dst, "origin")
    assert merged.kind == "fast-forward" and dst.head() == third
    assert verify(src.storage, workers=4).ok and verify(dst.storage, workers=4).ok


def test_non_fast_forward_push_is_refused_unless_forced(make_url) -> None:
    a = Repository.init(make_url("local"))
    base = a.commit(Population("p"), message="base", time=t(1))
    b, _ = clone(a.url, make_url("memory"))
    a.commit(Population("p", metadata={"a": 1}), message="remote work", time=t(2))
    mine = b.commit(Population("p", metadata={"b": 1}), message="local work", time=t(3))
    with pytest.raises(RefConflict, match="push rejected"):
        push(b, "origin")
    assert a.head() != mine
    push(b, "origin", force=True)
    assert a.head() == mine
    assert a.log()[-1][0] == base


def test_pull_merges_diverged_histories(make_url) -> None:
    a = Repository.init(make_url("local"))
    pop = make_population(a, n_items=1)
    a.commit(pop, message="base", time=t(1))
    b, _ = clone(a.url, make_url("local"))
    a.commit(Population(pop.name, pop.sources, pop.species, {"from": "a"}), message="a", time=t(2))
    b.commit(Population("renamed-by-b", pop.sources, {}, {}), message="b", time=t(3))
    stats, result = pull(b, "origin", policy="ours")
    assert result.kind == "merge" and stats.records >= 2
    merged = b.population()
    assert merged.species == {}  # b removed the species, a left it unchanged
    assert merged.metadata == {"from": "a"}  # only a changed the metadata
    assert len(b.get_commit("main").parents) == 2


def test_fetch_by_url_and_push_to_new_branch(make_url) -> None:
    a = Repository.init(make_url("memory"))
    h = a.commit(make_population(a, n_items=1), message="x")
    b = Repository.init(make_url("local"))
    fetch(b, a.url)
    assert h in {v for _, v in b.refs.list("refs/remotes/")}
    b.merge(h, into="main")
    push(b, a.url, "main", remote_branch="copy")
    assert a.branches() == {"main": h, "copy": h}


@pytest.mark.s3
@pytest.mark.parametrize("page", [1000, 3])
def test_push_to_s3_learns_what_a_small_remote_holds_from_one_listing(make_url, monkeypatch, page: int) -> None:
    """A push to an S3 remote that lists in one page per prefix sends no presence request for an
    object it lacks (two listings tell); a larger remote is checked object by object. Either way
    only what the remote lacks travels, present objects are freshened, the ref moves by
    compare-and-swap against the push's own read of it, and the remote verifies."""
    from mrepo.store import open_backend
    from mrepo.store.backends import S3Backend

    monkeypatch.setattr(S3Backend, "list_page", page)
    src = Repository.init(make_url("local"))
    src.commit(make_population(src, n_items=2), message="first", time=t(1))
    dst_url = make_url("s3")
    Repository.init(dst_url).close()
    backend = open_backend(dst_url)
    root = backend.url[len("s3://"):].split("/", 1)[1] + "/"
    calls: list[tuple[str, str]] = []

    def count(model, params, **kwargs) -> None:  # noqa: ANN001
        calls.append((model.name, params.get("Key", "").removeprefix(root)))

    events = backend.fs.s3.meta.events  # s3fs shares one client per set of options
    events.register("before-parameter-build.s3", count)
    try:
        sent = push(src, dst_url)  # into an empty remote: fits one page whatever the page size
        first_calls, calls[:] = list(calls), []
        held = {e.key for e in backend.list("")}
        second = src.commit(make_population(src, n_items=2, species=("apo", "holo")), message="second", time=t(2))
        again = push(src, dst_url)
    finally:
        events.unregister("before-parameter-build.s3", count)
    dst = Repository.open(dst_url)
    assert sent.arrays > 0 and dst.head() == second and verify(dst.storage, workers=4).ok
    assert 0 < again.arrays < sent.arrays
    assert not [k for op, k in first_calls if op in ("CopyObject", "HeadObject")], first_calls
    assert [op for op, _ in first_calls].count("GetObject") <= 2, first_calls  # mrepo.json, the ref
    checked = {k for op, k in calls if op == "CopyObject"}
    assert checked & held  # present objects are freshened
    if page == 1000:
        assert checked <= held, checked - held  # nothing asked about what the listing did not show
    else:
        assert checked - held  # too large to list: absent objects are checked one by one
