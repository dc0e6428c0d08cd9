"""History of the commit graph: log, ancestors, merge base."""

from __future__ import annotations

import heapq
from collections.abc import Iterator

from ..store import ObjectStore
from .model import Commit


def log(objects: ObjectStore, head: str, limit: int | None = None) -> Iterator[tuple[str, Commit]]:
    """Commits reachable from ``head``, newest first (by time, then hash), each once."""
    seen = {head}
    first = Commit.load(objects, head)
    heap: list[tuple[str, str, Commit]] = [(_neg_time(first.time), head, first)]
    count = 0
    while heap and (limit is None or count < limit):
        _, h, commit = heapq.heappop(heap)
        yield h, commit
        count += 1
        for p in commit.parents:
            if p not in seen:
                seen.add(p)
                pc = Commit.load(objects, p)
                heapq.heappush(heap, (_neg_time(pc.time), p, pc))


def _neg_time(t: str) -> str:
    # ISO 8601 UTC strings sort lexically; invert characters for a max-heap on time.
    return "".join(chr(0x10FFFF - ord(c)) for c in t)


def ancestors(objects: ObjectStore, head: str) -> set[str]:
    """``head`` and every commit reachable from it."""
    seen = {head}
    stack = [head]
    while stack:
        for p in Commit.load(objects, stack.pop()).parents:
            if p not in seen:
                seen.add(p)
                stack.append(p)
    return seen


def is_ancestor(objects: ObjectStore, candidate: str, head: str) -> bool:
    """True when ``candidate`` is ``head`` or one of its ancestors."""
    if candidate == head:
        return True
    seen = {head}
    stack = [head]
    while stack:
        for p in Commit.load(objects, stack.pop()).parents:
            if p == candidate:
                return True
            if p not in seen:
                seen.add(p)
                stack.append(p)
    return False


def merge_base(objects: ObjectStore, a: str, b: str) -> str | None:
    """A best common ancestor of ``a`` and ``b``: a common ancestor no other common ancestor
    descends from (the newest one by time when several qualify); None if unrelated."""
    common = ancestors(objects, a) & ancestors(objects, b)
    if not common:
        return None
    # Remove every common ancestor that is an ancestor of another common ancestor.
    redundant: set[str] = set()
    for c in common:
        for p in Commit.load(objects, c).parents:
            if p in common:
                redundant |= ancestors(objects, p)
    best = common - redundant
    return max(best, key=lambda h: (Commit.load(objects, h).time, h))
