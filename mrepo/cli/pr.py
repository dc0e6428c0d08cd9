"""``mrepo pr``: pull requests (open, list, show, check, merge, close) and ``mrepo species dedup``.

Thin layer over :mod:`mrepo.graph.pulls` and :mod:`mrepo.graph.dedup`. ``dedup_app`` holds the
``dedup`` command for the ``species`` group (mount with ``register_dedup(species_app)``).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from ..graph.collisions import DEFAULT_OVERLAP_FACTOR, CollisionReport
from ..graph.dedup import dedup_species
from ..graph.pulls import (
    PULL_POLICIES,
    PullRequest,
    check_pull,
    close_pull,
    get_pull,
    list_pulls,
    load_report,
    merge_pull,
    open_pull,
)
from ..store import InvalidInput
from .common import JsonOption, RepoOption, console, open_repo, print_json
from .exit_codes import ExitCode
from .pr_remote import RemotePulls, is_remote

app = typer.Typer(help="Pull requests: propose a branch, check collisions, merge.", no_args_is_help=True)
dedup_app = typer.Typer(help="Deduplicate a species.", no_args_is_help=True)

FactorOption = typer.Option(DEFAULT_OVERLAP_FACTOR, "--overlap-factor", "-F",
                            help="Particles collide when closer than F x (r_a + r_b).")
ReclassOption = typer.Option(None, "--reclass-tolerance", help="Å within which a shared particle id is the same "
                             "particle (default: the pair's collision threshold).", show_default=False)
DupOption = typer.Option(None, "--duplicate-tolerance", help="Å below which two picks of one species are duplicates "
                         "(default: F x diameter).", show_default=False)
MessageOption = typer.Option(None, "-m", "--message", help="Commit message (default: one naming the operation).",
                             show_default=False)
LimitOption = typer.Option(20, "--limit", "-n", help="Rows of colliding pairs to print (0: all).")


def _pull_line(pr: PullRequest) -> str:
    return escape(f"#{pr.number:<4} {pr.state:7} {pr.source} -> {pr.into}  {pr.title}  ({pr.author}, {pr.created})")


def _print_pull(pr: PullRequest, report: CollisionReport | None) -> None:
    console.print(f"[bold]#{pr.number} {escape(pr.title)}[/]  \\[{pr.state}]")
    console.print(f"from    {pr.source} at {pr.head[:12]}\ninto    {pr.into}\nauthor  {pr.author}\n"
                  f"created {pr.created}  updated {pr.updated}")
    if pr.description:
        console.print(f"\n    {escape(pr.description)}\n")
    if pr.merge_commit:
        console.print(f"merged  {pr.merge_commit[:12]}")
    if report is not None:
        console.print(f"check   {pr.check[:12] if pr.check else '-'}: {report.summary()}")


def _print_report(report: CollisionReport, limit: int) -> None:
    """Counts, per species pair, per item, colliding pairs and the histogram as rich tables."""
    console.print(f"incoming: {', '.join(report.incoming) or '-'}   existing: {', '.join(report.existing) or '-'}   "
                  f"overlap factor {report.overlap_factor:g}")
    console.print(("[green]clean[/]: " if report.clean else "[red]blocking[/]: ") + report.summary())
    for c in report.conflicts:
        console.print(f"[red]conflict[/] {c['kind']} {c.get('source') or ''} {c['key'][:16]}")
    pairs = report.per_pair()
    if pairs:
        t = Table("incoming", "existing", "pairs", title="per species pair")
        for key, n in pairs.items():
            a, b = key.split("|")
            t.add_row(a, b + (" (duplicates)" if a == b else ""), str(n))
        console.print(t)
        t = Table("item", "collisions", "duplicates", title="per item")
        for item, c in report.per_item().items():
            t.add_row(item[:16], str(c["collisions"]), str(c["duplicates"]))
        console.print(t)
    rows: list[tuple[str, ...]] = [("collision", c.item[:16], f"{c.incoming}:{c.incoming_id}",
                                    f"{c.existing}:{c.existing_id}", f"{c.distance:.1f}", f"{c.threshold:.1f}")
                                   for c in report.collisions]
    rows += [("duplicate", d.item[:16], f"{d.species}:{d.id_a}", f"{d.species}:{d.id_b}", f"{d.distance:.1f}",
              f"{d.threshold:.1f}") for d in report.duplicates]
    rows += [("id clash", k.incoming_item[:16], f"{k.incoming}:{k.id}", f"{k.existing}:{k.id}",
              "-" if k.distance is None else f"{k.distance:.1f}", "") for k in report.id_clashes]
    rows += [("shared", k.item[:16], f"{k.incoming}:{k.id}", f"{k.existing}:{k.id}", f"{k.distance:.1f}", "")
             for k in report.shared]  # one pick in two species after the merge
    if rows:
        t = Table("kind", "item", "particle", "other", "distance (Å)", "threshold (Å)", title="pairs")
        for row in rows[: limit or None]:
            t.add_row(*row)
        console.print(t)
        if limit and len(rows) > limit:
            console.print(f"... {len(rows) - limit} more (use --limit 0 or --json)")
        h = report.histogram()
        t = Table("distance (Å)", "collisions", "duplicates", title="distance histogram")
        for lo, hi, c, d in zip(h["edges"][:-1], h["edges"][1:], h["collisions"], h["duplicates"]):
            t.add_row(f"{lo:.1f}-{hi:.1f}", str(c), str(d))
        console.print(t)
    if report.reclassifications:
        moves: dict[str, int] = {}
        for r in report.reclassifications:
            moves[f"{r.source} -> {r.target}"] = moves.get(f"{r.source} -> {r.target}", 0) + 1
        console.print("reclassified (not collisions): " + ", ".join(f"{k}: {n}" for k, n in moves.items()))


@app.command("open")
def open_cmd(source: str = typer.Option(..., "--from", help="Branch, remote/branch or URL#branch to propose."),
             into: str = typer.Option(None, "--into", help="Target branch (default: the default branch)."),
             title: str = typer.Option(..., "--title", "-t", help="One-line title."),
             description: str = typer.Option("", "--description", "-d", help="Longer description."),
             repo: str = RepoOption, json: bool = JsonOption) -> None:
    """Open a pull request."""
    r = open_repo(repo)
    if is_remote(r.url):  # the server numbers the pull request and records the token as its author
        pr = RemotePulls(r.url).open(source, into or r.default_branch, title, description)
    else:
        pr = open_pull(r, source, into or r.default_branch, title, description=description)
    if json:
        print_json(pr.to_json())
    else:
        console.print(f"Opened pull request #{pr.number}: {pr.source} -> {pr.into} at {pr.head[:12]}")


@app.command("list")
def list_cmd(state: str = typer.Option("open", help="open | merged | closed | all"),
             remote: str = typer.Option(None, "--remote", help="List the pull requests fetched from this remote.",
                                        show_default=False),
             repo: str = RepoOption, json: bool = JsonOption) -> None:
    """List pull requests."""
    if state not in ("open", "merged", "closed", "all"):
        raise InvalidInput(f"unknown state {state!r}: use open, merged, closed or all")
    pulls = list_pulls(open_repo(repo), None if state == "all" else state, remote=remote)
    if json:
        print_json([p.to_json() for p in pulls])
        return
    for p in pulls:
        console.print(_pull_line(p))
    if not pulls:
        console.print(f"no {'' if state == 'all' else state + ' '}pull requests")


@app.command("show")
def show_cmd(number: int = typer.Argument(..., help="Pull request number."),
             repo: str = RepoOption, json: bool = JsonOption) -> None:
    """Show a pull request and a summary of its latest check."""
    r = open_repo(repo)
    h, pr = get_pull(r, number)
    report = load_report(r, pr.check) if pr.check else None
    if json:
        print_json({**pr.to_json(), "record": h,
                    "report": None if report is None else {"hash": pr.check, "clean": report.clean,
                                                           "counts": report.counts()}})
        return
    _print_pull(pr, report)


@app.command("check")
def check_cmd(number: int = typer.Argument(..., help="Pull request number."),
              overlap_factor: float = FactorOption, reclass_tolerance: float = ReclassOption,
              duplicate_tolerance: float = DupOption, limit: int = LimitOption,
              repo: str = RepoOption, json: bool = JsonOption) -> None:
    """Check merge conflicts, item references, collisions, duplicates and reclassifications; store the report.

    Exits 0 when the check is clean and 9 (CHECK_NOT_CLEAN) when it has findings."""
    r = open_repo(repo)
    check = RemotePulls(r.url).check if is_remote(r.url) else partial(check_pull, r)
    c = check(number, overlap_factor=overlap_factor, reclass_tolerance=reclass_tolerance,
              duplicate_tolerance=duplicate_tolerance)
    if json:
        print_json({"pr": number, "report_hash": c.report_hash, "clean": c.report.clean, "target": c.target,
                    "head": c.head, "base": c.base, **c.report.to_json()})
    else:
        console.print(f"Pull request #{number}: report {c.report_hash[:12]} (target {c.target[:12]}, "
                      f"head {c.head[:12]})")
        _print_report(c.report, limit)
    if not c.report.clean:
        raise typer.Exit(ExitCode.CHECK_NOT_CLEAN)


@app.command("merge")
def merge_cmd(number: int = typer.Argument(..., help="Pull request number."),
              policy: str = typer.Option("fail", help=f"Collision policy: {' | '.join(PULL_POLICIES)}."),
              overlap_factor: float = FactorOption, reclass_tolerance: float = ReclassOption,
              duplicate_tolerance: float = DupOption, message: str = MessageOption,
              repo: str = RepoOption, json: bool = JsonOption) -> None:
    """Merge a pull request (merge commit recording policy and report; 'fail' refuses on findings)."""
    r = open_repo(repo)
    merge = RemotePulls(r.url).merge if is_remote(r.url) else partial(merge_pull, r)  # server: maintainers
    m = merge(number, policy=policy, overlap_factor=overlap_factor, reclass_tolerance=reclass_tolerance,
              duplicate_tolerance=duplicate_tolerance, message=message)
    if json:
        print_json({"pr": number, "kind": m.kind, "commit": m.commit, "report_hash": m.report_hash,
                    "dropped": m.dropped or {}})
        return
    dropped = ", ".join(f"{n} from {s}" for s, n in (m.dropped or {}).items())
    console.print(f"{m.kind}: pull request #{number} into {m.pull.into} at {m.commit[:12]}"
                  + (f"; dropped {dropped}" if dropped else ""))


@app.command("close")
def close_cmd(number: int = typer.Argument(..., help="Pull request number."), repo: str = RepoOption) -> None:
    """Close a pull request without merging."""
    r = open_repo(repo)
    pr = RemotePulls(r.url).close(number) if is_remote(r.url) else close_pull(r, number)
    console.print(f"Closed pull request #{pr.number}")


@dedup_app.command("dedup")
def dedup_cmd(name: str = typer.Argument(..., help="Species to deduplicate."),
              tolerance: float = typer.Option(None, "--tolerance", help="Å below which two picks are one particle "
                                              "(default: 0.5 x diameter).", show_default=False),
              branch: str = typer.Option(None, "--branch", "-b", help="Branch (default: the default branch)."),
              keep: str = typer.Option("first", help="Which pick to keep: first | last | max:<column> | "
                                       "min:<column>."),
              message: str = MessageOption,
              repo: str = RepoOption, json: bool = JsonOption) -> None:
    """Remove duplicate picks of one species and commit the new species version."""
    res = dedup_species(open_repo(repo), name, branch=branch, tolerance=tolerance, keep=keep, message=message)
    if json:
        out: dict[str, Any] = {"species": res.species, "tolerance": res.tolerance, "removed": res.removed,
                               "kept": res.kept, "species_hash": res.species_hash, "commit": res.commit}
        print_json(out)
    elif res.commit is None:
        console.print(f"{name}: no duplicates within {res.tolerance:g} Å; nothing to commit")
    else:
        console.print(f"{name}: removed {len(res.removed)} duplicate(s) within {res.tolerance:g} Å, "
                      f"{res.kept} kept; commit {res.commit[:12]}")


def register_dedup(species_app: typer.Typer) -> None:
    """Add ``dedup`` to the ``species`` command group."""
    species_app.command("dedup")(dedup_cmd)


__all__ = ["app", "dedup_app", "register_dedup"]
