"""Warp tilt series whose MoviePath entries are MRC tilt movies: the movies become ``Item.tilt_movies``,
each movie XML's −GridMovementX/Y the ``tilt_movie_shifts`` model, and the tilts re-made from the aligned
frames equal Warp's averages (hand-written folder in Movie.SaveMeta / TiltSeries.SaveMeta layout)."""

from __future__ import annotations

import numpy as np
import torch
from io_projects import write_mrc
from warp_projects import PIX, movie_xml, tilt_xml

from mrepo.graph import Repository
from mrepo.io.warp_import import import_warp
from mrepo.kernels.shifts import shift_images
from mrepo.workers.raw_data import read_exposures
from mrepo.workers.tilt_movies import MODEL, item_exposures


def _folder(root, *, movies: bool = True, xml: bool = True):
    """TS_01 with 3 tilts of 32 x 24 px: MRC movies of 3 frames (frame k = the tilt's image moved by
    −GridMovement_k, plus noise), Warp's averages (the frames aligned back) in average/, movie XMLs."""
    rng = np.random.default_rng(7)
    grids = [
        [(0.0, 0.0), (1.0, -0.5), (2.0, -1.5)],
        [(0.5, 0.5), (0.0, 0.0), (-1.0, 0.5)],
        [(0.0, 1.0), (0.0, 0.0), (1.5, 0.0)],
    ]
    for i, g in enumerate(grids):
        base = torch.from_numpy(rng.normal(size=(24, 32)))
        moved = -torch.tensor(g, dtype=torch.float64) / PIX  # frame content displaced by −grid (Å -> px)
        frames = shift_images(base.expand(3, -1, -1), moved).numpy() / 3 + rng.normal(size=(3, 24, 32)) * 0.01
        average = shift_images(torch.from_numpy(frames), -moved).sum(0).numpy()
        write_mrc(root / f"frames/tilt_{i}.mrc", frames if movies else frames[:1], PIX)
        write_mrc(root / f"frames/average/tilt_{i}.mrc", average, PIX)
        if xml:
            (root / f"frames/tilt_{i}.xml").write_text(movie_xml(3.0, g))
    (root / "TS_01.xml").write_text(tilt_xml([-3.0, 0.0, 3.0], [3.0, 0.0, 6.0], 85.0).replace(".tif", ".mrc"))
    return grids


def _item(repo):
    pop = repo.population()
    (sh,) = pop.sources.values()
    (h,) = repo.source(sh).items.values()
    return repo.item(h)


def test_warp_tilt_movies_and_their_alignment_are_imported(tmp_path):
    grids = _folder(tmp_path / "warp")
    repo = Repository.init(str(tmp_path / "repo"))
    import_warp(repo, tmp_path / "warp", source="ts")
    item = _item(repo)
    assert item.tilt_movies is not None and item.tilt_movies.format == "manifest"
    assert item.imaging["dimensions"] == [32, 24, 3]
    np.testing.assert_allclose(repo.objects.get_array(item.models[MODEL]), -np.asarray(grids))
    # the tilts re-made from the aligned frames are Warp's averages (the raw tilt images here)
    aligned = item_exposures(repo.objects, item, "light", item.imaging["pixel_size"])
    torch.testing.assert_close(aligned, read_exposures(repo.objects, item, "light"), atol=1e-4, rtol=1e-4)


def test_tilt_movies_without_their_xml_are_not_attached(tmp_path):
    _folder(tmp_path / "warp", xml=False)
    repo = Repository.init(str(tmp_path / "repo"))
    import_warp(repo, tmp_path / "warp", source="ts")
    item = _item(repo)
    assert item.tilt_movies is None and MODEL not in item.models
    assert item.imaging["dimensions"] == [32, 24, 3]  # the averages are still the tilt images


def test_single_image_mrc_tilts_stay_the_tilt_images(tmp_path):
    _folder(tmp_path / "warp", movies=False)
    repo = Repository.init(str(tmp_path / "repo"))
    import_warp(repo, tmp_path / "warp", source="ts")
    item = _item(repo)
    assert item.tilt_movies is None
    raw = read_exposures(repo.objects, item, "light")
    assert raw.shape == (3, 24, 32)
