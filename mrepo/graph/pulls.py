"""Pull requests: a branch proposed for a target branch, checked for conflicts and collisions.

A pull request is a record (kind ``pull-request``) under ``refs/pulls/<n>``. Every
change writes a new record (whose ``previous`` is the old one) and swaps the ref by
compare-and-swap; a new number is taken by CAS-creating ``refs/pulls/<n>`` for the
next free n. The record references the proposed commit, the latest check report
(kind ``collision-report``) and the merge commit, so clone carries pull requests whole and
fetch keeps them under ``refs/remotes/<remote>/pulls/<n>`` (push sends branches only).

Sources (``from``): a local branch, a fetched remote-tracking branch ``remote/branch``
(``refs/remotes/<remote>/<branch>``), or ``URL#branch`` (its objects are copied in
when the pull request is opened; later checks use that stored commit). Local and
remote-tracking sources are followed: a check or merge uses the branch's current head.

Checks (see :mod:`mrepo.graph.collisions` for the geometry): the 3-way merge's conflicts;
references: every particle of an incoming species must name an item of the merged population
(the target's items plus those the source adds), else InvalidInput and nothing is written;
collisions, duplicates, shared particles, id clashes and reclassifications. "Incoming" species are
those added or changed on the source side relative to the merge base; "existing" species are the
target's species that the merge keeps, *in the version the merge produces* (so particles the source
removed from a species it changed hit nothing); "previous" species are the target's versions of the
species the source changed or deleted (where reclassified particles came from). A merge commit has the
target head and the proposed commit as parents and records policy, overlap factor and the report's
hash; its hash therefore depends on the author and time given to :func:`merge_pull`.

Particle identity (DESIGN.md; :mod:`mrepo.io.identity`): an id names one pick. Independently imported
picks never share an id; a species derived from another's particles keeps their ids. Hence:

- same id, same item, within the tolerance, and the existing species still holds it -> **shared**: one
  pick in two species after the merge (a subset copied instead of moved). Blocks ``fail``.
- same id that a previous species held and the merged version no longer holds -> **reclassification**
  (the particle moved). Never blocks, never a collision.
- same id in another item or farther than the tolerance -> **id clash** (two particles, one id). Blocks.
- different ids closer than F (r_a + r_b) -> **collision**; an exact duplicate imported without its id
  (same position, new id) is a collision at distance 0. Blocks.
- two particles of one incoming species closer than F · diameter -> **duplicate**. Blocks.

What a policy removes (and nothing else):

- ``fail``: nothing; the merge is refused unless the report is clean (no conflict, collision,
  duplicate, shared particle or id clash).
- ``drop-incoming``: the incoming particle of every collision, shared particle and id clash; then, of
  each group of duplicates in an incoming species, every particle but the lowest id (non-maximum
  suppression by id, so a chain a-b-c keeps a and c). Existing species are untouched; an incoming
  particle that is in no finding is always kept.
- ``drop-existing``: the existing particle of every collision, shared particle and id clash (its species
  is marked ``needs_refinement``), and the incoming duplicates as above.
- ``allow``: nothing; the merge is made as is.

A policy that would empty a species refuses the merge. 3-way merge conflicts always refuse.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import numpy as np

from ..store import InvalidInput, MergeConflict, RefConflict, RefNotFound, branch_key, check_name, deref, record_ref
from .collisions import DEFAULT_OVERLAP_FACTOR, CollisionReport, check_collisions, greedy_keep
from .history import is_ancestor, merge_base
from .merge import merge_populations
from .model import Commit, DataSource, Item, ParticleTable, Population, Species
from .repository import Repository, default_author, utc_now

PULLS_PREFIX = "refs/pulls/"
PullState = Literal["open", "merged", "closed"]
PullPolicy = Literal["fail", "drop-incoming", "drop-existing", "allow"]
PULL_POLICIES = ("fail", "drop-incoming", "drop-existing", "allow")


def pull_key(number: int) -> str:
    """``refs/pulls/<n>`` for a positive integer n."""
    if isinstance(number, bool) or not isinstance(number, (int, np.integer)) or number < 1:
        raise InvalidInput(f"invalid pull request number {number!r}: use a positive integer")
    return f"{PULLS_PREFIX}{int(number)}"


@dataclass(frozen=True)
class PullRequest:
    """One version of a pull request (times are UTC ISO 8601; hashes are commits/records)."""

    number: int
    title: str
    author: str
    source: str  # as given: "branch", "remote/branch" or "URL#branch"
    source_ref: str | None  # the ref followed (refs/heads/... or refs/remotes/...); None for URL sources
    head: str  # the commit proposed
    into: str  # target branch
    state: PullState = "open"
    check: str | None = None  # latest collision-report record
    merge_commit: str | None = None
    created: str = ""
    updated: str = ""
    description: str = ""
    previous: str | None = None  # the record this one replaced

    KIND = "pull-request"

    def to_body(self) -> dict[str, Any]:
        return {
            "number": int(self.number), "title": self.title, "description": self.description, "author": self.author,
            "from": {"name": self.source, "ref": self.source_ref, "commit": record_ref(self.head)},
            "into": self.into, "state": self.state,
            "check": None if self.check is None else record_ref(self.check),
            "merge_commit": None if self.merge_commit is None else record_ref(self.merge_commit),
            "created": self.created, "updated": self.updated,
            "previous": None if self.previous is None else record_ref(self.previous),
        }

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> PullRequest:
        opt = lambda v: None if v is None else deref(v)  # noqa: E731
        src = body["from"]
        return cls(body["number"], body["title"], body["author"], src["name"], src.get("ref"), deref(src["commit"]),
                   body["into"], body["state"], opt(body.get("check")), opt(body.get("merge_commit")),
                   body.get("created", ""), body.get("updated", ""), body.get("description", ""),
                   opt(body.get("previous")))

    def to_json(self) -> dict[str, Any]:
        """Plain JSON for display (hashes as strings)."""
        return asdict(self)


@dataclass(frozen=True)
class PullCheck:
    """A check's outcome: the pull request (updated), the report, its record hash and the commits used."""

    pull: PullRequest
    report: CollisionReport
    report_hash: str
    target: str
    head: str
    base: str | None


