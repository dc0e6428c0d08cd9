"""Repository commands: init, log, show, diff, branch, tag, merge, verify, gc, remote."""

from __future__ import annotations

import re
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from ..graph import MERGE_POLICIES, Repository, gc, verify
from ..graph.maintenance import DEFAULT_GRACE_SECONDS
from ..store import InvalidInput
from .common import (
    JsonOption,
    RepoOption,
    console,
    fail,
    open_repo,
    print_json,
    progress_bar,
    refuse_memory,
    repo_url,
)
from .exit_codes import ExitCode


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""

    @app.command()
    def init(url: str = typer.Argument(None, help="Where to create it (default: --repo / $MREPO_REPO / here)."),
             repo: str = RepoOption,
             default_branch: str = typer.Option("main", help="Name of the default branch."),
             json: bool = JsonOption) -> None:
        """Create an empty repository."""
        target = url or repo_url(repo)
        refuse_memory(target, "create a repository at")
        Repository.init(target, default_branch=default_branch)
        if json:
            print_json({"url": target, "default_branch": default_branch})
            return
        console.print(f"Initialised empty mrepo repository at {target}")

    @app.command("log")
    def log_cmd(rev: str = typer.Argument(None, help="Revision (default: the default branch)."),
                limit: int = typer.Option(None, "-n", "--limit", help="Show at most N commits."),
                graph: bool = typer.Option(False, "--graph", help="Draw the commit graph (merges as lanes), "
                                           "one line per commit, as git log --graph --oneline."),
                all_refs: bool = typer.Option(False, "--all", help="History of every branch and tag, not only "
                                              "REV (with --graph: where branches diverge and meet)."),
                repo: str = RepoOption, json: bool = JsonOption) -> None:
        """Show the commit history."""
        r = open_repo(repo)
        if all_refs:
            found = {h: c for head in {**r.branches(), **r.tags()}.values() for h, c in r.log(head, limit)}
            entries = sorted(found.items(), key=lambda hc: (hc[1].time, hc[0]), reverse=True)[:limit]
        else:
            entries = r.log(rev, limit)
        if json:
            print_json([{"commit": h, **c.to_body()} for h, c in entries])
            return
        if graph:
            from .log_graph import graph_rows, topological_order

            commits = {h: c for h, c in entries}
            order = topological_order([(h, c.parents, c.time) for h, c in entries])
            labels = _ref_labels(r)
            for lanes, h in graph_rows(order, {h: c.parents for h, c in commits.items()}):
                if h is None:
                    console.print(lanes, markup=False, highlight=False)
                    continue
                c = commits[h]
                names = f" ({', '.join(labels[h])})" if h in labels else ""
                console.print(f"{lanes}  [yellow]{h[:12]}[/]{names} {escape(c.message.splitlines()[0] if c.message else '')}"
                              f" [dim]{c.time} {escape(c.author)}[/]", highlight=False, soft_wrap=True)
            return
        for h, c in entries:
            parents = " ".join(p[:12] for p in c.parents)
            console.print(f"[yellow]commit {h}[/]" + (f"  (parents {parents})" if len(c.parents) > 1 else ""))
            console.print(f"Author: {c.author}\nDate:   {c.time}\nOp:     {c.operation.get('name')}\n")
            console.print(f"    {c.message}\n")

    @app.command()
    def show(rev: str = typer.Argument(None, help="Revision (default: the default branch)."),
             repo: str = RepoOption, json: bool = JsonOption) -> None:
        """Show a commit and a summary of its population."""
        r = open_repo(repo)
        h = r.resolve(rev or r.default_branch)
        commit = r.get_commit(h)
        pop = r.population(h)
        sources = {n: r.source(sh) for n, sh in pop.sources.items()}
        species = {n: r.species(sh) for n, sh in pop.species.items()}
        counts = {n: r.objects.get_record(s.particles, "particles")["count"] for n, s in species.items()}
        if json:
            print_json({
                "commit": h, **commit.to_body(),
                "population_record": {"name": pop.name, "hash": commit.population},
                "sources": {n: {"hash": pop.sources[n], "items": len(s.items)} for n, s in sources.items()},
                "species": {n: {"hash": pop.species[n], "particles": counts[n], "resolution_A": s.resolution,
                                "symmetry": s.symmetry, "diameter_A": s.diameter, "box_px": s.box,
                                "pixel_size_A": s.pixel_size} for n, s in species.items()},
            })
            return
        console.print(f"[yellow]commit {h}[/]\nAuthor: {commit.author}\nDate:   {commit.time}\n\n    {commit.message}\n")
        console.print(f"Population [bold]{pop.name}[/] ({commit.population[:12]})")
        table = Table("kind", "name", "hash", "items / particles", "resolution (Å)")
        for n, s in sources.items():
            table.add_row("source", n, pop.sources[n][:12], str(len(s.items)), "")
        for n, s in species.items():
            res = f"{s.resolution:.2f}" if s.resolution else "-"
            table.add_row("species", n, pop.species[n][:12], str(counts[n]), res)
        console.print(table)

    @app.command()
    def diff(a: str = typer.Argument(..., help="Old revision."), b: str = typer.Argument(None, help="New revision."),
             repo: str = RepoOption, json: bool = JsonOption) -> None:
        """Differences between two commits by name: sources, items (and which fields), species (and what
        changed: resolution, maps, particles), particle counts."""
        r = open_repo(repo)
        d = r.diff(a, b or r.default_branch)
        if json:
            print_json(d.to_json())
            return
        if d.empty:
            console.print("no differences")
            return
        for label, values in (("source added", d.sources_added), ("source removed", d.sources_removed)):
            for v in values:
                console.print(f"{label:16} {v}")
        for name, fields in d.source_changes.items():
            console.print(f"{'source changed':16} {name}: {', '.join(fields)}")
        for e in d.items:
            what = f": {', '.join(e['fields'])}" if e["fields"] else ""
            console.print(f"{'item ' + e['change']:16} {e['source']}/{e['name']}{what}", soft_wrap=True)
        for label, values in (("species added", d.species_added), ("species removed", d.species_removed)):
            for v in values:
                console.print(f"{label:16} {v}")
        for name in d.species_changed:
            console.print(f"{'species changed':16} {name}: {_species_change_text(d.species_changes.get(name, {}))}",
                          soft_wrap=True)
        for name, p in d.particles.items():
            console.print(f"{'particles':16} {name}: +{p.added} -{p.removed} ({p.kept} kept)")

    @app.command()
    def branch(name: str = typer.Argument(None, help="Branch to create (list branches when omitted)."),
               rev: str = typer.Argument(None, help="Where it starts (default: the default branch)."),
               delete: bool = typer.Option(False, "--delete", "-d", help="Delete the branch."),
               force: bool = typer.Option(False, "--force", "-f", help="Move an existing branch."),
               restore: bool = typer.Option(False, "--restore", help="Undo the last move of branch NAME (a "
                                            "deletion, a forced move) from the reflog; NAME@{n} restores where "
                                            "it was n moves ago. Works until gc's grace period has passed."),
               repo: str = RepoOption, json: bool = JsonOption) -> None:
        """List, create, delete or restore branches."""
        r = open_repo(repo)
        if restore:
            if name is None:
                fail("branch --restore needs a branch name (NAME or NAME@{n})", 2)
            m = re.fullmatch(r"(?P<name>.+?)(@\{(?P<n>\d+)\})?", name)
            h = r.restore_branch(m["name"], None if m["n"] is None else int(m["n"]))
            if json:
                print_json({"branch": m["name"], "commit": h})
            else:
                console.print(f"Branch {m['name']} restored at {h[:12]}")
            return
        if name is None:
            branches = r.branches()
            if json:
                print_json({"default": r.default_branch, "branches": branches})
                return
            for b, h in branches.items():
                mark = "*" if b == r.default_branch else " "
                console.print(f"{mark} {b:30} {h[:12]}")
            return
        if delete:
            r.delete_branch(name)
            console.print(f"Deleted branch {name}")
        else:
            h = r.create_branch(name, rev, force=force)
            console.print(f"Branch {name} at {h[:12]}")

    @app.command()
    def tag(name: str = typer.Argument(None, help="Tag to create (list tags when omitted)."),
            rev: str = typer.Argument(None, help="Commit to tag (default: the default branch)."),
            delete: bool = typer.Option(False, "--delete", "-d", help="Delete the tag."),
            repo: str = RepoOption, json: bool = JsonOption) -> None:
        """List, create or delete tags."""
        r = open_repo(repo)
        if name is None:
            tags = r.tags()
            if json:
                print_json(tags)
                return
            for t, h in tags.items():
                console.print(f"{t:30} {h[:12]}")
            return
        if delete:
            r.delete_tag(name)
            console.print(f"Deleted tag {name}")
        else:
            console.print(f"Tag {name} at {r.create_tag(name, rev)[:12]}")

    @app.command()
    def merge(theirs: str = typer.Argument(..., help="Revision to merge in."),
              into: str = typer.Option(None, "--into", help="Branch to merge into (default: the default branch)."),
              policy: str = typer.Option("fail", help=f"Conflict policy: {' | '.join(MERGE_POLICIES)}."),
              message: str = typer.Option(None, "-m", "--message", help="Commit message (default: one "
                                          "naming the merge).", show_default=False), repo: str = RepoOption,
              json: bool = JsonOption) -> None:
        """Three-way merge of populations (fast-forward when possible)."""
        if policy not in MERGE_POLICIES:
            fail(f"unknown policy {policy!r}: use one of {', '.join(MERGE_POLICIES)}", 2)
        r = open_repo(repo)
        result = r.merge(theirs, into=into, policy=policy, message=message)  # type: ignore[arg-type]
        if json:
            print_json({"commit": result.commit, "kind": result.kind,
                        "report": result.report.to_json() if result.report else None})
            return
        console.print(f"{result.kind}: {(into or r.default_branch)} at {result.commit[:12]}")
        if result.report and result.report.conflicts:
            console.print(f"{len(result.report.conflicts)} conflict(s) resolved with '{policy}'")

    @app.command("verify")
    def verify_cmd(repo: str = RepoOption, json: bool = JsonOption,
                   repair_from: str = typer.Option(None, "--repair", metavar="REMOTE",
                                                   help="Replace every damaged object by a verified copy "
                                                        "from this remote (a name or URL)."),
                   no_raw: bool = typer.Option(False, "--no-raw", help="Do not hash raw data that items "
                                               "reference in place (imported without --copy); by default every "
                                               "such file is hashed whole and compared with its item key.")) -> None:
        """Recompute the hash of every reachable object and check record schemas; non-zero exit on
        problems (after --repair: on problems left)."""
        r = open_repo(repo)
        repaired = None
        with progress_bar("verify", not json) as progress:
            if repair_from is None:
                report = verify(r.storage, progress=progress, raw=not no_raw)
            else:
                from ..graph.maintenance import repair
                from ..graph.transfer import remote_url

                other = Repository.open(remote_url(r, repair_from))
                try:
                    repaired, report = repair(r.storage, other.storage, progress=progress, raw=not no_raw)
                finally:
                    other.close()
        if json:
            doc = {"ok": report.ok, "checked": report.checked, "problems": report.problems}
            if repaired is not None:
                doc["repaired"] = [f"{k} {h}" for k, h in repaired.repaired]
                doc["repair_failed"] = repaired.failed
            print_json(doc)
        else:
            if repaired is not None:
                for k, h in repaired.repaired:
                    console.print(f"[green]repaired {k} {h}[/]")
                for p in repaired.failed:
                    console.print(f"[red]could not repair {escape(p)}[/]")
            for p in report.problems:
                console.print(f"[red]{escape(p)}[/]")
            console.print(f"{report.checked} objects checked, {len(report.problems)} problem(s)")
        if not report.ok:
            raise typer.Exit(ExitCode.CORRUPT)

    @app.command("gc")
    def gc_cmd(grace: str = typer.Option("24h", help="Keep unreachable objects younger than this: a number "
                                         "and a unit s, m, h or d (30m, 24h, 7d), or 0."),
               dry_run: bool = typer.Option(False, "--dry-run", help="Only report what would be deleted."),
               repo: str = RepoOption, json: bool = JsonOption) -> None:
        """Delete objects no ref reaches and that are older than the grace period (commits a ref held
        within the grace period, as the reflog shows, are kept)."""
        r = open_repo(repo)
        report = gc(r.storage, grace_seconds=parse_duration(grace), dry_run=dry_run)
        if json:
            print_json(report)
            return
        verb = "would delete" if dry_run else "deleted"
        console.print(f"{report.reachable} reachable; {verb} {report.deleted_objects} object(s) and "
                      f"{report.deleted_arrays} array(s), {report.deleted_bytes} bytes; "
                      f"{report.kept_young} unreachable but younger than the grace period"
                      + (f" ({len(report.reflog_roots)} commit(s) kept for the reflog: mrepo branch --restore)"
                         if report.reflog_roots else ""))

    @app.command("reflog")
    def reflog_cmd(ref: str = typer.Argument(None, help="Branch, tag or refs/... key (default: every ref)."),
                   limit: int = typer.Option(None, "-n", "--limit", help="Show at most N entries."),
                   repo: str = RepoOption, json: bool = JsonOption) -> None:
        """Every recorded move of a ref, newest first: old -> new commit, who, when, operation."""
        r = open_repo(repo)
        entries = r.reflog(ref)[:limit]
        if ref and not entries:
            r.resolve(ref)  # a name that is no branch, tag or commit: one line, exit 7 (not an empty list)
        if json:
            print_json([e.to_json() for e in entries])
            return
        for n, e in enumerate(entries):
            label = f"{e.ref.removeprefix('refs/heads/')}@{{{n}}}" if ref else e.ref
            old = e.old[:12] if e.old else "(none)"
            new = e.new[:12] if e.new else "(deleted)"
            console.print(f"[yellow]{label:24}[/] {old:>12} -> {new:12} {e.when}  {escape(e.who)}: "
                          f"{escape(e.operation)}", highlight=False, soft_wrap=True)

    remote_app = typer.Typer(help="Named remotes (other repositories).", no_args_is_help=True)
    app.add_typer(remote_app, name="remote")

    @remote_app.command("add")
    def remote_add(name: str = typer.Argument(..., help="Remote name (e.g. origin)."),
                   url: str = typer.Argument(..., help="A folder (stored absolute), s3://bucket/prefix or "
                                             "http(s)://host/repo."),
                   repo: str = RepoOption) -> None:
        """Remember another repository under a name."""
        open_repo(repo).add_remote(name, url)

    @remote_app.command("list")
    def remote_list(repo: str = RepoOption, json: bool = JsonOption) -> None:
        """List remotes."""
        remotes = open_repo(repo).remotes()
        if json:
            print_json(remotes)
            return
        for name, url in remotes.items():
            console.print(f"{name:20} {url}")


