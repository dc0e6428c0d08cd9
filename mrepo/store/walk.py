"""Walking the object graph: a record's references split by kind, records ordered leaves first.

Shared by the transfers (:mod:`mrepo.graph.transfer`, :mod:`mrepo.graph.batch_transfer`) and the
record buffer of the batch client (:mod:`mrepo.store.batch_client`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .objects import references


def split_references(body: Any, seen: set[str]) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """References of a record ``body``: (every child record it names, in order; the child records
    not in ``seen``; ``(kind, hash)`` of the arrays and blobs not in ``seen``). Newly met hashes
    are added to ``seen``, so a closure walk visits each object once."""
    children: list[str] = []
    new_records: list[str] = []
    new_data: list[tuple[str, str]] = []
    for kind, child in references(body):
        if kind == "record":
            children.append(child)
        if child in seen:
            continue
        seen.add(child)
        if kind == "record":
            new_records.append(child)
        else:
            new_data.append((kind, child))
    return children, new_records, new_data


def leaves_first(children: Mapping[str, Iterable[str]]) -> list[str]:
    """The keys of ``children`` (hash -> hashes it names) ordered so that each comes after every
    key it names; names that are not keys are ignored. Roots are taken in the mapping's order."""
    out: list[str] = []
    done: set[str] = set()
    for root in children:
        stack = [(root, False)]
        while stack:
            h, expanded = stack.pop()
            if h in done:
                continue
            if expanded:
                done.add(h)
                out.append(h)
            else:
                stack.append((h, True))
                stack.extend((c, False) for c in children[h] if c in children and c not in done)
    return out


def levels(children: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The keys of ``children`` grouped by height, leaves first (height 0: names no other key), each
    group sorted: everything a key names stands in an earlier group, so a group can be written in
    parallel once the groups before it are."""
    height: dict[str, int] = {}
    for h in leaves_first(children):
        height[h] = 1 + max((height[c] for c in children[h] if c in height), default=-1)
    groups: dict[int, list[str]] = {}
    for h, level in height.items():
        groups.setdefault(level, []).append(h)
    return [sorted(groups[k]) for k in sorted(groups)]
