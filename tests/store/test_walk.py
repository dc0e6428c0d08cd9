"""mrepo.store.walk: a record's references split by kind, leaves-first order and height groups."""

from __future__ import annotations

import random

from mrepo.store import array_ref, blob_ref, record_ref
from mrepo.store.walk import leaves_first, levels, split_references

A, B, C, X, Y = ("a" * 64, "b" * 64, "c" * 64, "e" * 64, "f" * 64)


def test_split_references_names_every_child_record_and_only_new_objects() -> None:
    body = {"species": [record_ref(A), record_ref(B)], "map": array_ref(X), "raw": {"data": blob_ref(Y)},
            "again": record_ref(A)}
    seen = {B, X}
    children, new_records, new_data = split_references(body, seen)
    assert sorted(children) == [A, A, B]  # every record named, with repeats, seen or not
    assert new_records == [A]  # B was seen; A only once
    assert new_data == [("blob", Y)]  # X was seen
    assert seen == {A, B, X, Y}
    assert split_references(body, seen)[1:] == ([], [])  # a second visit finds nothing new


def _random_dag(rng: random.Random) -> dict[str, list[str]]:
    names = [f"{i:03d}" for i in range(rng.randint(0, 25))]
    dag = {h: rng.sample(names[:i], min(i, rng.randint(0, 4))) + ["not-a-key"] for i, h in enumerate(names)}
    keys = list(dag)
    rng.shuffle(keys)
    return {k: dag[k] for k in keys}


def test_leaves_first_puts_every_key_after_the_keys_it_names() -> None:
    rng = random.Random(3)
    for _ in range(300):
        dag = _random_dag(rng)
        order = leaves_first(dag)
        assert sorted(order) == sorted(dag)  # each key once; names that are not keys left out
        pos = {h: i for i, h in enumerate(order)}
        assert all(pos[c] < pos[h] for h, kids in dag.items() for c in kids if c in dag)


def test_levels_are_heights() -> None:
    assert levels({}) == []
    assert levels({C: [B, A], B: [A], A: []}) == [[A], [B], [C]]
    assert levels({C: [A], B: [A], A: []}) == [[A], [B, C]]  # siblings share a level, sorted
    rng = random.Random(4)
    for _ in range(300):
        dag = _random_dag(rng)
        groups = levels(dag)
        level_of = {h: i for i, group in enumerate(groups) for h in group}
        assert sorted(level_of) == sorted(dag) and all(g == sorted(g) for g in groups)
        for h, kids in dag.items():  # height: one more than the highest key it names
            assert level_of[h] == 1 + max((level_of[c] for c in kids if c in dag), default=-1)