def _ref_labels(r: Repository) -> dict[str, list[str]]:
    """Commit -> names of the branches and tags at it (``tag: v1`` for tags)."""
    labels: dict[str, list[str]] = {}
    for name, h in r.branches().items():
        labels.setdefault(h, []).append(name)
    for name, h in r.tags().items():
        labels.setdefault(h, []).append(f"tag: {name}")
    return labels


_UNITS = {"_A": " Å", "_px": " px"}


def _species_change_text(changes: dict[str, Any]) -> str:
    """``resolution 8.74 -> 6.23 Å, half1, half2, particles`` from a diff's species changes."""
    parts = []
    for key, value in changes.items():
        if value is True:
            parts.append(key)
            continue
        old, new = value
        unit = next((u for suffix, u in _UNITS.items() if key.endswith(suffix)), "")
        label = key.removesuffix("_A").removesuffix("_px")
        fmt = (lambda v: "n/a" if v is None else f"{v:.2f}") if label == "resolution" else (lambda v: f"{v}")
        parts.append(f"{label} {fmt(old)} -> {fmt(new)}{unit}")
    return ", ".join(parts) or "record changed"


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")


def parse_duration(text: str) -> float:
    """Seconds in ``90s``, ``30m``, ``2h``, ``7d`` (a unit is required: ``--grace 30`` is ambiguous); ``0``."""
    if text.strip() == "0":
        return 0.0
    m = _DURATION.match(text.strip().lower())
    if not m:
        raise InvalidInput(f"invalid duration {text!r}: a number and a unit s, m, h or d (e.g. 90s, 30m, 24h, 7d), "
                           "or 0")
    scale: dict[str, Any] = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
    return float(m.group(1)) * scale[m.group(2)]


__all__ = ["DEFAULT_GRACE_SECONDS", "parse_duration", "register"]
