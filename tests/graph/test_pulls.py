"""Pull requests: records under refs/pulls/, checks, merge policies, transfers, errors."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mrepo.graph import DataSource, Item, ParticleTable, Population, RawData, Repository, Species, clone, fetch, push
from mrepo.graph.collisions import check_collisions
from mrepo.graph.pulls import check_pull, close_pull, get_pull, list_pulls, load_report, merge_pull, open_pull
from mrepo.store import InvalidInput, MergeConflict, RefNotFound

T0, T1, T2, TM = "2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z", "2024-01-03T00:00:00Z", "2024-02-01T00:00:00Z"
Row = tuple[int, str, tuple[float, float, float]]


# ----------------------------------------------------------------------------- builders


def _items(repo: Repository) -> dict[str, str]:
    """A tilt series and a frame series (same hashes on every call): item key -> item record."""
    out = {}
    for name, kind in (("ts1", "tilts"), ("fr1", "frames")):
        raw = f"raw data of {name}".encode()
        key = repo.objects.put_blob(raw)
        out[key] = Item(kind, name, RawData(key, len(raw), stored=True), {"pixel_size": 2.0}).save(repo.objects)
    return out


def make_items(repo: Repository) -> tuple[str, str]:
    """Keys (raw data hashes) of the tilt series and the frame series."""
    ts, fr = _items(repo)
    return ts, fr


def source(repo: Repository) -> str:
    return DataSource("grid", _items(repo)).save(repo.objects)


def make_species(repo: Repository, name: str, diameter: float, rows: list[Row], symmetry: str = "C1") -> str:
    vol = repo.objects.put_array(np.ones((4, 4, 4), np.float32))
    if rows:
        c = np.array([r[2] for r in rows], dtype=float)
        table = ParticleTable.build([r[0] for r in rows], [r[1] for r in rows], c, np.zeros_like(c),
                                    np.ones(len(rows), np.uint8))
    else:
        table = ParticleTable.empty()
    body = Species(name, diameter, "C1", 2.0, 4, vol, vol, vol, table.save(repo.objects)).to_body()
    body["symmetry"] = symmetry  # lets a test store a species with an unknown symmetry
    return repo.objects.put_record("species", body)


def population(repo: Repository, species: dict[str, str]) -> Population:
    return Population("pop", {"grid": source(repo)}, species)


def setup(repo: Repository, incoming: dict[str, list[Row]] | None = None, change_a: list[Row] | None = None,
          ) -> tuple[str, str]:
    """main: species A; feature (from main): adds ``incoming`` species (diameter 60) and optionally
    replaces A's particles; main then adds a far-away species C so the merge is a true 3-way merge.
    Returns the item keys (tilts, frames)."""
    ts, fr = make_items(repo)
    a_rows = [(1, ts, (0, 0, 0)), (2, fr, (0, 0, 0)), (5, ts, (1000, 1000, 0)), (6, ts, (2000, 0, 0))]
    a = make_species(repo, "A", 100.0, a_rows)
    repo.commit(population(repo, {"A": a}), message="base", branch="main", author="t", time=T0)
    repo.create_branch("feature", "main")
    if incoming is None:
        incoming = {"B": [(101, ts, (39, 0, 0)), (102, ts, (0, 41, 0)), (104, fr, (20, 0, 500)),
                          (5, ts, (1002, 1000, 0)), (201, ts, (500, 500, 500)), (202, ts, (520, 500, 500)),
                          (203, ts, (800, 500, 500))]}
    feature = {"A": a if change_a is None else make_species(repo, "A", 100.0, change_a)}
    feature.update({n: make_species(repo, n, 60.0, rows) for n, rows in incoming.items()})
    repo.commit(population(repo, feature), message="new species", branch="feature", author="t", time=T1)
    c = make_species(repo, "C", 50.0, [(900, ts, (5000, 5000, 0))])
    repo.commit(population(repo, {"A": a, "C": c}), message="C", branch="main", author="t", time=T2)
    return ts, fr


def table_of(repo: Repository, rev: str, name: str) -> tuple[Species, ParticleTable]:
    sp = repo.species(repo.population(rev).species[name])
    return sp, repo.particles(sp.particles)


@pytest.fixture
def mem() -> Repository:
    return Repository.init(f"memory://pulls-{uuid.uuid4().hex[:12]}")


# ----------------------------------------------------------------------------- opening, listing, closing


def test_open_numbers_records_and_list(mem: Repository) -> None:
    setup(mem)
    p1 = open_pull(mem, "feature", "main", "Add B", author="ann", time=TM)
    p2 = open_pull(mem, "feature", "main", "Again", author="bob", time=TM)
    assert (p1.number, p2.number) == (1, 2)
    h, pr = get_pull(mem, 1)
    assert mem.refs.get("refs/pulls/1") == h and pr == p1
    body = mem.objects.get_record(h, "pull-request")
    assert body["from"] == {"name": "feature", "ref": "refs/heads/feature", "commit": {"@record": mem.head("feature")}}
    assert body["state"] == "open" and body["into"] == "main" and body["check"] is None
    closed = close_pull(mem, 2, time=TM)
    assert closed.state == "closed" and closed.previous is not None
    assert [p.number for p in list_pulls(mem)] == [1, 2] and [p.number for p in list_pulls(mem, "open")] == [1]
    with pytest.raises(InvalidInput, match="closed"):
        merge_pull(mem, 2)
    with pytest.raises(RefNotFound, match="unknown pull request source 'nope'"):
        open_pull(mem, "nope", "main", "x")
    with pytest.raises(RefNotFound, match="no pull request #9"):
        get_pull(mem, 9)


# ----------------------------------------------------------------------------- checks


def test_check_stores_the_report_with_exactly_the_known_pairs(mem: Repository) -> None:
    ts, fr = setup(mem)
    open_pull(mem, "feature", "main", "Add B", time=TM)
    c = check_pull(mem, 1, time=TM)
    r = c.report
    assert r.incoming == ["B"] and r.existing == ["A", "C"] and r.conflicts == []
    assert [(x.incoming_id, x.existing_id, x.item) for x in r.collisions] == [(101, 1, ts), (104, 2, fr)]
    assert [(d.id_a, d.id_b) for d in r.duplicates] == [(201, 202)]
    # id 5 stays in A and would also be in B: one pick in two species (a copy, not a move)
    assert [(x.id, x.existing, x.incoming) for x in r.shared] == [(5, "A", "B")] and r.reclassifications == []
    assert r.id_clashes == []
    assert get_pull(mem, 1)[1].check == c.report_hash
    assert load_report(mem, c.report_hash) == r
    body = mem.objects.get_record(c.report_hash, "collision-report")
    assert body["commits"]["target"] == {"@record": mem.head("main")}


def test_check_follows_the_source_branch(mem: Repository) -> None:
    setup(mem)
    open_pull(mem, "feature", "main", "Add B", time=TM)
    pop = mem.population("feature")
    new = mem.commit(Population(pop.name, pop.sources, {"A": pop.species["A"]}), message="drop B", branch="feature",
                     author="t", time=T2)
    c = check_pull(mem, 1, time=TM)
    assert c.pull.head == new and c.report.incoming == [] and c.report.clean


# ----------------------------------------------------------------------------- merging


def test_fail_refuses_and_writes_no_ref(mem: Repository) -> None:
    setup(mem)
    open_pull(mem, "feature", "main", "Add B", time=TM)
    moved = mem.commit(mem.population("feature"), message="same population, new commit", branch="feature",
                       author="t", time=T2)  # followed by the check, but a refused merge records nothing
    before = dict(mem.refs.list())
    with pytest.raises(MergeConflict, match=r"#1: 2 collisions, 1 duplicates, 1 shared; merge refused"):
        merge_pull(mem, 1, policy="fail")
    assert dict(mem.refs.list()) == before
    assert get_pull(mem, 1)[1].head != moved
    assert check_pull(mem, 1).pull.head == moved == get_pull(mem, 1)[1].head


def test_drop_incoming_merge_commit_and_idempotence(mem: Repository) -> None:
    setup(mem)
    open_pull(mem, "feature", "main", "Add B", time=TM)
    target, head = mem.head("main"), mem.head("feature")
    m = merge_pull(mem, 1, policy="drop-incoming", author="t", time=TM)
    assert m.kind == "merge" and mem.head("main") == m.commit and m.dropped == {"B": 4}
    commit = mem.get_commit(m.commit)
    assert commit.parents == (target, head)
    op = commit.operation
    assert (op["name"], op["pr"], op["policy"], op["overlap_factor"]) == ("pr-merge", 1, "drop-incoming", 0.5)
    assert op["report"] == {"@record": m.report_hash}
    _, b = table_of(mem, "main", "B")
    assert sorted(b.ids.tolist()) == [102, 201, 203]  # 101, 104 collided; 5 stays A's; 202 duplicated 201
    assert table_of(mem, "main", "A")[0] == table_of(mem, target, "A")[0]
    pr = get_pull(mem, 1)[1]
    assert (pr.state, pr.merge_commit, pr.check) == ("merged", m.commit, m.report_hash)
    again = merge_pull(mem, 1, policy="drop-incoming", author="t", time=TM)
    assert again.kind == "already-merged" and again.commit == m.commit and mem.head("main") == m.commit
    open_pull(mem, "feature", "main", "same branch again", time=TM)
    up = merge_pull(mem, 2, policy="allow")
    assert up.kind == "up-to-date" and up.commit == m.commit and mem.head("main") == m.commit


def test_drop_existing_marks_species_for_refinement(mem: Repository) -> None:
    setup(mem)
    open_pull(mem, "feature", "main", "Add B", time=TM)
    m = merge_pull(mem, 1, policy="drop-existing", author="t", time=TM)
    assert m.dropped == {"A": 3, "B": 1}
    sp_a, a = table_of(mem, "main", "A")
    assert sorted(a.ids.tolist()) == [6]  # 1, 2 collided with B; 5 moves to B
    assert sp_a.metadata["needs_refinement"] is True and "#1" in sp_a.metadata["needs_refinement_reason"]
    _, b = table_of(mem, "main", "B")
    assert sorted(b.ids.tolist()) == [5, 101, 102, 104, 201, 203]
    assert "needs_refinement" not in table_of(mem, "main", "C")[0].metadata


def test_allow_merges_as_is(mem: Repository) -> None:
    setup(mem)
    open_pull(mem, "feature", "main", "Add B", time=TM)
    m = merge_pull(mem, 1, policy="allow", author="t", time=TM)
    assert mem.population("main").species["B"] == mem.population("feature").species["B"]
    assert mem.population("main").species["C"] == mem.population("main~1").species["C"]
    assert m.dropped == {}


def test_reclassification_moving_particles_is_clean(mem: Repository) -> None:
    ts, fr = make_items(mem)
    setup(mem, incoming={"A_open": [(5, ts, (1001, 1000, 0)), (6, ts, (2000, 1, 0))]},
                   change_a=[(1, ts, (0, 0, 0)), (2, fr, (0, 0, 0))])
    open_pull(mem, "feature", "main", "split A", time=TM)
    c = check_pull(mem, 1)
    assert c.report.incoming == ["A", "A_open"] and c.report.clean
    assert [(x.id, x.source, x.target) for x in c.report.reclassifications] == [(5, "A", "A_open"),
                                                                                 (6, "A", "A_open")]
    m = merge_pull(mem, 1, policy="fail", author="t", time=TM)
    assert sorted(table_of(mem, m.commit, "A")[1].ids.tolist()) == [1, 2]


def test_three_way_conflict_refuses_whatever_the_policy(mem: Repository) -> None:
    ts, _ = setup(mem)
    pop = mem.population("main")
    mem.commit(Population(pop.name, pop.sources, {**pop.species, "B": make_species(mem, "B", 60.0,
               [(7000, ts, (9000, 9000, 0))])}), message="other B", branch="main", author="t", time=T2)
    open_pull(mem, "feature", "main", "Add B", time=TM)
    assert [c["key"] for c in check_pull(mem, 1).report.conflicts] == ["B"]
    before = dict(mem.refs.list())
    with pytest.raises(MergeConflict, match="1 merge conflict"):
        merge_pull(mem, 1, policy="allow")
    assert dict(mem.refs.list()) == before


@settings(max_examples=12, deadline=None)
@given(st.integers(0, 2**31), st.integers(1, 25), st.floats(0.2, 1.2))
def test_after_drop_incoming_recheck_finds_nothing(seed: int, n: int, factor: float) -> None:
    repo = Repository.init(f"memory://pulls-prop-{uuid.uuid4().hex[:12]}")
    rng = np.random.default_rng(seed)
    ts, fr = make_items(repo)
    pick = lambda k, first: [(first + i, [ts, fr][int(rng.integers(2))], tuple(rng.uniform(0, 300, 3)))  # noqa: E731
                             for i in range(k)]
    a = make_species(repo, "A", 100.0, pick(n, 0))
    repo.commit(population(repo, {"A": a}), message="base", branch="main", author="t", time=T0)
    repo.create_branch("feature", "main")
    repo.commit(population(repo, {"A": a, "B": make_species(repo, "B", 60.0, pick(n, 1000))}), message="B",
                branch="feature", author="t", time=T1)
    open_pull(repo, "feature", "main", "B", time=TM)
    target = repo.head("main")
    try:
        m = merge_pull(repo, 1, policy="drop-incoming", overlap_factor=factor, author="t", time=TM)
    except MergeConflict as exc:  # every particle of B collided: refused, nothing merged
        assert "every particle" in str(exc) and repo.head("main") == target
        return
    merged = {name: table_of(repo, m.commit, name) for name in ("A", "B")}
    kinds = {ts: "tilts", fr: "frames"}
    r = check_collisions({"B": merged["B"]}, {"A": merged["A"]}, kinds, overlap_factor=factor)
    assert r.collisions == [] and r.duplicates == []
    assert merge_pull(repo, 1, policy="drop-incoming", overlap_factor=factor).commit == m.commit


# ----------------------------------------------------------------------------- transfers


@pytest.mark.parametrize("policy", ["drop-incoming", "allow"])
def test_same_merge_commit_in_a_clone_and_after_push(tmp_path, policy: str) -> None:
    a = Repository.init(str(tmp_path / "a"))
    setup(a)
    open_pull(a, "feature", "main", "Add B", author="ann", time=TM)
    b, _ = clone(str(tmp_path / "a"), str(tmp_path / "b"))
    e, _ = clone(str(tmp_path / "a"), str(tmp_path / "e"))
    assert get_pull(b, 1) == get_pull(a, 1)  # the pull request travelled with the clone
    # a third repository gets main and feature by push and opens the same pull request itself
    c = Repository.init(str(tmp_path / "c"))
    a.add_remote("c", str(tmp_path / "c"))
    push(a, "c", "main")
    push(a, "c", "feature")
    open_pull(c, "feature", "main", "Add B", author="someone else", time=T2)
    results = [merge_pull(r, 1, policy=policy, author="merger", time=TM).commit for r in (a, b, c)]
    assert results[0] == results[1] == results[2]
    later = Repository.init(str(tmp_path / "d"))
    push(a, str(tmp_path / "d"), "main", remote_branch="main")  # ancestry intact: a merge commit is a commit
    assert later.head("main") == results[0]
    # the hash depends on author and time
    other = merge_pull(e, 1, policy=policy, author="merger", time=T2).commit
    assert other != results[0] and e.get_commit(other).population == a.get_commit(results[0]).population


def test_sources_from_a_fetched_remote_branch_and_from_a_url(tmp_path) -> None:
    up = Repository.init(str(tmp_path / "up"))
    setup(up)
    down, _ = clone(str(tmp_path / "up"), str(tmp_path / "down"))
    down.delete_branch("feature")
    open_pull(up, "feature", "main", "upstream pull request", time=TM)
    fetch(down, "origin")
    assert [p.title for p in list_pulls(down, remote="origin")] == ["upstream pull request"]
    assert list_pulls(down) == []
    pr = open_pull(down, "origin/feature", "main", "Add B", time=TM)
    assert pr.source_ref == "refs/remotes/origin/feature" and pr.head == up.head("feature")
    fresh = Repository.init(str(tmp_path / "fresh"))
    from mrepo.graph import copy_closure

    copy_closure(up.storage, fresh.storage, [up.head("main")])
    fresh.refs.update("refs/heads/main", up.head("main"), None)  # objects before refs
    assert not fresh.objects.has_object(up.head("feature"))
    pr = open_pull(fresh, f"{tmp_path / 'up'}#feature", "main", "Add B", time=TM)  # same title: same message
    assert pr.source_ref is None and fresh.objects.has_object(pr.head)
    assert merge_pull(fresh, 1, policy="drop-incoming", author="t", time=TM).commit == \
        merge_pull(down, 1, policy="drop-incoming", author="t", time=TM).commit


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("case, message", [
    ("missing-item", "species 'B': particle(s) 1, 2 refer to item"),
    ("symmetry", "species 'B' has unknown symmetry 'Q3'"),
    ("empty", "species 'B' has no particles"),
])
def test_bad_incoming_species_write_nothing(tmp_path, listing, case: str, message: str) -> None:
    url = str(tmp_path / "r")
    repo = Repository.init(url)
    ts, _ = setup(repo, incoming={})
    pop = repo.population("feature")
    if case == "missing-item":
        b = make_species(repo, "B", 60.0, [(1, "e" * 64, (0, 0, 0)), (2, "e" * 64, (1, 0, 0))])
    elif case == "symmetry":
        b = make_species(repo, "B", 60.0, [(1, ts, (0, 0, 0))], symmetry="Q3")
    else:
        b = make_species(repo, "B", 60.0, [])
    repo.commit(Population(pop.name, pop.sources, {**pop.species, "B": b}), message="bad B", branch="feature",
                author="t", time=T2)
    open_pull(repo, "feature", "main", "bad", time=TM)
    before = listing(url)
    for call in (lambda: check_pull(repo, 1), lambda: merge_pull(repo, 1, policy="allow")):
        with pytest.raises(InvalidInput) as exc:
            call()
        assert message in str(exc.value) and "\n" not in str(exc.value)
    assert listing(url) == before


def test_bad_policy_and_target(mem: Repository) -> None:
    setup(mem)
    with pytest.raises(RefNotFound, match="target branch 'nope'"):
        open_pull(mem, "feature", "nope", "x")
    with pytest.raises(InvalidInput, match="non-empty title"):
        open_pull(mem, "feature", "main", " ")
    open_pull(mem, "feature", "main", "x")
    with pytest.raises(InvalidInput, match="unknown pull request policy 'ours'"):
        merge_pull(mem, 1, policy="ours")  # type: ignore[arg-type]


def test_species_the_source_deletes_cannot_be_hit(mem: Repository) -> None:
    setup(mem)
    pop = mem.population("feature")
    mem.commit(Population(pop.name, pop.sources, {"B": pop.species["B"]}), message="replace A by B",
               branch="feature", author="t", time=T2)
    open_pull(mem, "feature", "main", "A becomes B", time=TM)
    r = check_pull(mem, 1).report
    assert r.existing == ["C"] and r.collisions == [] and r.shared == []
    assert [(x.id, x.source, x.target) for x in r.reclassifications] == [(5, "A", "B")]  # A's particle 5 moved
    m = merge_pull(mem, 1, policy="drop-incoming", author="t", time=TM)
    assert sorted(mem.population(m.commit).species) == ["B", "C"] and m.dropped == {"B": 1}  # 202 duplicates 201


def test_concurrent_opens_take_distinct_numbers(tmp_path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    url = str(tmp_path / "r")
    setup(Repository.init(url))
    with ThreadPoolExecutor(4) as pool:  # one Repository per writer, as separate processes would have
        numbers = list(pool.map(lambda i: open_pull(Repository.open(url), "feature", "main", f"t{i}").number,
                                range(6)))
    assert sorted(numbers) == [1, 2, 3, 4, 5, 6]
    assert sorted(p.title for p in list_pulls(Repository.open(url))) == [f"t{i}" for i in range(6)]


def test_drop_existing_on_a_species_the_source_also_changed(mem: Repository) -> None:
    ts, fr = make_items(mem)
    setup(mem, incoming={"B": [(101, ts, (39, 0, 0)), (102, ts, (3000, 0, 0))]},
          change_a=[(1, ts, (0, 0, 0)), (2, fr, (0, 0, 0)), (6, ts, (2100, 0, 0))])
    open_pull(mem, "feature", "main", "B and a refined A", time=TM)
    r = check_pull(mem, 1).report
    assert r.incoming == ["A", "B"] and [(c.incoming, c.incoming_id, c.existing, c.existing_id)
                                         for c in r.collisions] == [("B", 101, "A", 1)]
    m = merge_pull(mem, 1, policy="drop-existing", author="t", time=TM)
    sp_a, a = table_of(mem, m.commit, "A")
    assert sorted(a.ids.tolist()) == [2, 6] and sp_a.metadata["needs_refinement"] is True
    assert m.dropped == {"A": 1}
