"""History (log order, merge base on a criss-cross), 3-way merges and garbage collection."""

from __future__ import annotations

import time

import numpy as np
import pytest

from mrepo.graph import DataSource, Population, Repository, gc, merge_base, verify
from mrepo.store import MergeConflict, RefConflict
from tests.factories import make_item, make_population, make_species


def t(n: int) -> str:
    return f"2024-01-01T00:00:{n:02d}Z"


def test_log_is_newest_first_and_lists_each_commit_once(repo: Repository) -> None:
    a = repo.commit(Population("p"), message="a", time=t(1))
    b = repo.commit(Population("p", metadata={"v": 1}), message="b", time=t(2), branch="side",
                    parents=[a], expected_head=None)
    c = repo.commit(Population("p", metadata={"v": 2}), message="c", time=t(3))
    m = repo.commit(Population("p", metadata={"v": 3}), message="m", time=t(4), parents=[c, b])
    assert [h for h, _ in repo.log()] == [m, c, b, a]
    assert [h for h, _ in repo.log(limit=2)] == [m, c]
    assert repo.resolve("main~1") == c and repo.resolve("main~2") == a
    assert repo.resolve(m[:10]) == m


def test_merge_base_on_criss_cross(repo: Repository) -> None:
    """A -> B (main), A -> C (side); D = B+C on main, E = C+B on side: both B and C are best
    common ancestors, neither descends from the other; the newer one is chosen."""
    a = repo.commit(Population("p"), message="A", time=t(1))
    b = repo.commit(Population("p", metadata={"b": 1}), message="B", time=t(2))
    c = repo.commit(Population("p", metadata={"c": 1}), message="C", time=t(3), branch="side", parents=[a],
                    expected_head=None)
    d = repo.commit(Population("p", metadata={"d": 1}), message="D", time=t(4), parents=[b, c])
    e = repo.commit(Population("p", metadata={"e": 1}), message="E", time=t(5), branch="side", parents=[c, b])
    assert merge_base(repo.objects, d, e) == c  # B and C both qualify; C is newer
    assert merge_base(repo.objects, b, c) == a
    assert merge_base(repo.objects, d, b) == b
    other = Repository.init(repo.url + "-other")
    unrelated = other.commit(Population("q"), message="x")
    from mrepo.graph import copy_closure

    copy_closure(other.storage, repo.storage, [unrelated])
    assert merge_base(repo.objects, d, unrelated) is None


@pytest.fixture
def forked(repo: Repository):
    """main and side both start at a commit holding species 'apo' and source 'grid1'."""
    pop = make_population(repo, n_items=3)
    base = repo.commit(pop, message="base", time=t(1))
    repo.create_branch("side", base)
    return repo, pop, base


def with_species(repo: Repository, pop: Population, name: str, seed: int) -> Population:
    items = [repo.item(h) for h in repo.source(pop.sources["grid1"]).items.values()]
    return Population(pop.name, pop.sources, {**pop.species, name: make_species(repo, name, items, seed=seed)
                                              .save(repo.objects)}, pop.metadata)


def test_merge_one_side_changed_takes_it(forked) -> None:
    repo, pop, base = forked
    repo.commit(with_species(repo, pop, "holo", 5), message="ours", branch="main", time=t(2))
    theirs = with_species(repo, pop, "apo", 9)  # side changes 'apo'
    repo.commit(theirs, message="theirs", branch="side", time=t(3))
    result = repo.merge("side", into="main")
    merged = repo.population(result.commit)
    assert result.kind == "merge" and not result.report.conflicts
    assert merged.species["apo"] == theirs.species["apo"]
    assert "holo" in merged.species
    assert repo.get_commit(result.commit).parents == (repo.resolve("main~1"), repo.resolve("side"))


def test_merge_both_sides_same_change_is_no_conflict(forked) -> None:
    repo, pop, base = forked
    same = with_species(repo, pop, "apo", 9)
    repo.commit(same, message="ours", time=t(2))
    repo.commit(same, message="theirs", branch="side", time=t(3))
    result = repo.merge("side", policy="fail")
    assert result.kind == "merge" and repo.population().species == same.species


@pytest.mark.parametrize("policy", ["ours", "theirs", "fail"])
def test_merge_conflict_policies(forked, policy: str) -> None:
    repo, pop, base = forked
    ours = with_species(repo, pop, "apo", 7)
    theirs = with_species(repo, pop, "apo", 8)
    ours_h = repo.commit(ours, message="ours", time=t(2))
    repo.commit(theirs, message="theirs", branch="side", time=t(3))
    if policy == "fail":
        listing_before = sorted(e.key for e in repo.storage.backend.list("refs/"))
        with pytest.raises(MergeConflict, match="1 merge conflict"):
            repo.merge("side", policy="fail")
        assert repo.head() == ours_h
        assert sorted(e.key for e in repo.storage.backend.list("refs/")) == listing_before
        return
    result = repo.merge("side", policy=policy)
    (conflict,) = result.report.conflicts
    assert (conflict.kind, conflict.key, conflict.resolution) == ("species", "apo", policy)
    want = ours if policy == "ours" else theirs
    assert repo.population().species["apo"] == want.species["apo"]
    op = repo.get_commit(result.commit).operation
    assert op["policy"] == policy and op["base"] == base
    assert repo.objects.get_record(op["report"]["@record"], "merge-report")["conflicts"][0]["key"] == "apo"


