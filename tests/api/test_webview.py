"""The web view: its JSON endpoints, slice PNGs, and a headless Chromium screenshot of the page."""

from __future__ import annotations

import io
import shutil
import subprocess
from dataclasses import replace

import httpx
import numpy as np
import pytest
from PIL import Image

from mrepo.api import add_token, create_app
from mrepo.api.png import central_slice, encode_png, to_uint8
from mrepo.graph import Repository, Species
from tests.api.server import thread_server
from tests.factories import make_population

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_png_encoder_matches_pillow_decoder() -> None:
    img = np.random.default_rng(0).integers(0, 256, (37, 53), dtype=np.uint8)
    decoded = np.asarray(Image.open(io.BytesIO(encode_png(img))))
    assert decoded.shape == (37, 53) and np.array_equal(decoded, img)
    with pytest.raises(ValueError, match="2-D uint8"):
        encode_png(img.astype(np.float32))


def test_central_slice_and_grey_levels() -> None:
    vol = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    assert np.array_equal(central_slice(vol, 0), vol[2])
    assert np.array_equal(central_slice(vol, 2), vol[:, :, 3])
    g = to_uint8(np.linspace(0, 1, 1001), 0, 100)
    assert g[0] == 0 and g[-1] == 255 and g[500] in (127, 128)


@pytest.fixture
def web(tmp_path):
    repo = Repository.init(str(tmp_path / "r"))
    pop = make_population(repo, n_items=2, species=("apo", "holo"), seed=3)
    sh = pop.species["apo"]
    sp = Species.load(repo.objects, sh)
    z, y, x = np.mgrid[:16, :16, :16] - 8
    ball = (np.sqrt(x ** 2 + y ** 2 + z ** 2) < 5).astype(np.float32)
    fsc = np.clip(1.2 - np.arange(9) / 6, -0.05, 1).astype(np.float32)
    sp = replace(sp, half1=repo.objects.put_array(ball), fsc=repo.objects.put_array(fsc), resolution=4.5)
    pop = replace(pop, species={**pop.species, "apo": sp.save(repo.objects)})
    repo.commit(pop, message="first", branch="main", author="ann", time="2025-01-01T00:00:00Z")
    repo.create_branch("dev")
    repo.commit(pop.__class__(pop.name, pop.sources, pop.species, {"note": "x"}), message="on dev", branch="dev",
                author="bob", time="2025-01-02T00:00:00Z")
    secret = add_token(tmp_path / "t.toml", "viewer", "read")
    app = create_app(str(tmp_path / "r"), tmp_path / "t.toml", anonymous_read=True, access_log=False)
    with thread_server(app) as base:
        yield base, repo, sp, ball, secret


def test_json_endpoints_and_slice(web) -> None:
    base, repo, sp, ball, _ = web
    g = httpx.get(f"{base}/api/graph").json()
    assert [c["message"] for c in g["commits"]] == ["on dev", "first"]
    assert g["commits"][0]["parents"] == [g["commits"][1]["hash"]] and "dev" in g["commits"][0]["refs"]
    pop = httpx.get(f"{base}/api/population?rev=main").json()
    assert [s["name"] for s in pop["species"]] == ["apo", "holo"] and pop["sources"][0]["items"] == 2
    d = httpx.get(f"{base}/api/species/{pop['species'][0]['hash']}").json()
    assert np.allclose(d["fsc"]["frequency"], np.arange(9) / (16 * 1.5))
    assert np.allclose(d["fsc"]["fsc"], np.clip(1.2 - np.arange(9) / 6, -0.05, 1), atol=1e-6)
    r = httpx.get(f"{base}/api/arrays/{sp.half1}/slice.png?axis=0")
    assert r.headers["content-type"] == "image/png"
    img = np.asarray(Image.open(io.BytesIO(r.content)))
    assert np.array_equal(img > 127, ball[8] > 0.5)
    src = httpx.get(f"{base}/api/sources/{pop['sources'][0]['hash']}").json()
    assert src["total"] == 2 and {i["name"] for i in src["items"]} == {"mic000", "mic001"}
    assert httpx.get(f"{base}/api/sources/{pop['sources'][0]['hash']}",
                     headers={"Authorization": "Bearer wrong"}).status_code == 401


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_page_renders_in_headless_chromium(web, tmp_path) -> None:
    base, *_ = web
    shot = tmp_path / "page.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,900",
           "--virtual-time-budget=8000", "--hide-scrollbars", base + "/"]
    subprocess.run(cmd, check=True, timeout=120, capture_output=True)
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape == (900, 1200, 3)
    assert img.std() > 20 and len(np.unique(img.reshape(-1, 3), axis=0)) > 50  # not blank
    header = img[5:30, :, :].reshape(-1, 3).mean(axis=0)
    assert header[2] > header[0] + 30  # the dark blue header bar was drawn
    shutil.copy(shot, "/tmp/h7_webview.png")