@dataclass(frozen=True)
class PullMerge:
    """A merge's outcome. ``kind``: "merge", "up-to-date" (nothing new) or "already-merged"."""

    pull: PullRequest
    commit: str
    kind: str
    report_hash: str | None = None
    dropped: dict[str, int] | None = None


# ----------------------------------------------------------------------------- reading and writing records


def get_pull(repo: Repository, number: int) -> tuple[str, PullRequest]:
    """(record hash, pull request) of ``refs/pulls/<n>``; raises RefNotFound."""
    h = repo.refs.get(pull_key(number))
    if h is None:
        raise RefNotFound(f"no pull request #{number} in {repo.url}")
    return h, PullRequest.from_body(repo.objects.get_record(h, PullRequest.KIND))


def list_pulls(repo: Repository, state: str | None = None, *, remote: str | None = None) -> list[PullRequest]:
    """Pull requests by number (only ``state`` when given); ``remote``: those fetched from that remote
    (``refs/remotes/<remote>/pulls/<n>``) instead of this repository's own."""
    prefix = PULLS_PREFIX if remote is None else f"refs/remotes/{check_name(remote, 'remote name')}/pulls/"
    out = []
    for key, h in repo.refs.list(prefix):
        tail = key.removeprefix(prefix)
        if tail.isdigit():
            pr = PullRequest.from_body(repo.objects.get_record(h, PullRequest.KIND))
            if state is None or pr.state == state:
                out.append(pr)
    return sorted(out, key=lambda p: p.number)


def load_report(repo: Repository, h: str) -> CollisionReport:
    return CollisionReport.from_json(repo.objects.get_record(h, "collision-report"))


def _update(repo: Repository, number: int, change: Any, time: str | None = None) -> PullRequest:
    """Apply ``change(pr) -> PullRequest | None`` and swap the ref (re-read and retried on conflict).
    None means no change."""
    key = pull_key(number)
    for _ in range(20):
        old_h, pr = get_pull(repo, number)
        new = change(pr)
        if new is None:
            return pr
        new = replace(new, previous=old_h, updated=time or utc_now())
        h = repo.objects.put_record(PullRequest.KIND, new.to_body())
        try:
            repo.refs.update(key, h, old_h, operation=f"pr update ({new.state})")
            return new
        except RefConflict:
            continue
    raise RefConflict(f"{key} keeps changing concurrently")


def resolve_source(repo: Repository, source: str) -> tuple[str | None, str]:
    """(followed ref or None, commit) of a pull request source; copies a URL source's objects in."""
    if not isinstance(source, str) or not source:
        raise InvalidInput(f"invalid pull request source {source!r}")
    if "#" in source:
        url, _, branch = source.rpartition("#")
        check_name(branch, "branch name")
        from .transfer import copy_closure

        other = Repository.open(url)
        try:
            head = other.head(branch)
            if head is None:
                raise RefNotFound(f"branch {branch!r} does not exist in {url}")
            copy_closure(other.storage, repo.storage, [head])
        finally:
            other.close()
        return None, head
    check_name(source, "branch name")
    key = branch_key(source)
    head = repo.refs.get(key)
    if head is None and "/" in source:
        remote, _, branch = source.partition("/")
        key = f"refs/remotes/{remote}/{branch}"
        head = repo.refs.get(key)
    if head is None:
        raise RefNotFound(f"unknown pull request source {source!r}: no branch or fetched remote branch of that name")
    return key, head


