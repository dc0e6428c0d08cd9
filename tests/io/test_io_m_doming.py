"""M's doming grid (Movie ``<GridCTFDoming>``, a CubicGrid of defocus offsets in µm) in and out of mrepo's
``doming`` model (Å, (gx, gy, gt)): a hand-written Warp/M movie XML, import, refined values, export."""

from __future__ import annotations

import dataclasses

import numpy as np
from warp_projects import grid, warp_frames

from mrepo.graph import Repository
from mrepo.io.warp_export import write_item_xml
from mrepo.io.warp_import import import_warp
from mrepo.io.warp_xml import read_warp_xml

DOME = [0.001 * (i + 1) * (-1) ** i for i in range(18)]  # µm, 3 x 3 x 2 nodes, flat z-y-x


def _with_dome(root):
    proj = warp_frames(root)
    xml = root / "mov_001.xml"
    xml.write_text(xml.read_text().replace("</Movie>", grid("GridCTFDoming", (3, 3, 2), DOME) + "</Movie>"))
    return proj


def _item(repo, name):
    pop = repo.population()
    (sh,) = pop.sources.values()
    return next(it for it in (repo.item(h) for h in repo.source(sh).items.values()) if it.name == name)


def test_m_doming_imports_as_angstrom_in_x_y_t_order_and_exports_back(tmp_path):
    proj = _with_dome(tmp_path / "warp")
    repo = Repository.init(str(tmp_path / "repo"))
    import_warp(repo, proj["folder"], source="movies", settings=proj["settings"])
    it = _item(repo, "mov_001")
    dome = repo.objects.get_array(it.models["doming"])
    assert dome.shape == (3, 3, 2)
    # node (x=2, y=1, z=1): flat index (1 * 3 + 1) * 3 + 2 = 14
    assert dome[2, 1, 1] == DOME[14] * 1e4 and dome[0, 0, 0] == DOME[0] * 1e4
    assert "doming" not in _item(repo, "mov_002").models  # no GridCTFDoming: no model

    # a refined dome (new model values) is written as M's GridCTFDoming in µm
    refined = dome + 5.0
    item = dataclasses.replace(it, models={**it.models, "doming": repo.objects.put_array(refined)})
    written, _ = write_item_xml(repo, item, tmp_path / "out")
    meta = read_warp_xml(written[0])
    (g,) = meta.grids["GridCTFDoming"]
    assert g.dims == (3, 3, 2)
    np.testing.assert_allclose(g.array().transpose(2, 1, 0) * 1e4, refined, rtol=1e-12)
