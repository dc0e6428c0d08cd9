"""Maps by name, opened with zarr-python from a local folder, S3 (moto) and HTTP (a real uvicorn):
``<rev>/species/<name>/half1|half2|mask|filtered`` with OME-Zarr scale metadata; writes refused."""

from __future__ import annotations

import dataclasses

import httpx
import numpy as np
import pytest
import zarr

from mrepo.graph import Repository
from mrepo.graph.named import split_named_path
from mrepo.graph.zarr_store import NamedMapStore, ReadOnlyNamedPath, open_map
from mrepo.store import InvalidInput, RefNotFound, array_ref
from tests.factories import make_population


def _two_commits(repo: Repository) -> tuple[str, str, dict[str, np.ndarray]]:
    """Commit 1: species apo; commit 2: apo with a filtered map and a new half1. Returns the
    commits and the maps of commit 2."""
    c1 = repo.commit(make_population(repo), message="first")
    pop = repo.population()
    sp = repo.species(pop.species["apo"])
    rng = np.random.default_rng(7)
    new_half1 = rng.normal(size=(16, 16, 16)).astype(np.float32)
    filtered = rng.normal(size=(16, 16, 16)).astype(np.float32)
    sp2 = dataclasses.replace(sp, half1=repo.objects.put_array(new_half1), pixel_size=2.25,
                              metadata={**sp.metadata, "filtered": array_ref(repo.objects.put_array(filtered))})
    pop2 = dataclasses.replace(pop, species={**pop.species, "apo": sp2.save(repo.objects)})
    c2 = repo.commit(pop2, message="refined")
    maps = {"half1": new_half1, "half2": repo.objects.get_array(sp.half2), "mask": repo.objects.get_array(sp.mask),
            "filtered": filtered}
    return c1, c2, maps


def _check_ome(arr: zarr.Array, voxel: float) -> None:
    ms = arr.attrs["ome"]["multiscales"][0]
    assert [a["name"] for a in ms["axes"]] == ["z", "y", "x"]
    assert {a["unit"] for a in ms["axes"]} == {"angstrom"}
    assert ms["datasets"][0]["coordinateTransformations"] == [{"type": "scale", "scale": [voxel] * 3}]


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_named_maps_open_with_zarr_python(kind: str, make_url) -> None:
    url = make_url(kind)
    repo = Repository.init(url)
    c1, c2, maps = _two_commits(repo)
    store = NamedMapStore(url)  # opened by URL, as a user would
    for name, expected in maps.items():
        arr = zarr.open_array(store, path=f"main/species/apo/{name}", mode="r")
        np.testing.assert_array_equal(arr[...], expected)
        _check_ome(arr, 2.25)
        assert arr.attrs["mrepo"]["named"]["commit"] == c2
    # an older revision by ~N and by hash gives the older half-map and pixel size
    old = open_map(url, "main~1/species/apo/half1")
    first = repo.species(repo.population(c1).species["apo"])
    np.testing.assert_array_equal(old[...], repo.objects.get_array(first.half1))
    _check_ome(old, 1.5)
    assert open_map(url, f"{c1}/species/apo/mask").shape == (16, 16, 16)
    # writes and deletes through a named path are refused
    with pytest.raises(ValueError, match="read-only"):
        zarr.open_array(store, path="main/species/apo/half1", mode="a")
    with pytest.raises(ReadOnlyNamedPath, match="read-only"):
        import asyncio

        from zarr.core.buffer import default_buffer_prototype
        asyncio.run(store.set("main/species/apo/half1/c/0/0/0", default_buffer_prototype().buffer.from_bytes(b"x")))
    # clear errors for what does not exist
    with pytest.raises(RefNotFound, match="species 'nope' is not in the population"):
        open_map(url, "main/species/nope/half1")
    with pytest.raises(Exception, match="no filtered map"):
        open_map(url, "main~1/species/apo/filtered")
    with pytest.raises(InvalidInput, match="not a named map path"):
        open_map(url, "main/species/apo/denoiser")


