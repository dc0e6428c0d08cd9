"""WarpTools tilt-series folders written by hand from simulated detector data — tilts as .tif movies read
through Warp's ``average/`` images (Movie.AveragePath, as TiltSeries.LoadMovieData reads them), or the
``tiltstack/<name>/<name>.st`` stack: import, add a species from a RELION 5 particle file, reconstruct and
refine one iteration.

The XML is written as text in the layout of TiltSeries.SaveMeta (per-tilt Angles, Dose, AxisAngle,
AxisOffsetX/Y, MoviePath; GridCTF/GridCTFDefocusDelta/GridCTFDefocusAngle with one node per tilt).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from mrepo.graph import Repository
from tests.workers.simdata import tilts_sim
from tests.workers.test_relion5_per_tilt import PIX, _mrc, _truth_fsc, mrepo, write_species

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "io"))
from warp_projects import ctf, grid  # noqa: E402

SETTINGS = """<?xml version="1.0" encoding="utf-8"?>
<Settings>
\t<Import>
\t\t<Param Name="Extension" Value="*.tif" />
\t\t<Param Name="PixelSize" Value="2.0" />
\t\t<Param Name="BinTimes" Value="0" />
\t</Import>
\t<CTF>
\t\t<Param Name="Voltage" Value="300" />
\t\t<Param Name="Cs" Value="2.7" />
\t\t<Param Name="Amplitude" Value="0.07" />
\t</CTF>
</Settings>
"""


def write_warptools(root: Path, sim, layout: str = "average") -> Path:
    """warp_tiltseries/TS_01.xml and the tilt images: ``layout="average"`` — one
    warp_frameseries/average/<movie>.mrc per tilt; ``"tiltstack"`` — warp_tiltseries/tiltstack/TS_01/TS_01.st
    (the stack ts_stack writes). Returns the XML folder.

    Warp's tilt matrix is Euler(0, Angle, -AxisAngle) (RELION's Euler_angles2matrix), so the stage
    angles (xtilt 0, ytilt, zrot) of the simulator are Angle = -ytilt, AxisAngle = zrot; AxisOffset
    carries the per-tilt shifts (Å) with no GridMovement; even image and volume sizes put Warp's and
    RELION's centres on the same pixel."""
    t, ini = sim.truth, sim.initial
    n = len(t.nominal_tilts)
    movies = [f"TS_01_{k + 1:03d}_{a:.1f}.tif" for k, a in enumerate(t.nominal_tilts)]
    if layout == "average":  # only the motion-corrected averages exist; the .tif movies are elsewhere
        for k, m in enumerate(movies):
            _mrc(root / "warp_frameseries/average" / m.replace(".tif", ".mrc"), sim.data[k])
    else:
        _mrc(root / "warp_tiltseries/tiltstack/TS_01/TS_01.st", sim.data)
    mean = (ini.defocus_u + ini.defocus_v) / 2
    per = {"Angles": list(-ini.ytilt), "Dose": list(t.pre_exposure), "UseTilt": ["True"] * n,
           "AxisAngle": list(ini.zrot), "AxisOffsetX": list(ini.shifts_A[:, 0]),
           "AxisOffsetY": list(ini.shifts_A[:, 1]), "MoviePath": [f"../warp_frameseries/{m}" for m in movies],
           "FOVFraction": [1] * n}
    body = "".join(f"\t<{k}>" + "\n".join(str(v) for v in vals) + f"</{k}>\n" for k, vals in per.items())
    vol, (w, h) = t.volume_size_A, t.image_size
    xml = ('<?xml version="1.0" encoding="utf-8"?>\n<TiltSeries DataDirectory="" AreAnglesInverted="False" '
           'PlaneNormal="0, 0, 1" LevelAngleX="0" LevelAngleY="0" Bfactor="0" Weight="1" '
           f'ImageDimensionsAngstrom="{w * PIX}, {h * PIX}" VolumeDimensionsAngstrom="{vol[0]},{vol[1]},{vol[2]}" '
           'UnselectFilter="False" UnselectManual="" CTFResolutionEstimate="0">\n' + body
           + ctf(float(mean.mean()) / 1e4, 0.0, 0.0)
           + grid("GridCTF", (1, 1, n), list(mean / 1e4))
           + grid("GridCTFDefocusDelta", (1, 1, n), list((ini.defocus_u - ini.defocus_v) / 1e4))
           + grid("GridCTFDefocusAngle", (1, 1, n), list(ini.astigmatism_deg)) + "</TiltSeries>\n")
    (root / "warp_tiltseries").mkdir(parents=True, exist_ok=True)
    (root / "warp_tiltseries/TS_01.xml").write_text(xml)
    (root / "warp_tiltseries.settings").write_text(SETTINGS)
    return root / "warp_tiltseries"


@pytest.fixture(scope="module")
def sim():
    return tilts_sim(seed=5, n_particles=14, contrast="dark", max_tilt=36.0, tilt_step=6.0)


@pytest.mark.parametrize("layout", ["average", "tiltstack"])
def test_warp_tilts_import_reconstruct_and_refine(tmp_path: Path, sim, layout: str) -> None:
    root = tmp_path
    folder, f = write_warptools(root, sim, layout), write_species(root, sim)
    mrepo("init", "repo", cwd=root)
    mrepo("-R", "repo", "import", "warp", str(folder), "--source", "ts", "--settings",
          str(root / "warp_tiltseries.settings"), cwd=root)
    mrepo("-R", "repo", "species", "add", "alpha", "--particles", str(f["particles"]), "--half1", str(f["half1"]),
          "--half2", str(f["half2"]), "--mask", str(f["mask"]), "--diameter", str(sim.species[0].spec.diameter),
          cwd=root)
    repo = Repository.open(str(root / "repo"))
    src = repo.source(repo.population().sources["ts"])
    assert src.polarity == "dark"  # no species at import: counting-detector default
    item = repo.item(next(iter(src.items.values())))
    assert item.raw.format == ("manifest" if layout == "average" else "mrc")
    assert item.imaging["dimensions"][2] == len(sim.truth.nominal_tilts)

    mrepo("-R", "repo", "reconstruct", cwd=root)
    first = _truth_fsc(repo, "alpha", sim)
    assert (first[1:4] > 0.5).all(), first[:6]
    mrepo("-R", "repo", "refine", "--iterations", "1", cwd=root)
    assert repo.get_commit(repo.head("main")).operation["name"] == "refine"
    after = _truth_fsc(repo, "alpha", sim)
    assert (after[1:4] > 0.5).all(), after[:6]
    assert np.isfinite(repo.species(repo.population().species["alpha"]).resolution)
