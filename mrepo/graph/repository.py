"""``Repository``: the Python API every front end (CLI, server, workers) calls.

A repository is a :class:`~mrepo.store.Storage` (objects + refs on one URL) plus the
population model and the commit graph. Writes follow DESIGN.md's order: objects,
then records, then the ref by compare-and-swap; a writer that loses the race gets
:class:`~mrepo.store.RefConflict` and nothing it wrote is referenced.

Revisions (``rev``): a branch, ``refs/...``, a tag, a full hash or a unique prefix
of at least 6 hex characters, each optionally followed by ``~N`` (N-th first parent).
"""

from __future__ import annotations

import getpass
import json
import os
import re
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .. import __version__
from ..store import (
    InvalidInput,
    ObjectStore,
    RefConflict,
    RefNotFound,
    RefStore,
    Storage,
    branch_key,
    check_name,
    is_hash,
    record_ref,
    reflog,
    tag_key,
)
from .diff import PopulationDiff, diff_populations
from .history import is_ancestor, log, merge_base
from .merge import MergePolicy, MergeReport, merge_populations
from .model import Commit, DataSource, Item, ParticleTable, Population, Species
from .schema import check_ref_target

CONFIG_KEY = "config.json"
_AT_N = re.compile(r"^(?P<ref>[^@{}]+(?:@[^{][^@{}]*)*)@\{(?P<n>\d+)\}$")
#: A revision: a base name or hash, then any chain of ``~N`` / ``~`` (N first parents) and
#: ``^N`` / ``^`` (the N-th parent; ``^0`` the commit itself), as in git.
_REV = re.compile(r"^(?P<base>[^~^]+)(?P<suffix>(?:[~^]\d*)*)$")
_REV_STEP = re.compile(r"([~^])(\d*)")


def _commit_operation(operation: dict[str, Any]) -> str:
    """Reflog label of a commit: ``commit`` or ``commit (<operation name>)``."""
    name = str(operation.get("name", "commit"))
    return "commit" if name == "commit" else f"commit ({name})"