def open_pull(repo: Repository, source: str, into: str, title: str, *, description: str = "",
              author: str | None = None, time: str | None = None) -> PullRequest:
    """Open a pull request proposing ``source`` for branch ``into``; takes the next free number."""
    if not isinstance(title, str) or not title.strip():
        raise InvalidInput("a pull request needs a non-empty title")
    if repo.head(into) is None:
        raise RefNotFound(f"target branch {into!r} does not exist")
    source_ref, head = resolve_source(repo, source)
    if source_ref == branch_key(into):
        raise InvalidInput(f"a pull request cannot propose branch {into!r} for itself")
    now = time or utc_now()
    taken = [int(k.removeprefix(PULLS_PREFIX)) for k, _ in repo.refs.list(PULLS_PREFIX)
             if k.removeprefix(PULLS_PREFIX).isdigit()]
    number = max(taken, default=0) + 1
    for _ in range(100):
        pr = PullRequest(number, title.strip(), author or default_author(), source, source_ref, head, into,
                         created=now, updated=now, description=description)
        h = repo.objects.put_record(PullRequest.KIND, pr.to_body())
        try:
            repo.refs.update(pull_key(number), h, None, operation="pr open", who=pr.author)
            return pr
        except RefConflict:
            number += 1
    raise RefConflict("could not take a pull request number: too many concurrent writers")


def close_pull(repo: Repository, number: int, *, time: str | None = None) -> PullRequest:
    """Close an open pull request (closing a closed one changes nothing)."""
    def change(pr: PullRequest) -> PullRequest | None:
        if pr.state == "merged":
            raise InvalidInput(f"pull request #{number} is already merged")
        return None if pr.state == "closed" else replace(pr, state="closed")

    return _update(repo, number, change, time)


def _follow(repo: Repository, number: int) -> PullRequest:
    """The pull request with ``head`` moved (in memory only) to its source branch's current commit
    when it is open and its source is a local or remote-tracking branch that still exists."""
    _, pr = get_pull(repo, number)
    if pr.state != "open" or pr.source_ref is None:
        return pr
    current = repo.refs.get(pr.source_ref)
    return pr if current is None or current == pr.head else replace(pr, head=current)


# ----------------------------------------------------------------------------- checking


@dataclass(frozen=True)
class _Analysis:
    target: str
    head: str
    base: str | None
    merged: Population
    report: CollisionReport


def item_kinds(repo: Repository, pop: Population, needed: set[str]) -> dict[str, str]:
    """item key -> kind for the ``needed`` keys present in ``pop`` (absent keys are left out)."""
    where: dict[str, str] = {}
    for sh in pop.sources.values():
        where.update(DataSource.load(repo.objects, sh).items)
    return {k: Item.load(repo.objects, where[k]).kind for k in sorted(needed) if k in where}


def _species_set(repo: Repository, species: dict[str, str]) -> dict[str, tuple[Species, ParticleTable]]:
    out = {}
    for name, h in sorted(species.items()):
        sp = Species.load(repo.objects, h)
        out[name] = (sp, ParticleTable.load(repo.objects, sp.particles))
    return out