def _check_ome_group(group: zarr.Group, expected: np.ndarray, voxel: float) -> None:
    """An OME-Zarr 0.5 image as the spec lays it out: multiscales on a group, datasets are its child arrays."""
    ms = group.attrs["ome"]["multiscales"][0]
    assert group.attrs["ome"]["version"] == "0.5" and [a["name"] for a in ms["axes"]] == ["z", "y", "x"]
    (level,) = ms["datasets"]
    assert level["path"] == "0" and level["coordinateTransformations"] == [{"type": "scale", "scale": [voxel] * 3}]
    np.testing.assert_array_equal(group[level["path"]][...], expected)


def test_named_maps_as_ome_zarr_image_groups(tmp_path) -> None:
    url = str(tmp_path / "r")
    repo = Repository.init(url)
    _, _, maps = _two_commits(repo)
    store = NamedMapStore(url)
    for name, expected in maps.items():
        _check_ome_group(zarr.open_group(store, path=f"main/species/apo/{name}.ome", mode="r"), expected, 2.25)
    assert split_named_path("main/species/apo/mask.ome/0/c/0/0/0") == ("main", "apo", "mask.ome", "0/c/0/0/0")
    with pytest.raises(InvalidInput, match="not a named map path"):
        split_named_path("main/species/apo/mask.ome/c/0/0/0")  # chunks live in level 0


def test_named_path_parsing_allows_slashes_in_revisions() -> None:
    assert split_named_path("origin/main/species/apo/mask/zarr.json") == ("origin/main", "apo", "mask", "zarr.json")
    assert split_named_path("main/species/species/half2/c/0/1/2") == ("main", "species", "half2", "c/0/1/2")
    assert split_named_path("v1/species/apo/filtered") == ("v1", "apo", "filtered", "")


def test_named_maps_over_http_with_zarr_python(tmp_path) -> None:
    from mrepo.api import add_token, create_app
    from tests.api.server import thread_server

    repo = Repository.init(str(tmp_path / "r"))
    _, c2, maps = _two_commits(repo)
    token = add_token(tmp_path / "t.toml", "reader", "read")
    app = create_app(str(tmp_path / "r"), tmp_path / "t.toml", anonymous_read=False, access_log=False)
    with thread_server(app) as base:
        opts = {"client_kwargs": {"headers": {"Authorization": f"Bearer {token}"}}}
        for name, expected in maps.items():
            arr = zarr.open_array(f"{base}/repo/named/main/species/apo/{name}", mode="r", storage_options=opts)
            np.testing.assert_array_equal(arr[...], expected)
            _check_ome(arr, 2.25)
            assert arr.attrs["mrepo"]["named"]["commit"] == c2
        group = zarr.open_group(f"{base}/repo/named/main/species/apo/half1.ome", mode="r", storage_options=opts)
        _check_ome_group(group, maps["half1"], 2.25)
        auth = {"Authorization": f"Bearer {token}"}
        level = httpx.get(f"{base}/repo/named/main/species/apo/half1.ome/0/zarr.json", headers=auth)
        assert level.status_code == 200 and level.headers["cache-control"] == "no-cache"  # follows the branch
        meta = httpx.get(f"{base}/repo/named/main/species/apo/half1/zarr.json", headers=auth)
        assert meta.status_code == 200 and meta.headers["cache-control"] == "no-cache"
        assert "access-control-allow-origin" not in meta.headers  # private server: no cross-origin reads
        # no token: 401; writes: 405 whatever the token; unknown species: 404 naming it
        assert httpx.get(f"{base}/repo/named/main/species/apo/half1/zarr.json").status_code == 401
        put = httpx.put(f"{base}/repo/named/main/species/apo/half1/c/0/0/0", content=b"x", headers=auth)
        assert put.status_code == 405 and "read-only" in put.json()["detail"]
        missing = httpx.get(f"{base}/repo/named/main/species/nope/half1/zarr.json", headers=auth)
        assert missing.status_code == 404 and "nope" in missing.json()["detail"]


def test_public_maps_are_readable_cross_origin(tmp_path) -> None:
    from mrepo.api import create_app
    from tests.api.server import thread_server

    repo = Repository.init(str(tmp_path / "r"))
    repo.commit(make_population(repo), message="x")
    app = create_app(str(tmp_path / "r"), None, anonymous_read=True, access_log=False)
    with thread_server(app) as base:
        r = httpx.get(f"{base}/repo/named/main/species/apo/mask/zarr.json", headers={"Origin": "https://example.org"})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"
        assert r.json()["attributes"]["ome"]["multiscales"][0]["axes"][0]["unit"] == "angstrom"
