"""``mrepo log --graph``: an ASCII drawing of the commit graph, in the style of ``git log --graph``.

Commits come newest first in topological order (a commit after every child of it that
is shown). Each line is a row of lanes: ``*`` marks the commit, ``|`` a lane waiting for
an older commit, ``\\`` a merge opening a lane for its second parent, ``/`` two lanes
meeting at a common parent.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence


def topological_order(commits: Sequence[tuple[str, Sequence[str], str]]) -> list[str]:
    """Hashes of ``commits`` (hash, parents, time), newest first, children before parents.

    Among commits whose children are all placed, the newest (by time, then hash) comes first,
    so ordinary history reads as ``git log`` does even when clocks disagree.
    """
    present = {h for h, _, _ in commits}
    times = {h: t for h, _, t in commits}
    waiting = {h: 0 for h in present}
    for _, parents, _ in commits:
        for p in set(parents):
            if p in present:
                waiting[p] += 1
    parents_of = {h: [p for p in ps if p in present] for h, ps, _ in commits}
    heap = [(_newest_first(times[h]), h) for h in present if waiting[h] == 0]
    heapq.heapify(heap)
    order: list[str] = []
    while heap:
        _, h = heapq.heappop(heap)
        order.append(h)
        for p in set(parents_of[h]):
            waiting[p] -= 1
            if waiting[p] == 0:
                heapq.heappush(heap, (_newest_first(times[p]), p))
    return order


def _newest_first(t: str) -> str:
    return "".join(chr(0x10FFFF - ord(c)) for c in t)


def graph_rows(order: Sequence[str], parents: dict[str, Sequence[str]]) -> list[tuple[str, str | None]]:
    """(lane drawing, commit or None) per output line; None marks a connector line.

    Lane j is drawn at column 2j; ``\\`` and ``/`` sit between columns where a lane moves.
    """
    lanes: list[str] = []
    rows: list[tuple[str, str | None]] = []
    for h in order:
        if h not in lanes:  # a new tip: next to the lane of its first parent, so they can meet
            first = next((p for p in parents.get(h, ()) if p in lanes), None)
            pos = lanes.index(first) + 1 if first is not None else len(lanes)
            if pos < len(lanes):  # lanes from pos on make room, moving right
                rows.append((_draw({k: "|" for k in range(pos)}, {2 * k + 1: "\\" for k in range(pos, len(lanes))}),
                             None))
            lanes.insert(pos, h)
        i = lanes.index(h)
        while lanes.count(h) > 1:  # lanes further right that also wait for this commit end here
            j = max(k for k, lane in enumerate(lanes) if lane == h)
            del lanes[j]
            rows.append((_draw({k: "|" for k in range(j)}, {2 * k - 1: "/" for k in range(j, len(lanes) + 1)}),
                         None))
        rows.append((_draw({j: "*" if j == i else "|" for j in range(len(lanes))}, {}), h))
        shown = [p for p in parents.get(h, ()) if p in parents]
        before = len(lanes)
        if shown:
            lanes[i] = shown[0]
            new = [p for p in shown[1:] if p not in lanes]
            lanes[i + 1:i + 1] = new
            if new:  # a merge: lanes right of the commit open (or shift) to the right
                rows.append((_draw({j: "|" for j in range(i + 1)},
                                   {2 * j - 1: "\\" for j in range(i + 1, before + len(new))}), None))
            elif len(shown) > 1 and i + 1 < len(lanes) and lanes[i + 1] in shown[1:]:
                # a merge whose other parent is already the next lane's
                rows.append((_draw({j: "|" for j in range(len(lanes))}, {2 * i + 1: "\\"}), None))
        else:
            del lanes[i]
            if i < len(lanes):  # lanes right of a root move left
                rows.append((_draw({j: "|" for j in range(i)}, {2 * k - 1: "/" for k in range(i + 1, len(lanes) + 1)}),
                             None))
        while True:  # neighbouring lanes now waiting for the same commit meet
            dup = next((j for j in range(1, len(lanes)) if lanes[j] == lanes[j - 1]), None)
            if dup is None:
                break
            del lanes[dup]
            rows.append((_draw({j: "|" for j in range(dup)}, {2 * k - 1: "/" for k in range(dup, len(lanes) + 1)}),
                         None))
    return rows


def _draw(lanes: dict[int, str], between: dict[int, str]) -> str:
    """A line with ``lanes[j]`` at column 2j and ``between[c]`` at column c."""
    width = max([2 * j + 1 for j in lanes] + [c + 1 for c in between] + [1])
    chars = [" "] * width
    for j, ch in lanes.items():
        chars[2 * j] = ch
    for c, ch in between.items():
        chars[c] = ch
    return "".join(chars).rstrip()
