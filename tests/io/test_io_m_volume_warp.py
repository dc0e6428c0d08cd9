"""M's volume warp (TiltSeries ``<GridVolumeWarpX/Y/Z>``, LinearGrid4D as ``LinearGrid4D.Save`` writes it:
Width/Height/Depth/Duration, nodes X Y Z W Value, Å) in and out of mrepo's ``volume_warp`` model
((3, gx, gy, gz, gt) Å): a hand-written Warp/M tilt-series XML, import, refined values, export."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from warp_projects import warp_tilts

from mrepo.graph import Repository
from mrepo.io.warp_export import write_item_xml
from mrepo.io.warp_import import import_warp
from mrepo.io.warp_xml import read_warp_xml
from mrepo.store import InvalidInput

DIMS = (2, 3, 2, 2)  # Width, Height, Depth, Duration


def grid4(tag: str, scale: float, dims=DIMS) -> str:
    w, h, d, t = dims
    nodes = "".join(f'\t\t<Node X="{x}" Y="{y}" Z="{z}" W="{u}" Value="{scale * (((u * d + z) * h + y) * w + x)}" />\n'
                    for u in range(t) for z in range(d) for y in range(h) for x in range(w))
    return f'\t<{tag} Width="{w}" Height="{h}" Depth="{d}" Duration="{t}">\n{nodes}\t</{tag}>\n'


def _project(root, dims_y=DIMS):
    proj = warp_tilts(root)
    xml = root / "TS_01.xml"
    grids = grid4("GridVolumeWarpX", 0.5) + grid4("GridVolumeWarpY", -0.25, dims_y) + grid4("GridVolumeWarpZ", 1.0)
    xml.write_text(xml.read_text().replace("</TiltSeries>", grids + "</TiltSeries>"))
    return proj


def test_m_volume_warp_imports_in_x_y_z_t_order_and_exports_back(tmp_path):
    proj = _project(tmp_path / "warp")
    repo = Repository.init(str(tmp_path / "repo"))
    import_warp(repo, proj["folder"], source="ts")
    pop = repo.population()
    (sh,) = pop.sources.values()
    (item,) = [repo.item(h) for h in repo.source(sh).items.values()]
    vw = repo.objects.get_array(item.models["volume_warp"])
    assert vw.shape == (3, 2, 3, 2, 2)
    # node (x=1, y=2, z=0, w=1): flat ((1 * 2 + 0) * 3 + 2) * 2 + 1 = 17
    assert vw[0, 1, 2, 0, 1] == 0.5 * 17 and vw[1, 1, 2, 0, 1] == -0.25 * 17 and vw[2, 1, 2, 0, 1] == 17.0

    refined = vw + 0.125
    item = dataclasses.replace(item, models={**item.models, "volume_warp": repo.objects.put_array(refined)})
    written, _ = write_item_xml(repo, item, tmp_path / "out")
    meta = read_warp_xml(next(p for p in written if p.suffix == ".xml"))
    for i, a in enumerate("XYZ"):
        (g,) = meta.grids[f"GridVolumeWarp{a}"]
        assert g.dims == DIMS
        np.testing.assert_allclose(g.array().transpose(3, 2, 1, 0), refined[i], rtol=1e-12)


def test_m_volume_warp_grids_of_different_sizes_are_refused(tmp_path):
    proj = _project(tmp_path / "warp", dims_y=(2, 2, 2, 2))
    repo = Repository.init(str(tmp_path / "repo"))
    with pytest.raises(InvalidInput, match="GridVolumeWarpX/Y/Z have different dimensions"):
        import_warp(repo, proj["folder"], source="ts")
    assert repo.head("main") is None


def test_m_volume_warp_missing_node_is_refused(tmp_path):
    proj = warp_tilts(tmp_path / "warp")
    xml = tmp_path / "warp" / "TS_01.xml"
    broken = grid4("GridVolumeWarpX", 1.0).replace('\t\t<Node X="1" Y="0" Z="0" W="0" Value="1.0" />\n', "")
    xml.write_text(xml.read_text().replace("</TiltSeries>", broken + "</TiltSeries>"))
    repo = Repository.init(str(tmp_path / "repo"))
    with pytest.raises(InvalidInput, match=r"TS_01.xml: <GridVolumeWarpX> lacks node \(1, 0, 0, 0\): it declares a 2 x 3 x 2 x 2 grid"):
        import_warp(repo, proj["folder"], source="ts")
