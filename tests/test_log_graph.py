"""``mrepo log --graph`` layout: lanes, merges, lanes meeting, new tips next to their parent's lane."""

from __future__ import annotations

from mrepo.cli.log_graph import graph_rows, topological_order


def _draw(parents: dict[str, list[str]], times: dict[str, str]) -> list[str]:
    order = topological_order([(h, p, times[h]) for h, p in parents.items()])
    return [f"{lanes} {h or ''}".rstrip() for lanes, h in graph_rows(order, parents)]


def test_one_merge_is_drawn_as_git_draws_it() -> None:
    rows = _draw({"M": ["m1", "s1"], "s1": ["b"], "m1": ["b"], "b": []}, {"M": "4", "s1": "3", "m1": "2", "b": "1"})
    assert rows == ["* M", "|\\", "| * s1", "* | m1", "|/", "* b"]


def test_second_parent_already_on_the_next_lane() -> None:
    parents = {"M2": ["M", "x"], "M": ["m1", "s1"], "x": ["s1"], "s1": ["b"], "m1": ["b"], "b": []}
    times = {"M2": "6", "x": "5", "M": "4", "s1": "3", "m1": "2", "b": "1"}
    assert _draw(parents, times) == ["* M2", "|\\", "| * x", "* | M", "|\\|", "| * s1", "* | m1", "|/", "* b"]


def test_a_new_tip_opens_next_to_its_parents_lane_and_no_lane_outlives_its_commit() -> None:
    parents = {"T1": ["X"], "T2": ["Y"], "T3": ["X"], "Y": ["Z"], "X": ["Z"], "Z": []}
    times = {"T1": "9", "T2": "8", "T3": "7", "Y": "6", "X": "5", "Z": "1"}
    assert _draw(parents, times) == ["* T1", "| * T2", "|  \\", "| * | T3", "|/ /", "| * Y", "* | X", "|/", "* Z"]


def test_children_come_before_parents_even_with_skewed_clocks() -> None:
    parents = {"child": ["parent"], "parent": []}
    order = topological_order([("child", ["parent"], "2020"), ("parent", [], "2030")])
    assert order == ["child", "parent"]
    assert [h for _, h in graph_rows(order, parents) if h] == ["child", "parent"]