def test_merge_items_within_a_source(forked) -> None:
    """Different items added on each side of the same source merge without conflict; the same
    item changed differently on both sides is an item conflict."""
    repo, pop, base = forked
    src = repo.source(pop.sources["grid1"])

    def add_item(name: str, seed: int) -> Population:
        it = make_item(repo, name, seed=seed)
        s = DataSource("grid1", {**src.items, it.key: it.save(repo.objects)})
        return Population(pop.name, {"grid1": s.save(repo.objects)}, pop.species)

    repo.commit(add_item("new_ours", 50), message="ours", time=t(2))
    repo.commit(add_item("new_theirs", 60), message="theirs", branch="side", time=t(3))
    merged = repo.population(repo.merge("side").commit)
    assert len(repo.source(merged.sources["grid1"]).items) == len(src.items) + 2

    key = next(iter(src.items))
    item = repo.item(src.items[key])
    for branch, label, when in (("main", "ours2", 4), ("side", "theirs2", 5)):
        changed = item.__class__(**{**item.__dict__, "metadata": {"by": label}})
        cur = repo.population(branch)
        s = repo.source(cur.sources["grid1"])
        s2 = DataSource("grid1", {**s.items, key: changed.save(repo.objects)})
        repo.commit(Population(cur.name, {"grid1": s2.save(repo.objects)}, cur.species), message=label,
                    branch=branch, time=t(when))
    with pytest.raises(MergeConflict, match="item grid1/"):
        repo.merge("side")
    result = repo.merge("side", policy="theirs")
    final = repo.source(repo.population(result.commit).sources["grid1"])
    assert repo.item(final.items[key]).metadata == {"by": "theirs2"}


def test_merge_fast_forward_and_up_to_date(forked) -> None:
    repo, pop, base = forked
    new = repo.commit(with_species(repo, pop, "apo", 3), message="side", branch="side")
    assert repo.merge("side").kind == "fast-forward" and repo.head() == new
    assert repo.merge("side").kind == "up-to-date"


def test_commit_with_stale_expected_head_is_refused(repo: Repository) -> None:
    a = repo.commit(Population("p"), message="a")
    repo.commit(Population("p", metadata={"x": 1}), message="b")
    with pytest.raises(RefConflict):
        repo.commit(Population("p", metadata={"y": 1}), message="c", expected_head=a)


def test_gc_keeps_reachable_and_young_and_deletes_old_unreachable(repo: Repository) -> None:
    repo.commit(make_population(repo, n_items=2), message="kept")
    reachable_files = {e.key for e in repo.storage.backend.list("")}
    orphan_record = repo.objects.put_record("note", {"text": "unreferenced"})
    orphan_array = repo.objects.put_array(np.arange(10.0))
    orphan_blob = repo.objects.put_blob(b"lonely bytes")
    now = time.time()

    young = gc(repo.storage, grace_seconds=3600, now=now)
    assert (young.deleted_objects, young.deleted_arrays, young.kept_young) == (0, 0, 3)
    dry = gc(repo.storage, grace_seconds=3600, now=now + 7200, dry_run=True)
    assert (dry.deleted_objects, dry.deleted_arrays) == (2, 1)
    assert repo.objects.has_object(orphan_record)

    old = gc(repo.storage, grace_seconds=3600, now=now + 7200)
    assert (old.deleted_objects, old.deleted_arrays) == (2, 1) and old.deleted_bytes > 0
    assert not repo.objects.has_array(orphan_array)
    assert not repo.storage.backend.exists(f"objects/{orphan_blob[:2]}/{orphan_blob[2:]}")
    assert not repo.storage.backend.exists(f"objects/{orphan_record[:2]}/{orphan_record[2:]}")
    assert {e.key for e in repo.storage.backend.list("")} == reachable_files
    assert verify(repo.storage, workers=2).ok


def test_gc_keeps_what_tags_and_other_branches_reach(repo: Repository) -> None:
    first = repo.commit(make_population(repo, n_items=1, seed=1), message="tagged")
    repo.create_tag("v1", first)
    repo.create_branch("old", first)
    repo.commit(make_population(repo, n_items=1, seed=2), message="unrelated root", parents=[])  # first: not an ancestor
    report = gc(repo.storage, grace_seconds=0, now=time.time() + 10)
    assert report.deleted_objects == report.deleted_arrays == 0
    repo.delete_tag("v1")
    repo.delete_branch("old")
    report = gc(repo.storage, grace_seconds=0, now=time.time() + 10)
    assert report.deleted_objects > 0 and report.deleted_arrays > 0
    assert verify(repo.storage, workers=2).ok
