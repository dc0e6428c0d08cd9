"""``mrepo pr ...`` and ``mrepo species dedup`` through the typer command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from mrepo.cli import app
from mrepo.cli.common import MrepoGroup
from mrepo.cli.pr import dedup_app, register_dedup
from mrepo.graph import ParticleTable, Repository, Species
from mrepo.graph.dedup import dedup_table
from tests.graph.test_pulls import T2, make_items, make_species, population, setup

runner = CliRunner()


def run(url: str, *args: str, code: int = 0, cli: typer.Typer = app) -> str:
    res = runner.invoke(cli, [*args, "--repo", url])
    assert res.exit_code == code, res.output
    return res.output


@pytest.fixture
def url(tmp_path) -> str:
    u = str(tmp_path / "repo")
    setup(Repository.init(u))
    return u


def test_pr_lifecycle_on_the_command_line(url: str) -> None:
    out = run(url, "pr", "open", "--from", "feature", "--into", "main", "--title", "Add B")
    assert "Opened pull request #1" in out
    assert "#1" in run(url, "pr", "list") and "Add B" in run(url, "pr", "list")
    shown = json.loads(run(url, "pr", "show", "1", "--json"))
    assert shown["state"] == "open" and shown["report"] is None and shown["head"] == Repository.open(url).head("feature")
    checked = json.loads(run(url, "pr", "check", "1", "--json", code=9))  # not clean: exit 9
    assert checked["counts"] == {"conflicts": 0, "collisions": 2, "duplicates": 1, "shared": 1,
                                 "reclassifications": 0, "id_clashes": 0}
    assert checked["per_pair"] == {"B|A": 2, "B|B": 1} and not checked["clean"]
    assert [(c["incoming_id"], c["existing_id"]) for c in checked["collisions"]] == [(101, 1), (104, 2)]
    human = run(url, "pr", "check", "1", "--overlap-factor", "0.5", code=9)
    assert "per species pair" in human and "distance histogram" in human and "B:101" in human
    assert "shared" in human and "B:5" in human  # id 5 would be in A and in B
    assert json.loads(run(url, "pr", "show", "1", "--json"))["report"]["hash"] == checked["report_hash"]

    refused = run(url, "pr", "merge", "1", "--policy", "fail", code=4)
    assert "merge refused" in refused and refused.strip().count("\n") == 0
    assert "unknown pull request policy" in run(url, "pr", "merge", "1", "--policy", "nope", code=2)
    merged = json.loads(run(url, "pr", "merge", "1", "--policy", "drop-incoming", "-F", "0.5", "--json"))
    assert merged["kind"] == "merge" and merged["dropped"] == {"B": 4}
    r = Repository.open(url)
    assert r.head("main") == merged["commit"]
    assert r.get_commit(merged["commit"]).operation["report"] == {"@record": merged["report_hash"]}
    assert json.loads(run(url, "pr", "show", "1", "--json"))["state"] == "merged"
    assert "already-merged" in run(url, "pr", "merge", "1", "--policy", "drop-incoming")
    assert "already merged" in run(url, "pr", "close", "1", code=2)
    assert run(url, "pr", "list").strip() == "no open pull requests"
    assert len(json.loads(run(url, "pr", "list", "--state", "all", "--json"))) == 1


def test_pr_errors_are_one_line(url: str) -> None:
    assert "no pull request #3" in run(url, "pr", "show", "3", code=7)
    out = run(url, "pr", "open", "--from", "nope", "--into", "main", "--title", "x", code=7)
    assert "unknown pull request source 'nope'" in out and out.strip().count("\n") == 0
    run(url, "pr", "open", "--from", "feature", "--title", "x")
    assert "Closed pull request #1" in run(url, "pr", "close", "1")
    assert "is closed" in run(url, "pr", "merge", "1", code=2)


def species_cli() -> typer.Typer:
    """A ``species`` group as the CLI will mount it (``mrepo species dedup``)."""
    top = typer.Typer(cls=MrepoGroup)
    species = typer.Typer()
    register_dedup(species)
    top.add_typer(species, name="species")

    @top.callback()
    def _() -> None:
        pass

    return top


@pytest.fixture
def dup_url(tmp_path) -> str:
    u = str(tmp_path / "dups")
    repo = Repository.init(u)
    ts, fr = make_items(repo)
    rows = [(1, ts, (0, 0, 0)), (2, ts, (40, 0, 0)), (3, ts, (80, 0, 0)), (4, ts, (500, 0, 0)),
            (5, fr, (0, 0, 0)), (6, fr, (0, 10, 300))]  # chain 1-2-3 (1, 3 apart 80 Å); 5-6 2D distance 10 Å
    repo.commit(population(repo, {"S": make_species(repo, "S", 100.0, rows)}), message="S", author="t", time=T2)
    return u


def test_species_dedup_command(dup_url: str) -> None:
    cli = species_cli()
    res = json.loads(run(dup_url, "species", "dedup", "S", "--json", cli=cli))
    assert res["removed"] == [2, 6] and res["kept"] == 4 and res["tolerance"] == 50.0
    r = Repository.open(dup_url)
    assert r.head("main") == res["commit"]
    c = r.get_commit(res["commit"])
    assert c.operation == {"name": "species-dedup", "species": "S", "tolerance": 50.0, "keep": "first", "removed": 2}
    sp = r.species(r.population().species["S"])
    assert sorted(r.particles(sp.particles).ids.tolist()) == [1, 3, 4, 5] and sp.metadata["needs_refinement"]
    assert "no duplicates" in run(dup_url, "species", "dedup", "S", cli=cli)  # idempotent: nothing committed
    assert r.head("main") == res["commit"]
    assert "no species 'T'" in run(dup_url, "species", "dedup", "T", code=2, cli=cli)
    assert "unknown keep rule" in run(dup_url, "species", "dedup", "S", "--keep", "best", code=2, cli=cli)
    assert "dedup" in runner.invoke(dedup_app, ["--help"]).output


def test_dedup_keep_rules_and_tolerance() -> None:
    h = "0" * 64
    sp = Species("S", 100.0, "C1", 1.0, 16, h, h, h, h)
    item = "a" * 64
    c = np.array([[[0.0, 0, 0]], [[40.0, 0, 0]], [[80.0, 0, 0]]])
    t = ParticleTable.build([1, 2, 3], [item] * 3, c, np.zeros_like(c), [1, 1, 1],
                            {"score": np.array([0.1, 0.9, 0.2])})
    kinds = {item: "tilts"}
    assert dedup_table("S", sp, t, kinds)[0].tolist() == [2]
    assert dedup_table("S", sp, t, kinds, keep="last")[0].tolist() == [2]
    assert dedup_table("S", sp, t, kinds, keep="max:score")[0].tolist() == [1, 3]
    assert dedup_table("S", sp, t, kinds, keep="min:score")[0].tolist() == [2]
    assert dedup_table("S", sp, t, kinds, tolerance=85.0)[0].tolist() == [2, 3]
    assert dedup_table("S", sp, t, kinds, tolerance=30.0)[0].tolist() == []
    with pytest.raises(ValueError, match="no particle column 'x'"):
        dedup_table("S", sp, t, kinds, keep="max:x")
    with pytest.raises(ValueError, match="positive number"):
        dedup_table("S", sp, t, kinds, tolerance=0.0)
