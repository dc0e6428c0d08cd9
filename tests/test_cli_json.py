"""``--json`` of the ``mrepo`` command follows one convention (docs/json.md): units in key names, names
not keys, ``null`` for missing values. Checked on a population built by the simulator and a real
refinement iteration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mrepo.cli import app
from mrepo.graph import Repository
from tests.workers.simdata import build_repo, frames_sim

torch.set_num_threads(1)
runner = CliRunner()
#: Quantities with a unit that must never appear without their unit suffix.
BARE_UNIT_KEYS = {"resolution", "pixel_size", "diameter", "box", "defocus", "voltage", "dose"}


def as_json(*args: str):
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, (args, result.output)
    return json.loads(result.stdout)


def keys(doc) -> set[str]:
    """Every key anywhere in a JSON document."""
    if isinstance(doc, dict):
        return set(doc) | set().union(*(keys(v) for v in doc.values()))
    if isinstance(doc, list):
        return set().union(*(keys(v) for v in doc)) if doc else set()
    return set()


@pytest.fixture(scope="module")
def refined(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    """A one-item population and one refinement iteration made with ``refine --json``."""
    url = str(tmp_path_factory.mktemp("json") / "repo")
    build_repo(frames_sim(n_particles=6, n_frames=3), url=url, resolution=12.0)
    out = as_json("refine", "--repo", url, "--iterations", "1", "--no-refine-shifts", "--refine-defocus")
    return url, out


def test_refine_json_reports_each_iteration(refined) -> None:
    url, out = refined
    r = Repository.open(url)
    assert out["branch"] == "main" and out["commits"] == [r.head("main")]
    (it,) = out["iterations"]
    assert it["iteration"] == 1 and it["commit"] == r.head("main")
    species = sorted(r.population("main").species)
    assert sorted(it["resolution_A"]) == species and sorted(it["resolution_before_A"]) == species
    for name in species:
        assert it["resolution_A"][name] == r.species(r.population("main").species[name]).resolution
    assert it["stats"]["items"] == 1 and it["stats"]["particles"] > 0
    movement = it["stats"].pop("movement", {})  # the driver's schema: {parameter: {median, p95, max, n, unit}}
    assert all(m["unit"] for m in movement.values())
    assert not keys(out) & BARE_UNIT_KEYS


def test_species_show_and_list_carry_units(refined) -> None:
    url, _ = refined
    r = Repository.open(url)
    name = sorted(r.population("main").species)[0]
    sp = r.species(r.population("main").species[name])
    shown = as_json("species", "show", name, "--repo", url)
    assert shown["resolution_A"] == sp.resolution and shown["pixel_size_A"] == sp.pixel_size
    assert shown["box_px"] == sp.box and shown["box_A"] == pytest.approx(sp.box * sp.pixel_size)
    assert shown["diameter_A"] == sp.diameter and shown["half1"] == sp.half1
    listed = as_json("species", "list", "--repo", url)
    assert [s["name"] for s in listed] == sorted(r.population("main").species)
    human = runner.invoke(app, ["species", "show", name, "--repo", url]).stdout
    assert f"{sp.pixel_size:g} Å" in human and f"{sp.box} px" in human and f"{sp.resolution:.2f} Å" in human
    commit = as_json("show", "main", "--repo", url)
    commit.pop("operation")  # the commit record's operation (settings flags) as stored: docs/spec.md
    for doc in (shown, listed, commit):
        assert not keys(doc) & BARE_UNIT_KEYS, keys(doc) & BARE_UNIT_KEYS


def test_diff_names_items_and_says_what_changed(refined) -> None:
    url, _ = refined
    r = Repository.open(url)
    d = as_json("diff", "main^", "main", "--repo", url)
    (item,) = d["items"]

    def item_at(rev: str):
        (source,) = r.population(rev).sources.values()
        return r.item(r.source(source).items[item["key"]])

    before, after = item_at("main^"), item_at("main")
    assert item["name"] == after.name and item["change"] == "changed"
    expected = {f"models.{m}" for m in set(before.models) | set(after.models)
                if before.models.get(m) != after.models.get(m)}
    assert expected | {"refined_with"} == set(item["fields"])  # refinement records the species versions used
    changed = d["species_changes"]
    assert set(changed) == set(d["species_changed"]) and changed
    for name, fields in changed.items():
        old, new = fields["resolution_A"]
        assert old == 12.0 and new == r.species(r.population("main").species[name]).resolution
        assert fields["half1"] is True
    human = runner.invoke(app, ["diff", "main^", "main", "--repo", url]).stdout
    assert f"item changed     {item['source']}/{after.name}: " in human
    assert "resolution 12.00 ->" in human


def test_export_checkout_init_json(refined, tmp_path: Path) -> None:
    url, _ = refined
    head = Repository.open(url).head("main")
    for args, out in ((["export", "relion", "--commit", "main"], tmp_path / "relion"),
                      (["export", "m", "--commit", "main"], tmp_path / "m"),
                      (["checkout", "main"], tmp_path / "co")):
        doc = as_json(*args, "--out", str(out), "--repo", url)
        assert doc["commit"] == head and doc["out"] == str(out.resolve())
        written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
        assert doc["files"] and set(doc["files"]) <= set(written), (doc["files"], written)
    made = as_json("init", str(tmp_path / "new"))
    assert made == {"url": str(tmp_path / "new"), "default_branch": "main"}
    assert (tmp_path / "new" / "mrepo.json").exists()
