"""The web view: its JSON endpoints, slice PNGs, and a headless Chromium screenshot of the page."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import uuid
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


def _chromium(url: str, tmp_path, *, shot=None, width: int = 900, height: int = 2600) -> str:
    """Load ``url`` in headless Chromium (JS run for 10 s of virtual time); the DOM after it, and a
    screenshot at ``shot`` when given."""
    profile = tmp_path / f"profile-{uuid.uuid4().hex[:8]}"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", f"--window-size={width},{height}", "--virtual-time-budget=10000",
           "--hide-scrollbars"]
    if shot is not None:
        subprocess.run(cmd + [f"--screenshot={shot}", url], check=True, timeout=180, capture_output=True)
    run = subprocess.run(cmd + ["--dump-dom", url], check=True, timeout=180, capture_output=True, text=True)
    return run.stdout


def _rects(dom: str, css_class: str) -> list[tuple[int, int, int, int]]:
    """Page rectangles (x, y, w, h) the page recorded on its ``<img class=css_class>`` elements."""
    out = []
    for tag in re.findall(r"<img[^>]*>", dom):
        if re.search(rf'class="[^"]*\b{css_class}\b', tag):
            m = re.search(r'data-rect="(\d+),(\d+),(\d+),(\d+)"', tag)
            if m and 'data-loaded="' in tag:
                out.append(tuple(int(v) for v in m.groups()))
    return out


@pytest.fixture(scope="module")
def scientist(tmp_path_factory):
    """A served repository with refinement history, FSC curves, maps, raw data and a checked pull request."""
    from tests.api.webview_data import build, simulate

    d = tmp_path_factory.mktemp("web")
    repo = Repository.init(str(d / "r"))
    names = build(repo, simulate(d / "sim"))
    app = create_app(str(d / "r"), None, anonymous_read=True, access_log=False)
    with thread_server(app) as base:
        yield base, repo, names


def test_views_a_scientist_uses(scientist) -> None:
    base, repo, names = scientist
    detail = httpx.get(f"{base}/api/commits/main").json()
    assert detail["message"] == "refine iteration 2" and detail["diff"]["species_changed"] == [names["species"]]
    parent = httpx.get(f"{base}/api/commits/{detail['parents'][0]}").json()
    assert parent["message"] == "refine iteration 1"
    hist = httpx.get(f"{base}/api/species-history", params={"name": names["species"], "rev": "main"}).json()
    assert [(p["iteration"], p["resolution"]) for p in hist["points"]][-2:] == [(1, 9.0), (2, 6.5)]
    sp = httpx.get(f"{base}/api/species/{repo.population().species[names['species']]}").json()
    assert [c["name"] for c in sp["curves"]] == ["masked", "unmasked"] and set(sp["maps"]) == {
        "filtered", "half1", "half2", "mask"}
    iso = np.asarray(Image.open(io.BytesIO(httpx.get(f"{base}/api/arrays/{sp['maps']['filtered']}/iso.png").content)))
    assert iso.shape == (256, 256) and 0.05 < (iso > 40).mean() < 0.9  # a lit surface on a dark background
    src = repo.population().sources["sim"]
    items = httpx.get(f"{base}/api/sources/{src}").json()["items"]
    item = items[0]
    truth = repo.item(item["hash"])
    ctf_model = repo.objects.get_array(truth.models["ctf"])
    assert item["defocus_A"] == pytest.approx(float(np.mean(ctf_model[:, :2])), abs=0.1)
    assert item["dose_e_per_A2"] == pytest.approx(sum(truth.imaging["exposure"]))
    thumb = np.asarray(Image.open(io.BytesIO(httpx.get(f"{base}/api/items/{item['hash']}/thumbnail.png").content)))
    assert thumb.shape == (160, 160) and thumb.std() > 10
    fit = httpx.get(f"{base}/api/items/{item['hash']}/ctf").json()
    assert len(fit["frequency"]) == len(fit["power"]) == len(fit["ctf2"]) == 81
    report = httpx.get(f"{base}/api/pulls/{names['pull']}").json()["report"]
    assert report["counts"]["collisions"] > 0 and all(isinstance(c["incoming_id"], str) for c in report["collisions"])


def test_ctf_curve_matches_the_kernel() -> None:
    import torch

    from mrepo.api.item_views import ctf_curve
    from mrepo.kernels.ctf import ctf_at

    f = np.linspace(0, 0.3, 50)
    ours = ctf_curve(f, 15000.0, 300.0, 2.7, 0.07)
    grid = torch.stack([torch.from_numpy(f), torch.zeros(50, dtype=torch.float64)], dim=-1)
    kernel = ctf_at(grid, defocus_u=15000.0, defocus_v=15000.0, astigmatism_angle=0.0, voltage_kv=300.0, cs_mm=2.7,
                    amplitude_contrast=0.07).numpy()
    np.testing.assert_allclose(ours, kernel, atol=1e-6)


def test_isosurface_of_an_ellipsoid_has_its_projected_area() -> None:
    from mrepo.api.isosurface import render_isosurface

    z, y, x = np.mgrid[:32, :32, :32] - 16
    blob = ((x / 10) ** 2 + (y / 6) ** 2 + (z / 4) ** 2 < 1).astype(np.float32)
    down_z = render_isosurface(blob, 0.5, azimuth=0, elevation=0, size=128)  # 4 px per voxel
    assert (down_z > 24).sum() == pytest.approx(np.pi * 10 * 6 * 16, rel=0.03)
    side = render_isosurface(blob, 0.5, azimuth=0, elevation=90, size=128)  # looking along y: x-z ellipse
    assert (side > 24).sum() == pytest.approx(np.pi * 10 * 4 * 16, rel=0.08)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_page_in_headless_chromium_at_900_px(scientist, tmp_path) -> None:
    base, repo, names = scientist
    shot = tmp_path / "page.png"
    dom = _chromium(base + "/", tmp_path, shot=shot)
    assert 'data-ready="1"' in dom
    text = re.sub(r"<[^>]+>", " ", dom)
    for expected in ("refine iteration 2", "Changes from", f"species changed: {names['species']}", "resolution (Å)",
                     "0.143", "6.50 Å", "z (y-x plane)", "x (z-y plane)", "filtered", "isosurface", "defocus (µm)",
                     "e⁻/Å²", "Collisions (", "Duplicates (0)", "Id clashes (0)", "Reclassifications (0)",
                     f"{names['second']} from lab 2"):
        assert expected in text, expected
    assert re.search(r'class="tick"[^>]*>\s*10\s*<', dom)  # Å tick labels on the FSC axis
    assert dom.count('class="fsc-curve"') == 2 and 'class="resolution-mark"' in dom
    curves = re.findall(r'<polyline points="([^"]+)"[^>]*class="fsc-curve"', dom)
    assert len(curves) == 2
    for points in curves:
        assert float(points.split(",")[0]) > 38.5, points[:40]  # no DC shell (x = 38, FSC ±1 by construction)
    assert 'class="ctf-fit"' in dom and "power spectrum (blue) vs CTF² at" in text  # first item's CTF fit
    img = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert img.shape == (2600, 900)
    slices = _rects(dom, "slice")
    assert len(slices) == 12  # 4 maps x 3 orientations, all decoded
    for x, y, w, h in slices + _rects(dom, "iso-image") + _rects(dom, "thumb"):
        region = img[y + 2:y + h - 2, x + 2:x + w - 2]
        assert region.size and region.std() > 8, (x, y, w, h)  # an image, not a blank box
    width = re.search(r'data-scroll-width="(\d+)"', dom)
    assert width and int(width.group(1)) <= 900  # no horizontal scrolling of the page at 900 px

    # a commit's own page (what clicking it in the history opens): its population and its diff
    first = repo.log("main")[1][0]
    older_dom = _chromium(f"{base}/#rev={first}", tmp_path, height=1200)
    older = re.sub(r"<[^>]+>", " ", older_dom)
    assert "refine iteration 1" in older and "9.00 Å" in older and "6.50 Å" not in older
    assert f"viewing {first[:10]}" in older
    # ... and the branch selector names no branch (it showed the first branch in the list)
    assert re.search(r'<option value="" disabled="" selected="" class="no-branch">', older_dom), older_dom[:2000]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_private_server_shows_a_sign_in_page(tmp_path) -> None:
    repo = Repository.init(str(tmp_path / "r"))
    repo.commit(make_population(repo), message="secret work")
    secret = add_token(tmp_path / "t.toml", "viewer", "read")
    app = create_app(str(tmp_path / "r"), tmp_path / "t.toml", anonymous_read=False, access_log=False)
    with thread_server(app) as base:
        shot = tmp_path / "login.png"
        dom = _chromium(base + "/", tmp_path, height=900, shot=shot)
        assert re.search(r'<section id="login">', dom) and re.search(r'<main id="main" hidden', dom)
        # the hidden sections are not drawn (empty "Branches", "Species", ... cards showed below the form)
        below = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)[420:, 40:860]
        assert below.std() < 1.0, below.std()
        assert "Sign in" in dom and "secret work" not in dom
        assert httpx.get(f"{base}/api/overview", headers={"Authorization": f"Bearer {secret}"}).status_code == 200


def test_tilt_series_thumbnail_is_the_tilt_nearest_zero(tmp_path) -> None:
    import json

    import mrcfile
    from typer.testing import CliRunner

    from mrepo.api.item_views import raw_image
    from mrepo.cli.sim import app as sim_app
    from mrepo.io.sim_import import import_sim

    out = tmp_path / "sim"
    res = CliRunner().invoke(sim_app, ["tilts", "--out", str(out), "--seed", "2", "--particles", "4", "--size", "96",
                                       "--box", "32", "--max-tilt", "30", "--step", "15", "--one-file-per-image",
                                       "--species", "1"])
    assert res.exit_code == 0, res.output
    repo = Repository.init(str(tmp_path / "r"))
    import_sim(repo, out, copy=False)
    src = repo.source(next(iter(repo.population().sources.values())))
    item = repo.item(next(iter(src.items.values())))
    assert item.raw.format == "manifest"
    files = json.loads(repo.objects.get_blob(item.raw.hash))["files"]
    nearest = int(np.argmin(np.abs(item.imaging["tilt_angles"])))
    with mrcfile.open(files[nearest]["uri"].removeprefix("file://")) as m:
        expected = np.asarray(m.data, dtype=np.float32).reshape(96, 96)
    np.testing.assert_array_equal(raw_image(repo, item), expected)


@pytest.mark.parametrize("stored", [True, False], ids=["stored", "in-place"])
def test_movie_thumbnail_averages_a_few_evenly_spaced_frames(tmp_path, stored: bool) -> None:
    import mrcfile

    from mrepo.api.item_views import MAX_THUMBNAIL_FRAMES, raw_image
    from mrepo.graph import Item, RawData
    from mrepo.store import hash_file

    movie = np.random.default_rng(1).integers(-300, 300, (20, 24, 32)).astype(np.int16)
    path = tmp_path / "movie.mrc"
    with mrcfile.new(path) as m:
        m.set_data(movie)
        m.set_extended_header(np.zeros(16, dtype=np.int32))  # an extended header shifts the data
    repo = Repository.init(str(tmp_path / "r"))
    if stored:
        repo.objects.put_blob(path.read_bytes())
    item = Item("frames", "movie", RawData(hash_file(path), path.stat().st_size, uri=path.as_uri(), stored=stored),
                {"pixel_size": 1.0, "exposure": [1.0] * 20})
    if stored:
        path.unlink()  # only the repository holds it
    pick = np.unique(np.linspace(0, 19, MAX_THUMBNAIL_FRAMES).round().astype(int))
    np.testing.assert_allclose(raw_image(repo, item), movie[pick].astype(np.float32).mean(axis=0), rtol=1e-6)
