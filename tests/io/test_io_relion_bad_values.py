"""Physically impossible values are refused in one line naming file, block, column and row; nothing is written."""

from __future__ import annotations

import pytest
from io_projects import relion5_tomo, relion_spa
from relion5_layouts import ctfrefine_spa
from test_io_bad_input import listing

from mrepo.graph import Repository
from mrepo.io import SpeciesFiles, import_relion5_tomo, import_relion_spa
from mrepo.store import InvalidInput


def _replace_line_value(path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def _tomo(tmp_path, mutate, *, diameter=250.0, symmetry="C1", branch=None):
    root = tmp_path / "proj"
    proj = relion5_tomo(root)
    mutate(root, proj)
    repo_dir = tmp_path / "repo"
    repo = Repository.init(str(repo_dir))
    before = listing(repo_dir)
    sp = SpeciesFiles("ribo", proj["half1"], proj["half2"], proj["mask"], diameter, symmetry)
    with pytest.raises(InvalidInput) as err:
        import_relion5_tomo(repo, proj["tomograms"], source="ts", project=root, particles=proj["particles"],
                            species=sp, branch=branch)
    assert listing(repo_dir) == before
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def _line_of(path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), start=1) if text in line)


def test_negative_voltage_in_tomograms_star(tmp_path):
    star = []
    msg = _tomo(tmp_path, lambda r, p: (star.append(p["tomograms"]),
                                        _replace_line_value(p["tomograms"], "TS_02\t300.0", "TS_02\t-300.0")))
    assert all(s in msg for s in ("tomograms.star", "data_global", "rlnVoltage", "row 2", "-300.0"))
    line = _line_of(star[0], "TS_02\t-300.0")
    assert f"tomograms.star: line {line}: data_global column rlnVoltage row 2: -300.0 is not positive" in msg


def test_negative_tilt_defocus(tmp_path):
    star = "AlignTiltSeries/job005/tilt_series/TS_01.star"
    msg = _tomo(tmp_path, lambda r, p: _replace_line_value(r / star, "30100.0", "-30100.0"))
    assert all(s in msg for s in ("TS_01.star", "data_TS_01", "rlnDefocusU", "row 2", "negative"))


def test_particle_in_an_optics_group_that_does_not_exist(tmp_path):
    msg = _tomo(tmp_path, lambda r, p: _replace_line_value(p["particles"], "\t2\t1 \n", "\t2\t7 \n"))
    assert all(s in msg for s in ("run_data.star", "data_particles", "rlnOpticsGroup", "row 2", "7"))


def test_diameter_1e308_and_huge_symmetry_and_head_branch(tmp_path):
    assert "1e+308" in _tomo(tmp_path / "a", lambda r, p: None, diameter=1e308)
    assert "C100000000" in _tomo(tmp_path / "b", lambda r, p: None, symmetry="C100000000")
    assert "HEAD" in _tomo(tmp_path / "c", lambda r, p: None, branch="HEAD")


def test_negative_particle_defocus_spa(tmp_path):
    root = tmp_path / "proj"
    proj = ctfrefine_spa(root)
    text = proj["particles"].read_text()
    proj["particles"].write_text(text.replace("\t21038.0\t", "\t-21038.0\t", 1))
    repo = Repository.init(str(tmp_path / "repo"))
    before = listing(tmp_path / "repo")
    with pytest.raises(InvalidInput) as err:
        import_relion_spa(repo, proj["particles"], source="m", project=root, micrographs=proj["micrographs"],
                          species=SpeciesFiles("apo", proj["half1"], proj["half2"], proj["mask"], 120.0))
    msg = str(err.value)
    assert all(s in msg for s in ("particles_ctf_refine.star", "data_particles", "rlnDefocusU", "row 2"))
    line = _line_of(proj["particles"], "\t-21038.0\t")
    assert f"particles_ctf_refine.star: line {line}: data_particles column rlnDefocusU row 2: -21038.0 Å is " \
           "negative (RELION defocus is positive for underfocus)" in msg
    assert listing(tmp_path / "repo") == before


def test_negative_micrograph_voltage_spa(tmp_path):
    root = tmp_path / "proj"
    proj = relion_spa(root)
    _replace_line_value(proj["particles"], "\t300.0\t2.7", "\t-300.0\t2.7")
    repo = Repository.init(str(tmp_path / "repo"))
    with pytest.raises(InvalidInput, match="data_optics column rlnVoltage row 1: -300.0 is not positive"):
        import_relion_spa(repo, proj["particles"], source="m", project=root)
