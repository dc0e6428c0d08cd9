"""Reflog: every ref move is recorded (old, new, who, when, operation) on every backend and
through the server; a deleted branch or a forced move followed by ``gc`` can be restored
within the grace period; ``log --graph`` draws merges as lanes."""

from __future__ import annotations

import time

import pytest
from typer.testing import CliRunner

from mrepo.cli import app
from mrepo.graph import Repository, gc
from mrepo.store import InvalidInput, RefNotFound
from tests.factories import make_population


def _history(repo: Repository) -> dict[str, str]:
    """base -> (main work, side work) -> merge on main; returns the commit hashes."""
    base = repo.commit(make_population(repo), message="base", time="2026-01-01T00:00:00Z")
    repo.create_branch("side")
    side = repo.commit(make_population(repo, seed=5), message="side work", branch="side", time="2026-01-01T00:00:01Z")
    work = repo.commit(make_population(repo, seed=9), message="main work", time="2026-01-01T00:00:02Z")
    merged = repo.merge("side", policy="theirs", time="2026-01-01T00:00:03Z").commit
    return {"base": base, "side": side, "work": work, "merge": merged}


@pytest.mark.parametrize("kind", ["local", "memory", "s3"])
def test_every_move_is_logged_and_a_deleted_branch_survives_gc(kind: str, make_url, monkeypatch) -> None:
    monkeypatch.setenv("MREPO_AUTHOR", "alice")
    repo = Repository.init(make_url(kind))
    c = _history(repo)
    main_log = repo.reflog("main")
    assert [(e.old, e.new) for e in main_log] == [(c["work"], c["merge"]), (c["base"], c["work"]), (None, c["base"])]
    assert {e.who for e in main_log} == {"alice"}
    assert main_log[0].operation == "commit (merge)"
    assert main_log[0].when > main_log[1].when > main_log[2].when

    repo.delete_branch("side")
    assert repo.reflog("side")[0].new is None and repo.reflog("side")[0].operation == "branch --delete"
    # Make "side work" unreachable from every ref: force main back to base and delete its tracking.
    repo.create_branch("main2", c["base"])
    repo.create_branch("main", c["base"], force=True)
    # gc with a grace period longer than the reflog's age keeps everything a recent entry names ...
    report = gc(repo.storage, grace_seconds=3600, now=time.time() + 60)
    assert c["side"] in report.reflog_roots and c["merge"] in report.reflog_roots
    assert repo.restore_branch("side") == c["side"]
    assert repo.restore_branch("main") == c["merge"]  # undo the forced move
    assert repo.resolve("main@{1}") == c["base"]
    assert repo.population("side").species  # the data is all there
    # ... while after the grace period the reflog no longer protects it.
    repo.delete_branch("side")
    repo.create_branch("main", c["base"], force=True)
    gc(repo.storage, grace_seconds=60, now=time.time() + 3600)
    with pytest.raises(RefNotFound, match="gc removed"):
        repo.restore_branch("side")
    repo.close()


def test_restore_refuses_what_it_cannot_do(make_url) -> None:
    repo = Repository.init(make_url("local"))
    repo.commit(make_population(repo), message="base")
    repo.create_branch("b")
    with pytest.raises(InvalidInput, match="created it"):
        repo.restore_branch("b")
    with pytest.raises(RefNotFound, match="no reflog"):
        repo.restore_branch("never")
    with pytest.raises(RefNotFound, match="only 1 entry"):
        repo.resolve("b@{3}")


