"""Particle identity across imports, derivations and pull requests (DESIGN.md: an id names one pick).

Species enter through ``add_species`` from RELION 3.1+ STAR files written here by hand (data_optics +
data_particles, as RELION's Extract/Select/Class2D jobs write them); derived species carry
``rlnMrepoParticleId`` as mrepo's RELION export writes it and RELION keeps unknown labels.
The stateful test drives species add, pull-request open/check/merge and dedup over arbitrary species
on shared micrographs and checks the documented rules (mrepo.graph.pulls docstring) after each step.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from io_projects import PIX, loop, relion_spa

from mrepo.graph import ParticleTable, Population, Repository, Species
from mrepo.graph.dedup import dedup_species
from mrepo.graph.pulls import check_pull, merge_pull, open_pull
from mrepo.io import SpeciesFiles, add_species, import_relion_spa
from mrepo.io.identity import ID_COLUMN, PREFIX_BITS, ROW_BITS
from mrepo.store import InvalidInput, MergeConflict

MICS = ("mic_001", "mic_002")
WIDTH, HEIGHT = 32 * PIX, 24 * PIX  # Å
DIAMETER = 16.0  # Å; collision threshold F (r_a + r_b) = 0.5 * 16 = 8 Å
FACTOR = 0.5
OPTICS = loop("optics", ["rlnOpticsGroupName", "rlnOpticsGroup", "rlnMicrographOriginalPixelSize", "rlnVoltage",
                         "rlnSphericalAberration", "rlnAmplitudeContrast", "rlnImagePixelSize", "rlnImageSize",
                         "rlnImageDimensionality"], [["opticsGroup1", 1, PIX, 300.0, 2.7, 0.1, 4.0, 8, 2]])
COLUMNS = ["rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY", "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi",
           "rlnRandomSubset", "rlnOpticsGroup"]
Pick = tuple[int, float, float]  # micrograph index, x Å, y Å


def write_particles(path: Path, picks: list[Pick], ids: list[int] | None = None) -> Path:
    """A RELION particle STAR: coordinates in micrograph pixels, optionally rlnMrepoParticleId."""
    rows = [[f"MotionCorr/job002/Movies/{MICS[m]}.mrc", x / PIX, y / PIX, 0.0, 90.0, 0.0, 1 + k % 2, 1]
            for k, (m, x, y) in enumerate(picks)]
    cols = list(COLUMNS)
    if ids is not None:
        cols.append(ID_COLUMN)
        rows = [r + [i] for r, i in zip(rows, ids)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(OPTICS + loop("particles", cols, rows))
    return path


def base_repo(root: Path) -> tuple[Repository, dict[str, Path]]:
    proj = relion_spa(root / "proj")
    repo = Repository.init(str(root / "repo"))
    import_relion_spa(repo, proj["particles"], source="mics", project=root / "proj")
    return repo, proj


def species_files(proj: dict[str, Path], name: str) -> SpeciesFiles:
    return SpeciesFiles(name, proj["half1"], proj["half2"], proj["mask"], DIAMETER, "C1")


def table_of(repo: Repository, rev: str, name: str) -> ParticleTable:
    return repo.particles(repo.species(repo.population(rev).species[name]).particles)


def test_independent_picks_on_one_micrograph_never_share_ids(tmp_path):
    """Two pickers, same micrograph, same file order: distinct ids, and the check finds only geometry."""
    repo, proj = base_repo(tmp_path)
    a = write_particles(tmp_path / "pickA/particles.star", [(0, 10.0, 10.0), (0, 40.0, 30.0)])
    b = write_particles(tmp_path / "pickB/particles.star", [(0, 12.0, 10.0), (0, 20.0, 40.0)])
    add_species(repo, species_files(proj, "A"), a)
    repo.create_branch("feature", "main")
    add_species(repo, species_files(proj, "B"), b, branch="feature")
    ta, tb = table_of(repo, "main", "A"), table_of(repo, "feature", "B")
    assert not set(ta.ids.tolist()) & set(tb.ids.tolist())
    assert all(0 < i < 2**63 for i in (*ta.ids.tolist(), *tb.ids.tolist()))
    assert len({int(i) >> ROW_BITS for i in ta.ids}) == 1 and PREFIX_BITS + ROW_BITS == 63  # one import, one prefix
    open_pull(repo, "feature", "main", "B")
    r = check_pull(repo, 1).report
    assert r.id_clashes == [] and r.shared == [] and r.reclassifications == []
    assert [(c.incoming, c.existing, c.distance) for c in r.collisions] == [("B", "A", pytest.approx(2.0))]
    m = merge_pull(repo, 1, policy="drop-incoming")
    assert m.dropped == {"B": 1}
    kept = table_of(repo, "main", "B")
    np.testing.assert_allclose(kept.coordinates[:, 0, :2], [[20.0, 40.0]])  # the one colliding with nothing stays


def test_same_file_twice_as_two_species_gets_two_id_sets(tmp_path):
    """The same pick file added twice (an exact duplicate species) is two collisions at distance 0, not ids
    shared; drop-incoming drops exactly those."""
    repo, proj = base_repo(tmp_path)
    f = write_particles(tmp_path / "pick/particles.star", [(0, 10.0, 10.0), (1, 30.0, 20.0)])
    add_species(repo, species_files(proj, "A"), f)
    repo.create_branch("feature", "main")
    add_species(repo, species_files(proj, "A2"), f, branch="feature")
    assert not set(table_of(repo, "main", "A").ids.tolist()) & set(table_of(repo, "feature", "A2").ids.tolist())
    open_pull(repo, "feature", "main", "A2")
    r = check_pull(repo, 1).report
    assert [c.distance for c in r.collisions] == [0.0, 0.0] and r.shared == [] and r.id_clashes == []
    with pytest.raises(MergeConflict, match="every particle of species 'A2'"):
        merge_pull(repo, 1, policy="drop-incoming")


def test_reimport_is_reproducible_and_ids_follow_file_order(tmp_path):
    repo, proj = base_repo(tmp_path)
    picks = [(1, 30.0, 20.0), (0, 10.0, 10.0), (0, 50.0, 30.0)]
    f = write_particles(tmp_path / "pick/particles.star", picks)
    repo.create_branch("x", "main")
    add_species(repo, species_files(proj, "A"), f)
    add_species(repo, species_files(proj, "A"), f, branch="x")
    ta, tx = table_of(repo, "main", "A"), table_of(repo, "x", "A")
    np.testing.assert_array_equal(ta.ids, tx.ids)  # same parent, species, file: same ids
    rows = np.asarray(ta.ids) & ((1 << ROW_BITS) - 1)
    np.testing.assert_array_equal(ta.coordinates[np.argsort(rows), 0, :2], [p[1:] for p in picks])


def test_derived_species_inherit_ids_copy_is_shared_move_is_reclassification(tmp_path):
    repo, proj = base_repo(tmp_path)
    f = write_particles(tmp_path / "pick/particles.star", [(0, 10.0, 10.0), (0, 40.0, 30.0), (1, 30.0, 20.0)])
    add_species(repo, species_files(proj, "A"), f)
    ta = table_of(repo, "main", "A")
    keys = ta.item_keys().tolist()
    names = {k: repo.item(h).name for s in repo.population().sources.values()
             for k, h in repo.source(s).items.items()}
    subset = [0, 2]
    sub_picks = [(MICS.index(names[keys[i]]), *ta.coordinates[i, 0, :2]) for i in subset]
    derived = write_particles(tmp_path / "class2d/particles.star", sub_picks, [int(ta.ids[i]) for i in subset])
    # copy: A keeps them -> shared (blocks fail; drop-incoming drops them from the new species)
    repo.create_branch("copy", "main")
    add_species(repo, species_files(proj, "A_sub"), derived, branch="copy")
    np.testing.assert_array_equal(np.sort(table_of(repo, "copy", "A_sub").ids), np.sort(ta.ids[subset]))
    open_pull(repo, "copy", "main", "copy")
    r = check_pull(repo, 1).report
    assert sorted(s.id for s in r.shared) == sorted(int(i) for i in ta.ids[subset]) and r.reclassifications == []
    assert r.collisions == [] and not r.clean
    # move: the source removes them from A -> reclassifications, clean
    repo.create_branch("move", "main")
    add_species(repo, species_files(proj, "A_sub"), derived, branch="move")
    pop = repo.population("move")
    sp = repo.species(pop.species["A"])
    rest = ta.select(~np.isin(ta.ids, ta.ids[subset]))
    new_a = sp.evolve(particles=rest.save(repo.objects)).save(repo.objects)
    repo.commit(Population(pop.name, pop.sources, {**pop.species, "A": new_a}, pop.metadata), message="move",
                branch="move")
    open_pull(repo, "move", "main", "move")
    r = check_pull(repo, 2).report
    assert sorted(x.id for x in r.reclassifications) == sorted(int(i) for i in ta.ids[subset])
    assert r.clean
    merge_pull(repo, 2, policy="fail")
    assert sorted(table_of(repo, "main", "A").ids.tolist()) == sorted(int(i) for i in rest.ids)


@pytest.mark.parametrize("ids, message", [
    ([5, 5], f"data_particles column {ID_COLUMN} rows 1 and 2 carry the same id 5"),
    ([5, -3], f"data_particles column {ID_COLUMN} row 2: '-3' is not a particle id"),
    ([5, "abc"], f"data_particles column {ID_COLUMN} row 2: 'abc' is not a particle id"),
])
def test_bad_id_column_is_one_line_and_writes_nothing(tmp_path, ids, message):
    from test_io_bad_input import listing

    repo, proj = base_repo(tmp_path)
    f = write_particles(tmp_path / "pick/particles.star", [(0, 10.0, 10.0), (0, 40.0, 30.0)], ids)
    before = listing(tmp_path / "repo")
    with pytest.raises(InvalidInput) as err:
        add_species(repo, species_files(proj, "A"), f)
    assert message in str(err.value) and "particles.star" in str(err.value) and "\n" not in str(err.value)
    assert listing(tmp_path / "repo") == before


# ----------------------------------------------------------------------------- stateful


def _positions(repo: Repository, rev: str) -> dict[str, tuple[Species, ParticleTable]]:
    pop = repo.population(rev)
    out = {}
    for name, h in pop.species.items():
        sp = repo.species(h)
        out[name] = (sp, repo.particles(sp.particles))
    return out


def _pairs_closer(a: ParticleTable, b: ParticleTable, cutoff: float) -> set[tuple[int, int]]:
    """(id in a, id in b) of different ids in one item with (x, y) distance < cutoff (brute force)."""
    ka, kb = a.item_keys(), b.item_keys()
    out = set()
    for i in range(len(a)):
        for j in range(len(b)):
            if ka[i] == kb[j] and a.ids[i] != b.ids[j]:
                d = np.linalg.norm(a.coordinates[i].mean(0)[:2] - b.coordinates[j].mean(0)[:2])
                if d < cutoff:
                    out.add((int(a.ids[i]), int(b.ids[j])))
    return out


STATS: dict[str, int] = {}  # merges per policy (a run that never merged would prove little)
coordinate = st.tuples(st.integers(0, 1), st.floats(0.0, WIDTH), st.floats(0.0, HEIGHT))


class PopulationMachine(RuleBasedStateMachine):
    """main grows by pull requests; every species enters on its own branch through add_species."""

    @initialize()
    def start(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="mrepo-identity-"))
        self.repo, self.proj = base_repo(self.root)
        self.count = 0
        self.merged = 0
        self.open: dict[int, str] = {}  # pull request number -> incoming species name
        self.picks: dict[int, tuple[str, int]] = {}  # id -> (item key, species it was first imported as)

    def teardown(self) -> None:
        if hasattr(self, "root"):
            shutil.rmtree(self.root, ignore_errors=True)

    def _new_branch(self) -> tuple[str, str]:
        self.count += 1
        branch, name = f"b{self.count}", f"s{self.count}"
        self.repo.create_branch(branch, "main")
        return branch, name

    def _record(self, branch: str, name: str) -> None:
        t = table_of(self.repo, branch, name)
        for i, k in zip(t.ids.tolist(), t.item_keys().tolist()):
            if i in self.picks:
                assert self.picks[i][0] == k, "an inherited id changed item"
            else:
                self.picks[i] = (k, name)
        n = open_pull(self.repo, branch, "main", f"add {name}").number
        self.open[n] = name

    @rule(picks=st.lists(coordinate, min_size=1, max_size=6), repeat=st.booleans())
    def pick_species(self, picks: list[Pick], repeat: bool) -> None:
        """An independent picker: new ids; optionally re-picks an existing particle (exact duplicate)."""
        main = _positions(self.repo, "main")
        if repeat and main:
            names = {k: self.repo.item(h).name for s in self.repo.population().sources.values()
                     for k, h in self.repo.source(s).items.items()}
            _, t = main[sorted(main)[0]]
            picks = picks + [(MICS.index(names[t.item_keys()[0]]), *t.coordinates[0, 0, :2])]
        branch, name = self._new_branch()
        f = write_particles(self.root / f"{name}/particles.star", picks)
        before = set(self.picks)
        add_species(self.repo, species_files(self.proj, name), f, branch=branch)
        assert not set(table_of(self.repo, branch, name).ids.tolist()) & before  # never an old id
        self._record(branch, name)

    @precondition(lambda self: getattr(self, "merged", 0) > 0)
    @rule(data=st.data())
    def derive_species(self, data) -> None:
        """A subset of a species on main exported with its ids (RELION Select job) and added back."""
        main = _positions(self.repo, "main")
        parent = data.draw(st.sampled_from(sorted(main)))
        _, t = main[parent]
        rows = data.draw(st.lists(st.integers(0, len(t) - 1), min_size=1, max_size=len(t), unique=True))
        names = {k: self.repo.item(h).name for s in self.repo.population().sources.values()
                 for k, h in self.repo.source(s).items.items()}
        keys = t.item_keys()
        picks = [(MICS.index(names[keys[r]]), *t.coordinates[r, 0, :2]) for r in rows]
        branch, name = self._new_branch()
        f = write_particles(self.root / f"{name}/particles.star", picks, [int(t.ids[r]) for r in rows])
        add_species(self.repo, species_files(self.proj, name), f, branch=branch)
        assert sorted(table_of(self.repo, branch, name).ids.tolist()) == sorted(int(t.ids[r]) for r in rows)
        self._record(branch, name)

    @precondition(lambda self: bool(getattr(self, "open", None)))
    @rule(data=st.data(), policy=st.sampled_from(["drop-incoming", "drop-existing", "fail"]))
    def merge(self, data, policy: str) -> None:
        number = data.draw(st.sampled_from(sorted(self.open)))
        name = self.open.pop(number)
        before = _positions(self.repo, "main")
        incoming = table_of(self.repo, f"b{name[1:]}", name)
        report = check_pull(self.repo, number).report
        assert report.id_clashes == []  # ids of independent picks never meet; inherited ones name one pick
        # every collision is a real one, and every real one is reported (brute force)
        expected = set()
        for ex, (sp, t) in before.items():
            expected |= {(i, j, ex) for i, j in _pairs_closer(incoming, t, FACTOR * (DIAMETER / 2 + sp.diameter / 2))}
        assert {(c.incoming_id, c.existing_id, c.existing) for c in report.collisions} == expected
        shared = {(s.id, s.existing) for s in report.shared}
        assert shared == {(int(i), ex) for ex, (_, t) in before.items() for i in np.intersect1d(incoming.ids, t.ids)}
        try:
            merge_pull(self.repo, number, policy=policy)
        except MergeConflict as exc:
            msg = str(exc)
            assert (policy == "fail" and not report.clean) or "every particle" in msg, msg
            assert _positions(self.repo, "main").keys() == before.keys()
            return
        assert policy != "fail" or report.clean
        self.merged += 1
        STATS[policy] = STATS.get(policy, 0) + 1
        after = _positions(self.repo, "main")
        involved_in = ({c.incoming_id for c in report.collisions} | {s.id for s in report.shared}
                       | {d.id_a for d in report.duplicates} | {d.id_b for d in report.duplicates})
        kept = set(after[name][1].ids.tolist())
        free = set(incoming.ids.tolist()) - involved_in
        assert free <= kept  # no particle lost that collides with nothing
        if policy == "drop-incoming":
            assert not kept & ({c.incoming_id for c in report.collisions} | {s.id for s in report.shared})
            for ex in before:  # existing species untouched
                assert after[ex][0] == before[ex][0]
        if policy == "drop-existing":
            for c in report.collisions:
                assert c.existing_id not in set(after[c.existing][1].ids.tolist())
            assert set(incoming.ids.tolist()) - {d.id_b for d in report.duplicates} <= kept
        # after the merge the incoming species collides with nothing and holds no duplicate
        for ex, (sp, t) in after.items():
            if ex != name:
                assert not _pairs_closer(after[name][1], t, FACTOR * (DIAMETER / 2 + sp.diameter / 2))
        own = _pairs_closer(after[name][1], after[name][1], FACTOR * DIAMETER)
        assert not own

    @precondition(lambda self: getattr(self, "merged", 0) > 0)
    @rule(data=st.data())
    def dedup(self, data) -> None:
        main = _positions(self.repo, "main")
        name = data.draw(st.sampled_from(sorted(main)))
        sp, t = main[name]
        res = dedup_species(self.repo, name)
        after = table_of(self.repo, "main", name)
        assert not _pairs_closer(after, after, FACTOR * sp.diameter)
        for i in res.removed:  # removed only next to a kept particle
            row = int(np.flatnonzero(t.ids == i)[0])
            d = [np.linalg.norm(t.coordinates[row, 0, :2] - after.coordinates[k, 0, :2]) for k in range(len(after))
                 if after.item_keys()[k] == t.item_keys()[row]]
            assert min(d) < FACTOR * sp.diameter

    @invariant()
    def ids_name_one_pick(self) -> None:
        """An id on main names the pick it was created for: same item in every species holding it."""
        if not hasattr(self, "repo"):
            return
        for _, (_, t) in _positions(self.repo, "main").items():
            for i, k in zip(t.ids.tolist(), t.item_keys().tolist()):
                assert self.picks[i][0] == k


PopulationMachine.TestCase.settings = settings(max_examples=12, stateful_step_count=8, deadline=None,
                                               suppress_health_check=[HealthCheck.too_slow,
                                                                      HealthCheck.filter_too_much])
test_population_machine = PopulationMachine.TestCase


def test_population_machine_merged_with_every_policy() -> None:
    """Runs after the machine (file order): it did merge, with more than one policy."""
    if not STATS:
        pytest.skip("the state machine did not run in this session")
    assert sum(STATS.values()) > 0 and len(STATS) >= 2, STATS
