"""Collision, duplicate and reclassification rules on hand-built particle tables (no repository)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mrepo.graph import ParticleTable, Species
from mrepo.graph.collisions import CollisionReport, check_collisions, greedy_keep
from mrepo.store import InvalidInput

H = "0" * 64
TILT, FRAME, OTHER = "a" * 64, "b" * 64, "c" * 64
KINDS = {TILT: "tilts", FRAME: "frames", OTHER: "tilts"}


def species(name: str, diameter: float, symmetry: str = "C1") -> Species:
    return Species(name, diameter, symmetry, 1.0, 16, H, H, H, H)


def table(rows: list[tuple[int, str, tuple[float, float, float]]], t: int = 1) -> ParticleTable:
    """Particles (id, item, (x, y, z) Å) with ``t`` identical temporal samples."""
    ids = [r[0] for r in rows]
    coords = np.repeat(np.array([r[2] for r in rows], dtype=float)[:, None, :], t, axis=1)
    return ParticleTable.build(ids, [r[1] for r in rows], coords, np.zeros_like(coords), np.ones(len(rows), np.uint8))


# A: existing, diameter 100 (r 50); B: incoming, diameter 60 (r 30). F = 0.5: A-B threshold 40 Å, B-B 30 Å.
EXISTING = {"A": (species("A", 100.0), table([
    (1, TILT, (0, 0, 0)),
    (2, FRAME, (0, 0, 0)),
    (5, TILT, (1000, 1000, 0)),
    (6, TILT, (2000, 0, 0)),
    (7, OTHER, (0, 3000, 0)),
]))}
INCOMING = {"B": (species("B", 60.0), table([
    (101, TILT, (39, 0, 0)),        # 39 Å from A:1 -> collision
    (102, TILT, (0, 41, 0)),        # 41 Å from A:1 -> none
    (103, TILT, (0, 0, 100)),       # 100 Å in 3D -> none (tilts are 3D)
    (104, FRAME, (20, 0, 500)),     # 20 Å in (x, y) from A:2 -> collision (frames are 2D)
    (5, TILT, (1002, 1000, 0)),     # same id as A:5, 2 Å away, A keeps it -> shared (one pick, two species)
    (6, TILT, (2000, 200, 0)),      # same id as A:6, 200 Å away -> id clash
    (7, TILT, (0, 3000, 0)),        # same id as A:7 but another item -> id clash (distance None)
    (201, TILT, (500, 500, 500)),   # 201/202: 20 Å apart -> duplicate (B-B threshold 30 Å)
    (202, TILT, (520, 500, 500)),
    (203, TILT, (800, 500, 500)),   # 203/204: 31 Å apart -> no duplicate
    (204, TILT, (831, 500, 500)),
    (301, OTHER, (0, 0, 0)),        # same coordinates as A:1 but in another item -> none
]))}


def test_hand_built_population_reports_exactly_the_known_pairs() -> None:
    r = check_collisions(INCOMING, EXISTING, KINDS)
    assert [(c.incoming_id, c.existing_id, c.item) for c in r.collisions] == [(101, 1, TILT), (104, 2, FRAME)]
    assert [c.distance for c in r.collisions] == pytest.approx([39.0, 20.0])
    assert all(c.threshold == pytest.approx(40.0) for c in r.collisions)
    assert [(d.id_a, d.id_b, d.distance) for d in r.duplicates] == [(201, 202, pytest.approx(20.0))]
    assert r.duplicates[0].threshold == pytest.approx(30.0)
    assert [(x.id, x.existing, x.incoming, x.distance) for x in r.shared] == [(5, "A", "B", pytest.approx(2.0))]
    assert r.reclassifications == []  # A still holds 5: nothing moved
    assert [(x.id, x.distance) for x in r.id_clashes] == [(6, pytest.approx(200.0)), (7, None)]
    assert r.id_clashes[1].existing_item == OTHER and r.id_clashes[1].incoming_item == TILT
    assert not r.clean
    assert r.per_item() == {TILT: {"collisions": 1, "duplicates": 1}, FRAME: {"collisions": 1, "duplicates": 0}}
    assert r.per_pair() == {"B|A": 2, "B|B": 1}


def test_overlap_factor_scales_the_threshold() -> None:
    r = check_collisions(INCOMING, EXISTING, KINDS, overlap_factor=0.52)  # A-B 41.6 Å, B-B 31.2 Å
    assert [c.incoming_id for c in r.collisions] == [101, 102, 104]
    assert [(d.id_a, d.id_b) for d in r.duplicates] == [(201, 202), (203, 204)]


def test_explicit_tolerances() -> None:
    r = check_collisions(INCOMING, EXISTING, KINDS, reclass_tolerance=1.0, duplicate_tolerance=40.0)
    assert r.shared == [] and r.reclassifications == []
    assert [x.id for x in r.id_clashes] == [5, 6, 7]  # 2 Å > 1 Å: no longer the same particle
    assert [c.incoming_id for c in r.collisions] == [101, 104]  # a shared id never counts as a collision
    assert [(d.id_a, d.id_b) for d in r.duplicates] == [(201, 202), (203, 204)]


def test_positions_are_the_mean_over_temporal_samples() -> None:
    coords = np.array([[[30.0, 0, 0], [70.0, 0, 0]]])  # mean x = 50 -> 50 Å from A:1 at F=0.5 -> no collision
    inc = ParticleTable.build([900], [TILT], coords, np.zeros_like(coords), [1])
    ex = table([(1, TILT, (0, 0, 0))], t=2)
    r = check_collisions({"B": (species("B", 60.0), inc)}, {"A": (species("A", 100.0), ex)}, KINDS)
    assert r.collisions == []
    r = check_collisions({"B": (species("B", 60.0), inc)}, {"A": (species("A", 100.0), ex)}, KINDS,
                         overlap_factor=0.63)  # 0.63 * 80 = 50.4 > 50
    assert [(c.incoming_id, c.distance) for c in r.collisions] == [(900, pytest.approx(50.0))]


def test_species_is_not_checked_against_itself_and_same_name_existing_is_skipped() -> None:
    r = check_collisions({"A": EXISTING["A"]}, EXISTING, KINDS)
    assert r.collisions == [] and r.reclassifications == [] and r.id_clashes == [] and r.shared == []


def test_moved_particles_are_reclassifications_not_findings() -> None:
    """A previous version of A held 5 and 6; the merged A keeps 6 only: 5 moved (reclassification),
    6 is shared (blocking), and B's 101 is not hit by A:1, which the merged A no longer holds."""
    previous = {"A": EXISTING["A"]}
    merged_a = {"A": (species("A", 100.0), table([(6, TILT, (2000, 0, 0))]))}
    inc = {"B": (species("B", 60.0), table([(5, TILT, (1001, 1000, 0)), (6, TILT, (2000, 1, 0)),
                                            (101, TILT, (39, 0, 0))]))}
    r = check_collisions(inc, merged_a, KINDS, previous=previous)
    assert [(x.id, x.source, x.target) for x in r.reclassifications] == [(5, "A", "B")]
    assert [(x.id, x.existing) for x in r.shared] == [(6, "A")]
    assert r.collisions == [] and r.id_clashes == [] and not r.clean


