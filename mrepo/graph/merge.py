"""Three-way merge of populations: per source item and per species.

Changed on one side only -> take it; changed on both sides the same way -> take
it; changed on both sides differently -> a conflict, resolved by the policy
(``ours``, ``theirs``) or reported (``fail`` raises MergeConflict).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ..store import MergeConflict, ObjectStore
from .model import DataSource, Population

MergePolicy = Literal["ours", "theirs", "fail"]
MERGE_POLICIES = ("ours", "theirs", "fail")


@dataclass
class Conflict:
    """One entry changed differently on both sides (hashes; None = absent)."""

    kind: Literal["item", "species", "source-metadata", "population-metadata"]
    source: str | None
    key: str
    base: str | None
    ours: str | None
    theirs: str | None
    resolution: str | None = None


@dataclass
class MergeReport:
    conflicts: list[Conflict] = field(default_factory=list)
    policy: str = "fail"

    def to_json(self) -> dict[str, Any]:
        return {"policy": self.policy, "conflicts": [asdict(c) for c in self.conflicts]}

    def summary(self) -> str:
        parts = [f"{c.kind} {c.source + '/' if c.source else ''}{c.key[:16]}" for c in self.conflicts[:5]]
        more = f" and {len(self.conflicts) - 5} more" if len(self.conflicts) > 5 else ""
        return ", ".join(parts) + more


def _pick(b: Any, o: Any, t: Any) -> tuple[Any, bool]:
    """(merged value, conflicted) for one key."""
    if o == t:
        return o, False
    if o == b:
        return t, False
    if t == b:
        return o, False
    return None, True


def _merge_maps(base: dict[str, str], ours: dict[str, str], theirs: dict[str, str], kind: str,
                source: str | None, policy: MergePolicy, report: MergeReport) -> dict[str, str]:
    out: dict[str, str] = {}
    for key in sorted(set(base) | set(ours) | set(theirs)):
        b, o, t = base.get(key), ours.get(key), theirs.get(key)
        value, conflicted = _pick(b, o, t)
        if conflicted:
            value = o if policy == "ours" else t
            report.conflicts.append(Conflict(kind, source, key, b, o, t, None if policy == "fail" else policy))  # type: ignore[arg-type]
        if value is not None:
            out[key] = value
    return out


def _metadata(b: dict, o: dict, t: dict, kind: str, key: str, source: str | None,
              policy: MergePolicy, report: MergeReport) -> dict:
    value, conflicted = _pick(b, o, t)
    if conflicted:
        report.conflicts.append(Conflict(kind, source, key, None, None, None,  # type: ignore[arg-type]
                                         None if policy == "fail" else policy))
        value = o if policy == "ours" else t
    return value


def merge_populations(objects: ObjectStore, base: Population | None, ours: Population, theirs: Population,
                      policy: MergePolicy = "fail") -> tuple[Population, MergeReport]:
    """Merge ``theirs`` into ``ours`` relative to ``base`` (None: unrelated histories).

    Returns the merged population (not yet saved) and the report; raises MergeConflict
    when ``policy == "fail"`` and there are conflicts.
    """
    if policy not in MERGE_POLICIES:
        raise ValueError(f"unknown merge policy {policy!r}: use one of {', '.join(MERGE_POLICIES)}")
    base = base or Population(ours.name)
    report = MergeReport(policy=policy)

    sources: dict[str, str] = {}
    for name in sorted(set(base.sources) | set(ours.sources) | set(theirs.sources)):
        hb, ho, ht = base.sources.get(name), ours.sources.get(name), theirs.sources.get(name)
        value, conflicted = _pick(hb, ho, ht)
        if not conflicted:
            if value is not None:
                sources[name] = value
            continue
        sb = DataSource.load(objects, hb) if hb else DataSource(name)
        so = DataSource.load(objects, ho) if ho else DataSource(name)
        st = DataSource.load(objects, ht) if ht else DataSource(name)
        items = _merge_maps(sb.items, so.items, st.items, "item", name, policy, report)
        meta = _metadata(sb.metadata, so.metadata, st.metadata, "source-metadata", "metadata", name, policy, report)
        polarity = _metadata(sb.polarity, so.polarity, st.polarity, "source-metadata", "polarity", name, policy,
                             report) or "light"
        if items or ho or ht:
            sources[name] = DataSource(name, items, meta, polarity).save(objects)

    species = _merge_maps(base.species, ours.species, theirs.species, "species", None, policy, report)
    meta = _metadata(base.metadata, ours.metadata, theirs.metadata, "population-metadata", "metadata", None,
                     policy, report)
    if report.conflicts and policy == "fail":
        raise MergeConflict(f"{len(report.conflicts)} merge conflict(s): {report.summary()}")
    return Population(ours.name, sources, species, meta), report
