"""Bad input: a one-line InvalidInput naming file and line/column/value, non-zero CLI exit, nothing written."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from io_projects import TOMO_PARTICLES, relion5_tomo, relion_spa, write_mrc
from typer.testing import CliRunner

from mrepo.cli import app
from mrepo.graph import Repository
from mrepo.io import SpeciesFiles, import_relion5_tomo, import_relion_spa
from mrepo.io.source_add import add_source
from mrepo.store import InvalidInput


def listing(root: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(root)), p.stat().st_size) for p in root.rglob("*") if p.is_file())


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def _truncate(path: Path, keep: int) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:keep])


# (mutation on the project, substring(s) the message must contain)
TOMO_CASES = {
    "ragged_row": (lambda r, p: _replace(p["particles"], "TS_02\t0.0", "TS_02\t0.0\t0.0"), ["run_data.star", "line"]),
    "missing_column": (lambda r, p: _replace(p["particles"], "_rlnAngleTilt ", "_rlnAngleTiltX "),
                       ["rlnAngleTilt"]),
    "not_a_number": (lambda r, p: _replace(p["particles"], "10.5", "abc"),
                     ["rlnCenteredCoordinateXAngst", "row 1", "'abc'"]),
    "unknown_tomogram": (lambda r, p: _replace(p["particles"], "TS_02\t", "TS_99\t"), ["TS_99"]),
    "truncated_stack": (lambda r, p: _truncate(r / "Stacks/TS_02.mrcs", 2000), ["TS_02.mrcs", "truncated"]),
    "truncated_star": (lambda r, p: _truncate(p["tomograms"], len(p["tomograms"].read_bytes()) - 30),
                       ["tomograms.star", "line"]),
    "nan_in_map": (lambda r, p: write_mrc(p["half2"], np.full((8, 8, 8), np.nan), 4.0), ["NaN"]),
    "pixel_disagrees_map": (lambda r, p: write_mrc(p["mask"], np.ones((8, 8, 8)), 3.0), ["mask.mrc", "voxel size"]),
    "pixel_disagrees_stack": (lambda r, p: write_mrc(r / "Stacks/TS_02.mrcs", np.zeros((3, 24, 32)), 1.0),
                              ["TS_02", "1.0"]),
    "box_mismatch": (lambda r, p: write_mrc(p["mask"], np.ones((10, 10, 10)), 4.0), ["box 10"]),
    "non_utf8": (lambda r, p: p["particles"].write_bytes(p["particles"].read_bytes().replace(b"TS_02", b"TS_\xe902")),
                 ["not valid UTF-8", "line"]),
    "bad_half_set": (lambda r, p: _replace(p["particles"], "\t1\t1 \n", "\t3\t1 \n"), ["rlnRandomSubset", "3"]),
}


@pytest.mark.parametrize("case", sorted(TOMO_CASES))
def test_tomo_bad_input(tmp_path, case):
    root = tmp_path / "proj"
    proj = relion5_tomo(root)
    mutate, needles = TOMO_CASES[case]
    mutate(root, proj)
    repo_dir = tmp_path / "repo"
    repo = Repository.init(str(repo_dir))
    before = listing(repo_dir)
    sp = SpeciesFiles("ribo", proj["half1"], proj["half2"], proj["mask"], 250.0, "C1")
    with pytest.raises(InvalidInput) as err:
        import_relion5_tomo(repo, proj["tomograms"], source="ts", project=root, particles=proj["particles"],
                            species=sp)
    msg = str(err.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, (needle, msg)
    assert listing(repo_dir) == before


def test_spa_pixel_size_disagrees(tmp_path):
    proj = relion_spa(tmp_path / "proj", mic_voxel=1.0)
    repo = Repository.init(str(tmp_path / "repo"))
    before = listing(tmp_path / "repo")
    with pytest.raises(InvalidInput, match="mic_001.mrc: MRC voxel size 1.0"):
        import_relion_spa(repo, proj["particles"], source="m", project=tmp_path / "proj")
    assert listing(tmp_path / "repo") == before


def test_non_utf8_file_name(tmp_path):
    bad = os.fsdecode(b"mic_\xff.mrc")
    repo = Repository.init(str(tmp_path / "repo"))
    before = listing(tmp_path / "repo")
    with pytest.raises(InvalidInput, match="not valid UTF-8"):
        add_source(repo, "raw", [tmp_path / bad], kind="frames")
    assert listing(tmp_path / "repo") == before


def test_cli_exit_code_and_nothing_written(tmp_path):
    root = tmp_path / "proj"
    proj = relion5_tomo(root, particles=TOMO_PARTICLES + [["TS_77", 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]])
    repo_dir = tmp_path / "repo"
    runner = CliRunner()
    assert runner.invoke(app, ["init", str(repo_dir)]).exit_code == 0
    before = listing(repo_dir)
    args = ["import", "relion5-tomo", str(proj["tomograms"]), "--repo", str(repo_dir), "--source", "ts",
            "--project", str(root), "--particles", str(proj["particles"]), "--species", "ribo", "--half1",
            str(proj["half1"]), "--half2", str(proj["half2"]), "--mask", str(proj["mask"]), "--diameter", "250"]
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "TS_77" in res.output and "--ignore-unmatched" in res.output
    assert listing(repo_dir) == before
    res = runner.invoke(app, args + ["--ignore-unmatched", "--json"])
    assert res.exit_code == 0, res.output
    assert runner.invoke(app, ["species", "list", "--repo", str(repo_dir), "--json"]).exit_code == 0
