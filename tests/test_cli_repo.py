"""The repository commands of the ``mrepo`` CLI: every command, ``--json`` parsed back, and
bad input giving a one-line error, a non-zero exit and nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mrepo.cli import app
from mrepo.graph import Population, Repository
from tests.factories import make_population, make_species

runner = CliRunner()


def mrepo(*args: str, code: int = 0):
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, (args, result.exit_code, result.output, result.stderr)
    return result


def as_json(*args: str):
    return json.loads(mrepo(*args, "--json").stdout)


@pytest.fixture
def populated(tmp_path: Path):
    """A local repository with two commits on main."""
    url = str(tmp_path / "repo")
    mrepo("init", url)
    r = Repository.open(url)
    pop = make_population(r, n_items=2)
    first = r.commit(pop, message="first", time="2024-03-01T00:00:01Z")
    items = [r.item(h) for h in r.source(pop.sources["grid1"]).items.values()]
    pop2 = Population(pop.name, pop.sources, {**pop.species, "holo": make_species(r, "holo", items, n=4, seed=3)
                                              .save(r.objects)})
    second = r.commit(pop2, message="second", time="2024-03-01T00:00:02Z")
    return url, first, second


def test_init_log_show_diff(populated) -> None:
    url, first, second = populated
    log = as_json("log", "--repo", url)
    assert [e["commit"] for e in log] == [second, first] and log[0]["message"] == "second"
    assert [e["commit"] for e in as_json("log", "-n", "1", "--repo", url)] == [second]
    assert "commit " + second in mrepo("log", "--repo", url).stdout
    show = as_json("show", first, "--repo", url)
    assert show["commit"] == first and show["species"]["apo"]["particles"] == 10
    assert show["sources"]["grid1"]["items"] == 2
    assert "holo" in mrepo("show", "--repo", url).stdout
    d = as_json("diff", first, second, "--repo", url)
    assert d["species_added"] == ["holo"] and d["species_removed"] == []
    assert mrepo("diff", second, second, "--repo", url).stdout.strip() == "no differences"


def test_branch_tag_merge(populated) -> None:
    url, first, second = populated
    mrepo("branch", "side", first, "--repo", url)
    assert as_json("branch", "--repo", url) == {"default": "main", "branches": {"main": second, "side": first}}
    mrepo("branch", "side", second, "--repo", url, code=2)  # exists
    mrepo("branch", "side", second, "--force", "--repo", url)
    mrepo("branch", "side", "--delete", "--repo", url)
    mrepo("tag", "v1", first, "--repo", url)
    assert as_json("tag", "--repo", url) == {"v1": first}
    mrepo("tag", "v1", "--delete", "--repo", url)
    assert as_json("tag", "--repo", url) == {}

    mrepo("branch", "old", first, "--repo", url)
    assert as_json("merge", "main", "--into", "old", "--repo", url)["kind"] == "fast-forward"
    assert as_json("merge", "old", "--repo", url)["kind"] == "up-to-date"
    mrepo("merge", "old", "--policy", "sideways", "--repo", url, code=2)


def test_merge_conflict_exit_code_and_policy(populated) -> None:
    url, first, second = populated
    r = Repository.open(url)
    mrepo("branch", "side", second, "--repo", url)
    pop = r.population()
    items = [r.item(h) for h in r.source(pop.sources["grid1"]).items.values()]
    for branch, seed in (("main", 11), ("side", 12)):
        changed = {**pop.species, "apo": make_species(r, "apo", items, seed=seed).save(r.objects)}
        r.commit(Population(pop.name, pop.sources, changed), message=branch, branch=branch)
    head = r.head()
    failed = mrepo("merge", "side", "--repo", url, code=4)
    assert "merge conflict" in failed.stderr and len(failed.stderr.strip().splitlines()) == 1
    assert r.head() == head
    out = as_json("merge", "side", "--policy", "theirs", "--repo", url)
    assert out["kind"] == "merge" and out["report"]["conflicts"][0]["key"] == "apo"
    assert r.population().species["apo"] == r.population("side").species["apo"]


def test_verify_and_gc(populated) -> None:
    url, first, second = populated
    assert as_json("verify", "--repo", url) == {"ok": True, "checked": as_json("verify", "--repo", url)["checked"],
                                                "problems": []}
    Repository.open(url).objects.put_record("note", {"orphan": True})
    report = as_json("gc", "--grace", "24h", "--repo", url)
    assert report["deleted_objects"] == 0 and report["kept_young"] == 1
    assert as_json("gc", "--grace", "0", "--dry-run", "--repo", url)["deleted_objects"] == 1
    assert as_json("gc", "--grace", "0", "--repo", url)["deleted_objects"] == 1
    assert as_json("gc", "--grace", "0", "--repo", url)["deleted_objects"] == 0
    mrepo("gc", "--grace", "soon", "--repo", url, code=2)
    assert "unit" in one_line_error(mrepo("gc", "--grace", "30", "--repo", url, code=2))


def test_remote_clone_fetch_push_pull(populated, tmp_path: Path) -> None:
    url, first, second = populated
    copy = str(tmp_path / "copy")
    stats = as_json("clone", url, copy)
    assert stats["arrays"] > 0 and stats["refs"] == {"refs/heads/main": second}
    assert as_json("remote", "list", "--repo", copy) == {"origin": url}
    mrepo("remote", "add", "upstream", url, "--repo", copy)
    assert as_json("remote", "list", "--repo", copy) == {"origin": url, "upstream": url}

    r = Repository.open(copy)
    third = r.commit(Population("p3", r.population().sources), message="third")
    pushed = as_json("push", "origin", "--repo", copy)
    assert pushed["refs"] == {"refs/heads/main": third} and pushed["records"] >= 2
    again = as_json("push", "origin", "--repo", copy)
    assert again["bytes"] == 0 and again["array_bytes"] == 0
    assert as_json("fetch", "upstream", "--repo", copy)["bytes"] == 0

    Repository.open(url).commit(Population("p4"), message="fourth")
    pulled = as_json("pull", "origin", "--repo", copy)
    assert pulled["kind"] == "fast-forward" and pulled["commit"] == Repository.open(url).head()
    Repository.open(copy).commit(Population("p5"), message="fifth")
    Repository.open(url).commit(Population("p6"), message="sixth")
    rejected = mrepo("push", "origin", "--repo", copy, code=3)
    assert "push rejected" in rejected.stderr
    mrepo("push", "origin", "--force", "--repo", copy)
    assert Repository.open(url).head() == Repository.open(copy).head()


# ----------------------------------------------------------------------------- bad input


def listing(root: str) -> dict[str, bytes]:
    p = Path(root)
    return {str(f.relative_to(p)): f.read_bytes() for f in p.rglob("*") if f.is_file()} if p.exists() else {}


def one_line_error(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize("args,code,message", [
    (["log", "--repo", "ftp://host/repo"], 2, "unknown URL scheme"),
    (["init", "gopher://x"], 2, "unknown URL scheme"),
    (["show", "nosuchbranch"], 7, "unknown revision"),
    (["show", "refs/heads/nope"], 7, "does not exist"),
    (["branch", "../x"], 2, "invalid branch name"),
    (["branch", ""], 2, "invalid branch name"),
    (["branch", "a\x01b"], 2, "invalid branch name"),
    (["branch", "with space"], 2, "invalid branch name"),
    (["tag", "bad..name"], 2, "invalid tag name"),
    (["tag", "x.lock"], 2, "invalid tag name"),
    (["remote", "add", "bad name", "/tmp/x"], 2, "invalid remote name"),
    (["merge", "nosuch"], 7, "unknown revision"),
    (["gc", "--grace", "-1"], 2, "invalid duration"),
    (["push", "nowhere"], 2, "unknown remote"),
])
def test_bad_input_is_one_line_error_and_writes_nothing(populated, args, code: int, message: str) -> None:
    url, _, _ = populated
    before = listing(url)
    if "--repo" not in args and args[0] != "init":
        args = [*args, "--repo", url]
    result = mrepo(*args, code=code)
    assert message in one_line_error(result)
    assert listing(url) == before


def test_missing_repository(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    for command in (["log"], ["show"], ["verify"], ["branch"], ["gc"]):
        result = mrepo(*command, "--repo", str(missing), code=7)
        assert "no mrepo repository" in one_line_error(result)
    assert not missing.exists()
    mrepo("clone", str(missing), str(tmp_path / "dst"), code=7)


def test_corrupt_object_is_reported(populated) -> None:
    url, first, second = populated
    path = Path(url) / "objects" / second[:2] / second[2:]
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x20
    path.write_bytes(bytes(data))
    before = listing(url)
    assert "is corrupt" in one_line_error(mrepo("show", "--repo", url, code=8))
    report = json.loads(mrepo("verify", "--json", "--repo", url, code=8).stdout)
    assert not report["ok"] and any(second in p for p in report["problems"])
    assert listing(url) == before


def test_init_refuses_existing_repository(populated) -> None:
    url, _, _ = populated
    before = listing(url)
    assert "already exists" in one_line_error(mrepo("init", url, code=2))
    assert listing(url) == before


def test_nan_in_records_and_arrays_is_refused_and_writes_nothing(populated) -> None:
    import numpy as np

    from mrepo.store import InvalidInput

    url, _, _ = populated
    r = Repository.open(url)
    before = listing(url)
    with pytest.raises(InvalidInput, match="NaN"):
        r.commit(Population("p", metadata={"resolution": float("nan")}), message="nan")
    with pytest.raises(InvalidInput, match="NaN"):
        r.objects.put_record("note", {"x": [1.0, float("inf")]})
    with pytest.raises(InvalidInput, match="NaN or Inf"):
        r.objects.put_array(np.array([0.0, np.nan]))
    with pytest.raises(InvalidInput, match="invalid branch name"):
        r.commit(Population("p"), message="bad", branch="../escape")
    assert listing(url) == before