def analyse(repo: Repository, target: str, head: str, *, overlap_factor: float = DEFAULT_OVERLAP_FACTOR,
            reclass_tolerance: float | None = None, duplicate_tolerance: float | None = None) -> _Analysis:
    """Merge ``head`` into ``target`` in memory (3-way) and check the incoming species' particles."""
    base_h = merge_base(repo.objects, target, head)
    pop = lambda h: Population.load(repo.objects, Commit.load(repo.objects, h).population)  # noqa: E731
    base, ours, theirs = (pop(base_h) if base_h else None), pop(target), pop(head)
    try:
        merged, mreport = merge_populations(repo.objects, base, ours, theirs, "fail")
        conflicts: list[dict[str, Any]] = []
    except MergeConflict:
        merged, mreport = merge_populations(repo.objects, base, ours, theirs, "ours")
        conflicts = [{**asdict(c), "resolution": None} for c in mreport.conflicts]
    base_species = base.species if base else {}
    incoming = _species_set(repo, {n: h for n, h in theirs.species.items() if base_species.get(n) != h})
    # the target's species in the version the merge keeps (one the source deleted cannot be hit; one the
    # source changed is compared as merged, so particles the source removed hit nothing); empty ones hit nothing
    kept = {n: merged.species[n] for n in ours.species if n in merged.species}
    existing = {n: v for n, v in _species_set(repo, kept).items() if len(v[1])}
    # the target's versions of species the source changed or deleted: where reclassified particles came from
    changed = {n: h for n, h in ours.species.items() if merged.species.get(n) != h}
    previous = {n: v for n, v in _species_set(repo, changed).items() if len(v[1])}
    needed = {k for _, t in (*incoming.values(), *existing.values()) for k in t.items}
    kinds = item_kinds(repo, merged, needed | {k for _, t in previous.values() for k in t.items})
    previous = {n: (sp, t.select(np.isin(t.item_keys(), list(kinds)))) for n, (sp, t) in previous.items()}
    previous = {n: v for n, v in previous.items() if len(v[1])}
    report = check_collisions(incoming, existing, kinds, overlap_factor=overlap_factor,
                              reclass_tolerance=reclass_tolerance, duplicate_tolerance=duplicate_tolerance,
                              previous=previous)
    report.conflicts = conflicts
    return _Analysis(target, head, base_h, merged, report)


def _save_report(repo: Repository, number: int, a: _Analysis) -> str:
    body = {"pr": int(number), "commits": {"target": record_ref(a.target), "head": record_ref(a.head),
                                           "base": None if a.base is None else record_ref(a.base)},
            **a.report.to_json()}
    return repo.objects.put_record("collision-report", body)


def check_pull(repo: Repository, number: int, *, overlap_factor: float = DEFAULT_OVERLAP_FACTOR,
               reclass_tolerance: float | None = None, duplicate_tolerance: float | None = None,
               time: str | None = None) -> PullCheck:
    """Run the checks of an open pull request, store the report and point the pull request at it."""
    pr = _follow(repo, number)
    if pr.state != "open":
        raise InvalidInput(f"pull request #{number} is {pr.state}; only open pull requests are checked")
    target = repo.head(pr.into)
    if target is None:
        raise RefNotFound(f"target branch {pr.into!r} of pull request #{number} does not exist")
    a = analyse(repo, target, pr.head, overlap_factor=overlap_factor, reclass_tolerance=reclass_tolerance,
                duplicate_tolerance=duplicate_tolerance)
    rh = _save_report(repo, number, a)
    pr = _update(repo, number, lambda p: None if (p.check, p.head) == (rh, a.head) else replace(p, check=rh, head=a.head),
                 time)
    return PullCheck(pr, a.report, rh, a.target, a.head, a.base)


# ----------------------------------------------------------------------------- merging


def _drop(repo: Repository, pop: Population, name: str, ids: set[int], metadata: dict[str, Any] | None
          ) -> tuple[Population, int]:
    """``pop`` with particles ``ids`` removed from species ``name`` (new Species/ParticleTable versions)."""
    sp = Species.load(repo.objects, pop.species[name])
    table = ParticleTable.load(repo.objects, sp.particles)
    mask = ~np.isin(table.ids, np.fromiter(ids, np.int64, len(ids)))
    removed = int((~mask).sum())
    if removed == 0:
        return pop, 0
    if not mask.any():
        raise MergeConflict(f"the merge policy would remove every particle of species {name!r}")
    new = sp.evolve(particles=table.select(mask).save(repo.objects), metadata={**sp.metadata, **(metadata or {})})
    return replace(pop, species={**pop.species, name: new.save(repo.objects)}), removed


def _duplicate_losers(report: CollisionReport, name: str, gone: set[int]) -> set[int]:
    """Ids to drop so that no duplicate pair remains in incoming species ``name`` (the lower id is kept)."""
    pairs = [(d.id_a, d.id_b) for d in report.duplicates if d.species == name and d.id_a not in gone
             and d.id_b not in gone]
    if not pairs:
        return set()
    ids = np.array(sorted({i for p in pairs for i in p}), dtype=np.int64)
    row = {int(i): r for r, i in enumerate(ids)}
    keep = greedy_keep(len(ids), np.array([row[a] for a, _ in pairs]), np.array([row[b] for _, b in pairs]), ids)
    return {int(i) for i in ids[~keep]}


