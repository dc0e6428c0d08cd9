"""``mrepo export relion`` leaves out what RELION has no field for (volume warp, doming, tilt-movie shifts)
and says so in one warning line on stderr naming the models, the items and docs/relion.md; ``--json``
keeps stdout one JSON document; a population without them exports without a warning."""

from __future__ import annotations

import json

import numpy as np
from test_io_m import _setup
from test_io_m_optics import _commit
from typer.testing import CliRunner

from mrepo.cli import app
from mrepo.io.export_relion import relion_unexported

runner = CliRunner()


def test_relion_export_warns_once_about_models_it_leaves_out(tmp_path):
    _, repo, _ = _setup(tmp_path)
    url = str(tmp_path / "repo")
    clean = runner.invoke(app, ["export", "relion", "--repo", url, "--out", str(tmp_path / "r0")])
    assert clean.exit_code == 0, clean.output
    assert clean.stderr == "" and relion_unexported(repo, "main") == {}

    rng = np.random.default_rng(0)
    _commit(
        repo,
        "TS_01",
        models={"volume_warp": rng.normal(size=(3, 2, 2, 2, 3)), "tilt_movie_shifts": rng.normal(size=(3, 2, 2))},
    )
    _commit(repo, "TS_02", models={"volume_warp": rng.normal(size=(3, 2, 2, 2, 3))})
    assert relion_unexported(repo, "main") == {"volume_warp": ["TS_01", "TS_02"], "tilt_movie_shifts": ["TS_01"]}

    result = runner.invoke(app, ["export", "relion", "--repo", url, "--out", str(tmp_path / "r1")])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0] == (
        "warning: not exported, RELION has no field for volume_warp (2 items: TS_01, TS_02); "
        "tilt_movie_shifts (1 item: TS_01); see docs/relion.md (export m keeps them)"
    )
    assert "doming" not in lines[0] and result.stdout.startswith("wrote ")
    assert (tmp_path / "r1/tomograms.star").is_file()  # the export itself went ahead

    doc = runner.invoke(app, ["export", "relion", "--repo", url, "--out", str(tmp_path / "r2"), "--json"])
    assert doc.exit_code == 0 and json.loads(doc.stdout)["files"]
    assert doc.stderr.splitlines() == lines
