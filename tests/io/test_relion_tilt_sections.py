"""RELION 5 ``k@stack`` tilt references in another order or a subset (excluded tilts): imported as a
manifest of sections, read lazily image by image, exported back as the same ``k@stack`` names.

The project is written by hand in RELION 5's layout (tomograms.star data_global, one tilt-series STAR).
"""

from __future__ import annotations

from pathlib import Path

import mrcfile
import numpy as np
import pytest
from io_projects import loop, write_mrc

from mrepo.graph import Repository
from mrepo.io import import_relion5_tomo
from mrepo.io.export_relion import export_relion
from mrepo.io.star import read_star
from mrepo.store import InvalidInput
from mrepo.workers.raw_data import RawStack

COLS = ["rlnTomoNominalStageTiltAngle", "rlnMicrographPreExposure", "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle",
        "rlnTomoXTilt", "rlnTomoYTilt", "rlnTomoZRot", "rlnTomoXShiftAngst", "rlnTomoYShiftAngst",
        "rlnMicrographName"]


def project(root: Path, names: list[str]) -> Path:
    stack = np.random.default_rng(3).normal(size=(4, 24, 32)).astype(np.float32)
    write_mrc(root / "Stacks/TS_01.mrcs", stack, 2.0)
    write_mrc(root / "Extra/tilt_x.mrc", stack[:1] * 2, 2.0)
    rows = [[3.0 * k, 3.0 * k, 20000.0, 19800.0, 10.0, 0.0, 3.0 * k, 85.0, 0.0, 0.0, n] for k, n in enumerate(names)]
    (root / "ts").mkdir(parents=True, exist_ok=True)
    (root / "ts/TS_01.star").write_text(loop("TS_01", COLS, rows))
    gcols = ["rlnTomoName", "rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast", "rlnTomoHand",
             "rlnTomoTiltSeriesPixelSize", "rlnTomoTiltSeriesStarFile", "rlnTomoSizeX", "rlnTomoSizeY", "rlnTomoSizeZ"]
    (root / "tomograms.star").write_text(loop("global", gcols, [["TS_01", 300.0, 2.7, 0.1, -1.0, 2.0,
                                                                  "ts/TS_01.star", 32, 24, 10]]))
    return root / "tomograms.star"


def test_sections_in_another_order_and_a_subset_read_and_export_as_listed(tmp_path: Path) -> None:
    names = ["3@Stacks/TS_01.mrcs", "1@Stacks/TS_01.mrcs", "Extra/tilt_x.mrc"]  # tilts 2 and 4 excluded
    tomograms = project(tmp_path / "proj", names)
    repo = Repository.init(str(tmp_path / "repo"))
    import_relion5_tomo(repo, tomograms, source="ts", project=tmp_path / "proj")
    item = repo.item(next(iter(repo.source(repo.population().sources["ts"]).items.values())))
    assert item.raw.format == "manifest" and item.imaging["dimensions"] == [32, 24, 3]
    with mrcfile.open(tmp_path / "proj/Stacks/TS_01.mrcs") as m:
        stack = np.array(m.data)
    images = RawStack.open(repo.objects, item).stack()
    assert np.array_equal(images, np.stack([stack[2], stack[0], stack[0] * 2]))

    export_relion(repo, "main", tmp_path / "out", project=tmp_path / "proj")
    (ts_star,) = (tmp_path / "out").rglob("TS_01.star")
    exported = read_star(ts_star)["TS_01"]["rlnMicrographName"].tolist()
    assert [n.split("@")[0] for n in exported[:2]] == ["3", "1"] and exported[2].endswith("tilt_x.mrc")


def test_a_section_beyond_the_stack_is_refused(tmp_path: Path) -> None:
    tomograms = project(tmp_path / "proj", ["1@Stacks/TS_01.mrcs", "5@Stacks/TS_01.mrcs"])
    repo = Repository.init(str(tmp_path / "repo"))
    with pytest.raises(InvalidInput, match=r"row 2: rlnMicrographName 5@Stacks/TS_01.mrcs but the file holds 4"):
        import_relion5_tomo(repo, tomograms, source="ts", project=tmp_path / "proj")
    assert repo.head("main") is None