def merge_pull(repo: Repository, number: int, *, policy: PullPolicy = "fail",
               overlap_factor: float = DEFAULT_OVERLAP_FACTOR, reclass_tolerance: float | None = None,
               duplicate_tolerance: float | None = None, message: str | None = None, author: str | None = None,
               time: str | None = None) -> PullMerge:
    """Check and merge pull request ``number`` into its target branch with a two-parent merge commit.

    Policies (module docstring): ``fail`` refuses unless clean (MergeConflict, no ref written);
    ``drop-incoming`` removes the incoming particle of each collision, shared particle and id clash
    and, of each group of duplicates, all but the lowest id; ``drop-existing`` removes the existing
    particles instead, marks their species ``needs_refinement`` and dedups incoming species likewise;
    ``allow`` merges as is. 3-way merge conflicts always refuse. Merging a merged pull request changes
    nothing.
    """
    if policy not in PULL_POLICIES:
        raise InvalidInput(f"unknown pull request policy {policy!r}: use one of {', '.join(PULL_POLICIES)}")
    pr = _follow(repo, number)
    if pr.state == "merged":
        return PullMerge(pr, pr.merge_commit or "", "already-merged", pr.check)
    if pr.state == "closed":
        raise InvalidInput(f"pull request #{number} is closed; reopen it by opening a new one")
    target = repo.head(pr.into)
    if target is None:
        raise RefNotFound(f"target branch {pr.into!r} of pull request #{number} does not exist")
    if is_ancestor(repo.objects, pr.head, target):
        done = _update(repo, number, lambda p: replace(p, state="merged", merge_commit=target, head=pr.head), time)
        return PullMerge(done, target, "up-to-date")
    a = analyse(repo, target, pr.head, overlap_factor=overlap_factor, reclass_tolerance=reclass_tolerance,
                duplicate_tolerance=duplicate_tolerance)
    rh = _save_report(repo, number, a)
    r = a.report
    if r.conflicts:
        raise MergeConflict(f"pull request #{number}: {len(r.conflicts)} merge conflict(s) with {pr.into!r} "
                            f"(report {rh[:12]}); resolve them on the source branch")
    if policy == "fail" and not r.clean:
        raise MergeConflict(f"pull request #{number}: {r.blocking_summary()}; merge refused with policy 'fail' "
                            f"(report {rh[:12]})")
    merged, dropped = a.merged, {}
    if policy in ("drop-incoming", "drop-existing") and not r.clean:
        merged, dropped = _apply_drops(repo, number, merged, r, policy)
    op = {"name": "pr-merge", "pr": int(number), "policy": policy, "overlap_factor": float(overlap_factor),
          "report": record_ref(rh), "base": a.base, "dropped": dropped}
    commit = repo.commit(merged, message=message or f"Merge pull request #{number}: {pr.title}", branch=pr.into,
                         operation=op, author=author, time=time, parents=[target, pr.head], expected_head=target)
    done = _update(repo, number, lambda p: replace(p, state="merged", merge_commit=commit, check=rh, head=pr.head),
                   time)
    return PullMerge(done, commit, "merge", rh, dropped)


def _apply_drops(repo: Repository, number: int, pop: Population, r: CollisionReport, policy: str
                 ) -> tuple[Population, dict[str, int]]:
    """The merged population with the particles ``policy`` removes; (population, species -> count)."""
    dropped: dict[str, int] = {}
    gone: dict[str, set[int]] = {}
    existing_side: set[str] = set()
    if policy == "drop-incoming":
        for c in r.collisions:
            gone.setdefault(c.incoming, set()).add(c.incoming_id)
        for k in (*r.id_clashes, *r.shared):
            gone.setdefault(k.incoming, set()).add(k.id)
    else:
        for c in r.collisions:
            gone.setdefault(c.existing, set()).add(c.existing_id)
        for k in (*r.id_clashes, *r.shared):
            gone.setdefault(k.existing, set()).add(k.id)
        existing_side = set(gone)
    for name in r.incoming:
        losers = _duplicate_losers(r, name, gone.get(name, set()) if policy == "drop-incoming" else set())
        if losers:
            gone.setdefault(name, set()).update(losers)
    for name in sorted(gone):
        meta = None
        if name in existing_side:
            meta = {"needs_refinement": True,
                    "needs_refinement_reason": f"pull request #{number} ({policy}) removed colliding particles"}
        pop, n = _drop(repo, pop, name, gone[name], meta)
        if n:
            dropped[name] = n
    return pop, dropped


__all__ = [
    "PULL_POLICIES", "PullCheck", "PullMerge", "PullRequest", "analyse", "check_pull", "close_pull", "get_pull",
    "item_kinds", "list_pulls", "load_report", "merge_pull", "open_pull", "pull_key", "resolve_source",
]
