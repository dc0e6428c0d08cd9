"""The web view shows a species' noise2noise-denoised map beside its filtered map (real server)."""

from __future__ import annotations

import io
from dataclasses import replace

import httpx
import numpy as np
from PIL import Image

from mrepo.api import create_app
from mrepo.api.png import central_slice
from mrepo.graph import Repository, Species
from mrepo.kernels.denoise import DenoiserConfig
from mrepo.store.objects import array_ref
from mrepo.workers.denoise import DenoiseSettings, train_species_denoiser, with_denoiser
from tests.api.server import thread_server
from tests.factories import make_population


def test_species_view_lists_the_denoised_map_after_the_filtered_map(tmp_path) -> None:
    repo = Repository.init(str(tmp_path / "r"))
    pop = make_population(repo, n_items=1, species=("apo",), seed=1)
    sp = Species.load(repo.objects, pop.species["apo"])
    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[:16, :16, :16] - 8
    ball = (np.sqrt(x ** 2 + y ** 2 + z ** 2) < 5).astype(np.float32)
    put = repo.objects.put_array
    sp = replace(sp, half1=put(ball + rng.normal(0, 0.5, ball.shape).astype(np.float32)),
                 half2=put(ball + rng.normal(0, 0.5, ball.shape).astype(np.float32)),
                 metadata={**sp.metadata, "filtered": array_ref(put(ball))})
    cfg = DenoiserConfig(depth=1, width=4, max_width=8, patch=16, batch=1, window=16, overlap=4)
    sp = with_denoiser(repo.objects, sp, train_species_denoiser(repo.objects, sp, DenoiseSettings(steps=2, config=cfg)))
    h = sp.save(repo.objects)
    repo.commit(replace(pop, species={"apo": h}), message="denoised", branch="main")
    app = create_app(str(tmp_path / "r"), None, anonymous_read=True, access_log=False)
    with thread_server(app) as base:
        maps = httpx.get(f"{base}/api/species/{h}").json()["maps"]
        assert list(maps)[:2] == ["filtered", "denoised"] and maps["denoised"] == sp.metadata["denoised"]["@array"]
        png = httpx.get(f"{base}/api/arrays/{maps['denoised']}/slice.png", params={"axis": 0})
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        img = np.asarray(Image.open(io.BytesIO(png.content)))
        want = central_slice(np.asarray(repo.objects.get_array(maps["denoised"])), 0)
        assert img.shape == want.shape
        # brightest pixel of the PNG where the denoised section is brightest (grey levels follow the map)
        assert img.reshape(-1)[np.argmax(want)] == img.max()