def test_cli_reflog_restore_and_log_graph(make_url, monkeypatch) -> None:
    url = make_url("local")
    monkeypatch.setenv("MREPO_AUTHOR", "bob")
    repo = Repository.init(url)
    c = _history(repo)
    runner = CliRunner()
    out = runner.invoke(app, ["log", "--graph", "--repo", url])
    assert out.exit_code == 0, out.output
    lines = [ln.rstrip() for ln in out.output.splitlines()]
    # git's drawing of one merge: the merge, a lane opening, two parallel commits, the lanes meeting
    assert [ln[:3] for ln in lines] == ["*  ", "|\\", "* |", "| *", "|/", "*  "]
    assert c["merge"][:12] in lines[0] and "(main)" in lines[0]
    assert c["work"][:12] in lines[2] and c["side"][:12] in lines[3] and "(side)" in lines[3]
    assert c["base"][:12] in lines[5]

    assert runner.invoke(app, ["branch", "-d", "side", "--repo", url]).exit_code == 0
    out = runner.invoke(app, ["reflog", "side", "--json", "--repo", url])
    doc = __import__("json").loads(out.output)
    assert doc[0]["new"] is None and doc[0]["old"] == c["side"] and doc[0]["who"] == "bob"
    out = runner.invoke(app, ["branch", "--restore", "side@{1}", "--repo", url])
    assert out.exit_code == 0 and c["side"][:12] in out.output
    assert Repository.open(url).head("side") == c["side"]
    out = runner.invoke(app, ["reflog", "--repo", url])
    assert "branch --restore side@{1}" in out.output
    # a name that was never a ref is an error (exit 7), not an empty reflog
    out = runner.invoke(app, ["reflog", "nope", "--repo", url])
    assert out.exit_code == 7 and "unknown revision 'nope'" in out.stderr and not out.stdout
    out = runner.invoke(app, ["branch", "main", "--repo", url])
    assert out.exit_code == 2 and "--force" in out.stderr


def test_entries_are_selected_by_the_time_in_their_names(make_url) -> None:
    from datetime import UTC, datetime, timedelta

    from mrepo.store import open_backend, reflog

    backend = open_backend(make_url("local"))
    h = "ab" * 32
    now = datetime.now(UTC)
    old = reflog.append(backend, "refs/heads/x", None, h, operation="branch", who="a", now=now - timedelta(days=3))
    new = reflog.append(backend, "refs/heads/x", h, None, operation="branch --delete", who="b", now=now)
    assert [e.key for e in reflog.read(backend, "refs/heads/x")] == [new.key, old.key]  # newest first
    recent = reflog.read_all(backend, since=(now - timedelta(days=1)).timestamp())
    assert [(e.who, e.old, e.new) for e in recent] == [("b", h, None)]
    assert old.timestamp == pytest.approx((now - timedelta(days=3)).timestamp(), abs=1e-3)


def test_reflog_names_resolve_to_tags_and_remote_tracking_refs(tmp_path) -> None:
    from mrepo.graph import clone, fetch

    src = Repository.init(str(tmp_path / "src"))
    head = src.commit(make_population(src), message="x")
    src.create_tag("v1")
    dst, _ = clone(str(tmp_path / "src"), str(tmp_path / "dst"))
    assert [e.operation for e in dst.reflog("origin/main")][0].startswith("clone from")
    assert dst.reflog("v1")[0].new == head and dst.reflog("v1")[0].ref == "refs/tags/v1"
    src.commit(make_population(src, seed=4), message="y")
    fetch(dst, "origin")
    assert dst.reflog("origin/main")[0].operation == "fetch origin"
    assert dst.resolve("origin/main@{1}") == head


def test_log_graph_all_shows_branches_that_are_not_merged(make_url) -> None:
    url = make_url("local")
    repo = Repository.init(url)
    base = repo.commit(make_population(repo), message="base", time="2026-01-01T00:00:00Z")
    repo.create_branch("side")
    side = repo.commit(make_population(repo, seed=5), message="side work", branch="side", time="2026-01-01T00:00:01Z")
    work = repo.commit(make_population(repo, seed=9), message="main work", time="2026-01-01T00:00:02Z")
    out = CliRunner().invoke(app, ["log", "--graph", "--all", "--repo", url])
    assert out.exit_code == 0, out.output
    lines = [ln.rstrip() for ln in out.output.splitlines()]
    assert [ln[:3] for ln in lines] == ["*  ", "| *", "|/", "*  "]
    assert work[:12] in lines[0] and side[:12] in lines[1] and base[:12] in lines[3]
    only_main = CliRunner().invoke(app, ["log", "--graph", "--repo", url]).output
    assert side[:12] not in only_main