def utc_now() -> str:
    """Current UTC time as ISO 8601 with seconds and a ``Z``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def default_author() -> str:
    import os

    return os.environ.get("MREPO_AUTHOR") or f"{getpass.getuser()}@{socket.gethostname()}"


@dataclass(frozen=True)
class MergeResult:
    """Outcome of :meth:`Repository.merge`: the new head and how it was reached."""

    commit: str
    kind: str  # "fast-forward" | "merge" | "up-to-date"
    report: MergeReport | None = None


class Repository:
    """A population repository at one URL (local folder, ``s3://``, ``memory://``, ``http(s)://``)."""

    def __init__(self, storage: Storage):
        self.storage = storage
        if not storage.backend.checks_writes:  # a server checks ref targets itself
            # a ref points only at a record of its kind: branches and tags -> commits (graph.schema)
            storage.refs.check_target = lambda key, h: check_ref_target(storage.objects, key, h)

    # ------------------------------------------------------------------ opening
    @classmethod
    def init(cls, url: str, options: dict[str, Any] | None = None, *, default_branch: str = "main") -> Repository:
        """Create an empty repository at ``url``."""
        check_name(default_branch, "branch name")
        storage = Storage.create(url, options)
        repo = cls(storage)
        if default_branch != "main":
            storage.refs.set_default_branch(default_branch)
        return repo

    @classmethod
    def open(cls, url: str, options: dict[str, Any] | None = None) -> Repository:
        """Open the repository at ``url``; raises RepositoryNotFound."""
        return cls(Storage.open(url, options))

    def close(self) -> None:
        self.storage.close()

    def __enter__(self) -> Repository:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        return self.storage.url

    @property
    def objects(self) -> ObjectStore:
        return self.storage.objects

    @property
    def refs(self) -> RefStore:
        return self.storage.refs

    @property
    def default_branch(self) -> str:
        return self.refs.default_branch()

    # ------------------------------------------------------------------ config (remotes)
    def config(self) -> dict[str, Any]:
        data, _ = self.storage.backend.read_versioned(CONFIG_KEY)
        return json.loads(data) if data else {}

    def update_config(self, change: Any) -> dict[str, Any]:
        """Apply ``change(config) -> None`` under compare-and-swap (retried on conflict)."""
        for _ in range(20):
            data, token = self.storage.backend.read_versioned(CONFIG_KEY)
            cfg = json.loads(data) if data else {}
            change(cfg)
            try:
                self.storage.backend.cas(CONFIG_KEY, token, json.dumps(cfg, indent=2, sort_keys=True).encode())
                return cfg
            except RefConflict:
                continue
        raise RefConflict("config.json keeps changing concurrently")

    def remotes(self) -> dict[str, str]:
        return dict(self.config().get("remotes", {}))

    def add_remote(self, name: str, url: str) -> None:
        """Remember ``url`` as ``name``; a local path is stored absolute, so the remote works from any folder."""
        check_name(name, "remote name")
        if "://" not in url:
            url = os.path.abspath(os.path.expanduser(url))
        self.update_config(lambda cfg: cfg.setdefault("remotes", {}).__setitem__(name, url))

    # ------------------------------------------------------------------ refs
    def head(self, branch: str | None = None) -> str | None:
        """The commit a branch points at (the default branch when None)."""
        return self.refs.get(branch_key(branch or self.default_branch))

    def branches(self) -> dict[str, str]:
        return {k.removeprefix("refs/heads/"): v for k, v in self.refs.list("refs/heads/")}

    def tags(self) -> dict[str, str]:
        return {k.removeprefix("refs/tags/"): v for k, v in self.refs.list("refs/tags/")}

    def create_branch(self, name: str, rev: str | None = None, *, force: bool = False) -> str:
        key = branch_key(name)
        target = self.resolve(rev or self.default_branch)
        current = self.refs.get(key)
        if current is not None and not force:
            raise InvalidInput(f"branch {name!r} already exists (mrepo branch --force, or force=True, moves it)")
        self.refs.update(key, target, current, operation="branch --force" if current is not None else "branch")
        return target

    def delete_branch(self, name: str) -> None:
        key = branch_key(name)
        current = self.refs.get(key)
        if current is None:
            raise RefNotFound(f"branch {name!r} does not exist")
        if name == self.default_branch:
            raise InvalidInput(f"branch {name!r} is the default branch and cannot be deleted")
        self.refs.update(key, None, current, operation="branch --delete")

    def create_tag(self, name: str, rev: str | None = None) -> str:
        key = tag_key(name)
        target = self.resolve(rev or self.default_branch)
        if self.refs.get(key) is not None:
            raise InvalidInput(f"tag {name!r} already exists")
        self.refs.update(key, target, None, operation="tag")
        return target

    def delete_tag(self, name: str) -> None:
        key = tag_key(name)
        current = self.refs.get(key)
        if current is None:
            raise RefNotFound(f"tag {name!r} does not exist")
        self.refs.update(key, None, current, operation="tag --delete")

    # ------------------------------------------------------------------ reflog
    def reflog(self, ref: str | None = None) -> list[reflog.ReflogEntry]:
        """Recorded moves of ``ref`` (a branch, tag or ``refs/...``; every ref when None), newest first."""
        if ref is None:
            return reflog.read_all(self.storage.backend)
        return reflog.read(self.storage.backend, self._ref_key_for_log(ref))

    def _ref_key_for_log(self, ref: str) -> str:
        """``refs/...`` key of a branch, tag or ``remote/branch`` name: the first that exists now or
        has a reflog (a deleted branch still has one), else the branch."""
        if ref.startswith("refs/"):
            return check_name(ref, "ref")
        if ref == "HEAD":
            ref = self.default_branch
        keys = [branch_key(ref), tag_key(ref)] + ([f"refs/remotes/{check_name(ref, 'ref')}"] if "/" in ref else [])
        for key in keys:
            if self.refs.get(key) is not None:
                return key
        for key in keys:
            if any(True for _ in self.storage.backend.list(reflog.log_prefix(key))):
                return key
        return keys[0]

    def reflog_value(self, ref: str, n: int) -> str:
        """Where ``ref`` pointed ``n`` moves ago (``ref@{n}``; 0 is now)."""
        entries = self.reflog(ref)
        if n >= len(entries):
            raise RefNotFound(f"{ref}@{{{n}}}: the reflog of {ref!r} has only {len(entries)} entr"
                              f"{'y' if len(entries) == 1 else 'ies'}")
        value = entries[n].new
        if value is None:
            raise RefNotFound(f"{ref}@{{{n}}} is the deletion of {ref!r} ({entries[n].when}); "
                              f"use {ref}@{{{n + 1}}}")
        return value

    def restore_branch(self, name: str, n: int | None = None) -> str:
        """Move branch ``name`` back to ``name@{n}`` (default: where it was before its last move,
        e.g. before a deletion or a forced move); recreates a deleted branch. Returns the commit."""
        key = branch_key(name)
        entries = reflog.read(self.storage.backend, key)
        if not entries:
            raise RefNotFound(f"branch {name!r} has no reflog entries: nothing to restore")
        if n is None:
            target = entries[0].old
            if target is None:
                raise InvalidInput(f"the last move of branch {name!r} created it ({entries[0].when}): "
                                   "nothing before it to restore")
            label = f"{name} before '{entries[0].operation}' at {entries[0].when}"
        else:
            target = self.reflog_value(name, n)
            label = f"{name}@{{{n}}}"
        if not self.objects.has_object(target):
            raise RefNotFound(f"{label} is commit {target[:12]}, which gc removed (older than the grace period)")
        current = self.refs.get(key)
        if current == target:
            return target
        self.refs.update(key, target, current, operation=f"branch --restore {label}")
        return target

    # ------------------------------------------------------------------ revisions
    def resolve(self, rev: str) -> str:
        """The commit hash a revision names; raises RefNotFound."""
        if not isinstance(rev, str) or not rev:
            raise InvalidInput(f"invalid revision {rev!r}")
        m = _REV.match(rev)
        if not m:
            raise InvalidInput(f"invalid revision {rev!r}")
        h = self._resolve_base(m.group("base"))
        for op, digits in _REV_STEP.findall(m.group("suffix")):
            n = int(digits) if digits else 1
            if op == "^":
                if n == 0:
                    continue
                parents = Commit.load(self.objects, h).parents
                if not parents:
                    raise RefNotFound(f"revision {rev!r} goes past the first commit")
                if len(parents) < n:
                    raise RefNotFound(f"revision {rev!r}: commit {h[:12]} has {len(parents)} parent(s), not {n}")
                h = parents[n - 1]
                continue
            for _ in range(n):
                parents = Commit.load(self.objects, h).parents
                if not parents:
                    raise RefNotFound(f"revision {rev!r} goes past the first commit")
                h = parents[0]
        return h

    def _resolve_base(self, base: str) -> str:
        at = _AT_N.match(base)
        if at:  # ref@{n}: where the ref pointed n moves ago (reflog)
            return self.reflog_value(at.group("ref"), int(at.group("n")))
        if base == "HEAD":
            base = self.default_branch
        if base == self.default_branch and self.head(base) is None and not self.branches():
            raise RefNotFound(f"branch {base!r} has no commits yet in {self.url}")
        if base.startswith("refs/"):
            check_name(base, "ref")
            return self.refs.require(base)
        if is_hash(base):
            if not self.objects.has_object(base):
                raise RefNotFound(f"commit {base} is not in {self.url}")
            return base
        check_name(base, "revision")
        for key in (branch_key(base), tag_key(base)):
            value = self.refs.get(key)
            if value is not None:
                return value
        if "/" in base:  # remote/branch
            remote, _, branch = base.partition("/")
            value = self.refs.get(f"refs/remotes/{remote}/{branch}")
            if value is not None:
                return value
        if re.fullmatch(r"[0-9a-f]{6,63}", base):
            found = [e.key for e in self.storage.backend.list(f"objects/{base[:2]}/")
                     if e.key.replace("/", "").removeprefix("objects").startswith(base)]
            if len(found) == 1:
                return found[0].replace("/", "").removeprefix("objects")
            if len(found) > 1:
                raise InvalidInput(f"revision {base!r} is ambiguous ({len(found)} objects)")
        raise RefNotFound(f"unknown revision {base!r}: no such branch, tag or commit in {self.url}")

    # ------------------------------------------------------------------ reading
    def get_commit(self, rev: str) -> Commit:
        return Commit.load(self.objects, self.resolve(rev))

    def population(self, rev: str | None = None) -> Population:
        """The population at a revision (default branch when None)."""
        return Population.load(self.objects, self.get_commit(rev or self.default_branch).population)

    def source(self, h: str) -> DataSource:
        return DataSource.load(self.objects, h)

    def item(self, h: str) -> Item:
        return Item.load(self.objects, h)

    def species(self, h: str) -> Species:
        return Species.load(self.objects, h)

    def particles(self, h: str, *, verify: bool = True) -> ParticleTable:
        return ParticleTable.load(self.objects, h, verify=verify)

    def log(self, rev: str | None = None, limit: int | None = None) -> list[tuple[str, Commit]]:
        return list(log(self.objects, self.resolve(rev or self.default_branch), limit))

    def diff(self, a: str, b: str) -> PopulationDiff:
        pa = Population.load(self.objects, self.get_commit(a).population)
        pb = Population.load(self.objects, self.get_commit(b).population)
        return diff_populations(self.objects, pa, pb)

    # ------------------------------------------------------------------ writing
    def commit(self, population: Population | str, *, message: str, branch: str | None = None,
               operation: dict[str, Any] | None = None, author: str | None = None, time: str | None = None,
               parents: list[str] | None = None, expected_head: str | None | type[Ellipsis] = ...) -> str:
        """Record ``population`` as a new commit on ``branch`` and move the branch by CAS.

        ``parents`` defaults to the branch head; ``expected_head`` (default: the head read now)
        is what the branch must still hold at the swap, else RefConflict.
        """
        branch = branch or self.default_branch
        key = branch_key(branch)
        current = self.refs.get(key)
        expected = current if expected_head is ... else expected_head
        if parents is None:
            parents = [] if expected is None else [expected]
        pop_hash = population if isinstance(population, str) else population.save(self.objects)
        Population.load(self.objects, pop_hash)  # must exist and be a population
        commit = Commit(
            parents=tuple(parents), population=pop_hash, author=author or default_author(),
            time=time or utc_now(), message=message, operation=operation or {"name": "commit"},
            mrepo_version=__version__,
        )
        h = commit.save(self.objects)
        self.refs.update(key, h, expected, operation=_commit_operation(commit.operation), who=commit.author)
        return h

    def merge(self, theirs: str, *, into: str | None = None, policy: MergePolicy = "fail",
              message: str | None = None, author: str | None = None, time: str | None = None,
              operation: dict[str, Any] | None = None, allow_fast_forward: bool = True) -> MergeResult:
        """Merge revision ``theirs`` into branch ``into`` (3-way; fast-forward when possible)."""
        into = into or self.default_branch
        ours_h = self.refs.get(branch_key(into))
        theirs_h = self.resolve(theirs)
        if ours_h is None:
            self.refs.update(branch_key(into), theirs_h, None, operation=f"merge {theirs} (fast-forward)")
            return MergeResult(theirs_h, "fast-forward")
        if is_ancestor(self.objects, theirs_h, ours_h):
            return MergeResult(ours_h, "up-to-date")
        if allow_fast_forward and is_ancestor(self.objects, ours_h, theirs_h):
            self.refs.update(branch_key(into), theirs_h, ours_h, operation=f"merge {theirs} (fast-forward)")
            return MergeResult(theirs_h, "fast-forward")
        base_h = merge_base(self.objects, ours_h, theirs_h)
        base = Population.load(self.objects, Commit.load(self.objects, base_h).population) if base_h else None
        ours = Population.load(self.objects, Commit.load(self.objects, ours_h).population)
        their_pop = Population.load(self.objects, Commit.load(self.objects, theirs_h).population)
        merged, report = merge_populations(self.objects, base, ours, their_pop, policy)
        report_hash = self.objects.put_record("merge-report", report.to_json())
        op = {"name": "merge", "policy": policy, "theirs": theirs_h, "base": base_h, "report": record_ref(report_hash),
              **(operation or {})}
        h = self.commit(merged, message=message or f"Merge {theirs} into {into}", branch=into, operation=op,
                        author=author, time=time, parents=[ours_h, theirs_h], expected_head=ours_h)
        return MergeResult(h, "merge", report)