def _brute_force(inc: ParticleTable, ex: ParticleTable, cutoff: float) -> set[tuple[int, int]]:
    out = set()
    pi, pe = inc.coordinates.mean(axis=1), ex.coordinates.mean(axis=1)
    ki, ke = inc.item_keys(), ex.item_keys()
    for a in range(len(inc)):
        for b in range(len(ex)):
            if ki[a] != ke[b] or inc.ids[a] == ex.ids[b]:
                continue
            d = pi[a] - pe[b]
            if KINDS[ki[a]] == "frames":
                d = d[:2]
            if np.sqrt((d ** 2).sum()) < cutoff:
                out.add((int(inc.ids[a]), int(ex.ids[b])))
    return out


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31), st.integers(1, 40), st.integers(1, 40), st.floats(0.1, 1.5))
def test_collisions_match_brute_force(seed: int, n_in: int, n_ex: int, factor: float) -> None:
    rng = np.random.default_rng(seed)
    items = [TILT, FRAME, OTHER]

    def rand(n: int, first: int) -> ParticleTable:
        c = rng.uniform(0, 300, (n, 2, 3))
        return ParticleTable.build(np.arange(first, first + n), [items[i] for i in rng.integers(0, 3, n)], c,
                                   np.zeros_like(c), np.ones(n, np.uint8))

    inc, ex = rand(n_in, 10), rand(n_ex, 20)  # overlapping id ranges: shared ids are never collisions
    r = check_collisions({"B": (species("B", 60.0), inc)}, {"A": (species("A", 100.0), ex)}, KINDS,
                         overlap_factor=factor)
    got = {(c.incoming_id, c.existing_id) for c in r.collisions}
    assert got == _brute_force(inc, ex, factor * 80.0)
    assert len(got) == len(r.collisions)
    assert sum(r.histogram()["collisions"]) == len(r.collisions)


def test_report_json_round_trip_is_canonical_json() -> None:
    r = check_collisions(INCOMING, EXISTING, KINDS)
    body = json.loads(json.dumps(r.to_json(), allow_nan=False))
    back = CollisionReport.from_json(body)
    assert back == r
    assert body["counts"] == {"conflicts": 0, "collisions": 2, "duplicates": 1, "shared": 1, "reclassifications": 0,
                              "id_clashes": 2}
    assert sum(body["histogram"]["collisions"]) == 2 and sum(body["histogram"]["duplicates"]) == 1
    assert body["histogram"]["edges"][-1] == pytest.approx(40.0)


def test_greedy_keep_is_non_maximum_suppression() -> None:
    # chain 0-1-2 (0 and 2 are not duplicates of each other), and pair 3-4; priority: row index
    keep = greedy_keep(6, np.array([0, 1, 3]), np.array([1, 2, 4]), np.arange(6))
    assert keep.tolist() == [True, False, True, True, False, True]
    keep = greedy_keep(3, np.array([0, 1]), np.array([1, 2]), np.array([2, 0, 1]))  # row 1 first
    assert keep.tolist() == [False, True, False]


@pytest.mark.parametrize("incoming, message", [
    ({"B": (species("B", 60.0), table([(1, "d" * 64, (0, 0, 0)), (2, "d" * 64, (9, 0, 0))]))},
     f"species 'B': particle(s) 1, 2 refer to item {'d' * 64}"),
    ({"B": (species("B", 60.0, "X7"), INCOMING["B"][1])}, "species 'B' has unknown symmetry 'X7'"),
    ({"B": (species("B", 60.0), ParticleTable.empty())}, "species 'B' has no particles"),
])
def test_bad_species_are_refused_with_one_line(incoming: dict, message: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        check_collisions(incoming, EXISTING, KINDS)
    assert message in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("kwargs", [{"overlap_factor": 0}, {"overlap_factor": float("nan")},
                                    {"reclass_tolerance": -1.0}, {"duplicate_tolerance": float("inf")}])
def test_bad_parameters(kwargs: dict) -> None:
    with pytest.raises(InvalidInput):
        check_collisions(INCOMING, EXISTING, KINDS, **kwargs)
