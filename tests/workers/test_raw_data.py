"""Raw data as every image path sees it: layouts read lazily, verified, normalised, polarity applied."""

from __future__ import annotations

import json
import time
import tracemalloc
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from mrepo.graph import DataSource, Item, Population, RawData, Repository
from mrepo.graph.merge import merge_populations
from mrepo.sim import render_tilts
from mrepo.store import CorruptObject, InvalidInput, hash_file
from mrepo.store.hashing import _FILE_HASHES
from mrepo.workers.raw_data import RawStack, exposure_statistics, open_exposures, read_exposures
from tests.workers.simdata import frames_sim, tilts_sim


def _mrc(path: Path, data: np.ndarray, voxel: float = 2.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with mrcfile.new(path, overwrite=True) as m:  # plain mrcfile, as other programs write them
        m.set_data(np.asarray(data, dtype=np.float32))
        m.voxel_size = voxel
    return path


def _in_place(path: Path) -> RawData:
    return RawData(hash_file(path), path.stat().st_size, "mrc", uri=path.resolve().as_uri())


def _manifest(repo: Repository, entries: list[tuple[Path, int | None]]) -> RawData:
    files = []
    for path, section in entries:
        e = {"hash": hash_file(path), "size": path.stat().st_size, "format": "mrc", "uri": path.resolve().as_uri()}
        if section is not None:
            e["section"] = section
        files.append(e)
    data = json.dumps({"format": "mrepo-raw-manifest/1", "files": files}, sort_keys=True).encode()
    return RawData(repo.objects.put_blob(data), len(data), "manifest", stored=True)


def _item(raw: RawData, kind: str = "tilts") -> Item:
    return Item(kind, "ts", raw, {"pixel_size": 2.0})


@pytest.fixture()
def stack(tmp_path: Path) -> np.ndarray:
    return np.random.default_rng(0).normal(10.0, 2.0, (5, 24, 32)).astype(np.float32)


def test_every_layout_reads_the_same_exposures(tmp_path: Path, stack: np.ndarray) -> None:
    repo = Repository.init(str(tmp_path / "repo"))
    whole = _mrc(tmp_path / "ts.mrcs", stack)
    singles = [_mrc(tmp_path / f"tilt_{k}.mrc", stack[k]) for k in range(5)]  # 2-D MRC per tilt (RELION 5)
    stored = RawData(repo.objects.put_blob_file(whole), whole.stat().st_size, "mrc", stored=True)
    layouts = {
        "stack in place": _in_place(whole),
        "stack stored in the repository": stored,
        "one file per tilt": _manifest(repo, [(p, None) for p in singles]),
        "k@stack sections": _manifest(repo, [(whole, k) for k in range(5)]),
    }
    for what, raw in layouts.items():
        raw_stack = RawStack.open(repo.objects, _item(raw))
        assert raw_stack.n == 5 and raw_stack.shape == (24, 32), what
        assert np.array_equal(raw_stack.stack(), stack), what
    # sections in another order and a subset (an excluded tilt): exactly those images, in that order
    picked = RawStack.open(repo.objects, _item(_manifest(repo, [(whole, 3), (whole, 0), (singles[4], None)])))
    assert np.array_equal(picked.stack(), stack[[3, 0, 4]])


def test_a_stack_with_an_extended_header_is_read(tmp_path: Path, stack: np.ndarray) -> None:
    """MRC files with an extended header (nsymbt > 0, as microscope software writes them) read in place and stored."""
    repo = Repository.init(str(tmp_path / "repo"))
    path = _mrc(tmp_path / "ts.mrcs", stack)
    with mrcfile.open(path, mode="r+") as m:
        m.set_extended_header(np.arange(96, dtype=np.uint8))
    stored = RawData(repo.objects.put_blob_file(path), path.stat().st_size, "mrc", stored=True)
    for raw in (_in_place(path), stored):
        assert np.array_equal(RawStack.open(repo.objects, _item(raw)).stack(), stack)


def test_changed_or_missing_raw_files_are_refused(tmp_path: Path, stack: np.ndarray) -> None:
    repo = Repository.init(str(tmp_path / "repo"))
    path = _mrc(tmp_path / "ts.mrcs", stack)
    raw = _in_place(path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptObject, match="does not match its hash"):
        RawStack.open(repo.objects, _item(raw))
    path.unlink()
    with pytest.raises(InvalidInput, match="not found"):
        RawStack.open(repo.objects, _item(raw))
    with pytest.raises(InvalidInput, match="section 9 of"):
        other = _mrc(tmp_path / "other.mrcs", stack)
        RawStack.open(repo.objects, _item(_manifest(repo, [(other, 8)])))


def test_raw_data_changed_after_a_read_is_refused(tmp_path: Path, stack: np.ndarray) -> None:
    """Raw files are hashed once per process while unchanged (not every iteration); a file, or a stored
    blob, written to after a successful read is hashed again and refused."""
    repo = Repository.init(str(tmp_path / "repo"))
    path = _mrc(tmp_path / "ts.mrcs", stack)
    stored = RawData(repo.objects.put_blob_file(path), path.stat().st_size, "mrc", stored=True)
    time.sleep(1.1)  # hashes of files changed within the last second are not remembered
    blob, offset = repo.objects.blob_file(stored.hash)
    assert offset == len(b"blob\0") and blob.read_bytes()[offset:] == path.read_bytes()
    for raw, file, message in ((_in_place(path), path, "does not match its hash"), (stored, blob, "is corrupt")):
        for _ in range(2):  # the second read is served by the per-process hash
            assert np.array_equal(RawStack.open(repo.objects, _item(raw)).stack(), stack)
        assert (str(file.resolve()), file is not blob) in _FILE_HASHES  # remembered
        with open(file, "r+b") as f:  # same size, one bit changed in place
            f.seek(-1, 2)
            last = f.read(1)
            f.seek(-1, 2)
            f.write(bytes([last[0] ^ 1]))
        with pytest.raises(CorruptObject, match=message):
            RawStack.open(repo.objects, _item(raw))


def test_exposures_are_read_lazily(tmp_path: Path) -> None:
    big = np.zeros((16, 1024, 1024), np.float32)  # 64 MiB on disk
    big[7] = 1.0
    path = _mrc(tmp_path / "big.mrcs", big)
    del big
    repo = Repository.init(str(tmp_path / "repo"))
    tracemalloc.start()
    try:
        raw = RawStack.open(repo.objects, _item(_in_place(path)))
        image = raw.exposure(7)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert image.mean() == 1.0
    # verification streams the file in 8 MiB chunks; the 64 MiB of data are never held
    assert peak < 24 * 2**20, f"opening and reading one exposure allocated {peak / 2**20:.1f} MiB"


def test_dark_tilts_become_unit_variance_positive_density(tmp_path: Path) -> None:
    sim = tilts_sim(n_particles=6, size=128, contrast="dark")
    clean = render_tilts(sim.truth, sim.species, 2)  # positive density convolved with the CTF
    path = _mrc(tmp_path / "ts.mrc", sim.data)
    repo = Repository.init(str(tmp_path / "repo"))
    item = _item(_in_place(path))
    lazy = open_exposures(repo.objects, item, "dark")
    assert np.array_equal(lazy.region(2, slice(10, 40), slice(5, 70)), lazy.exposure(2)[10:40, 5:70])
    for polarity, sign in (("dark", 1), ("light", -1)):
        images = read_exposures(repo.objects, item, polarity).numpy().astype(np.float64)
        for i in range(len(images)):
            assert abs(images[i].mean()) < 1e-4 and abs(images[i].std() - 1) < 1e-4  # per tilt (M: TiltSeries)
            r = np.corrcoef(images[i].ravel(), clean[i].ravel())[0, 1]
            assert sign * r > 0.2, (polarity, i, r)


def test_frames_share_the_scale_of_their_average(tmp_path: Path) -> None:
    sim = frames_sim(n_particles=6, size=128, n_frames=4, contrast="dark")
    path = _mrc(tmp_path / "fs.mrc", sim.data)
    repo = Repository.init(str(tmp_path / "repo"))
    raw = RawStack.open(repo.objects, _item(_in_place(path), "frames"))
    offset, scale = exposure_statistics(raw, "frames")
    assert np.all(scale == scale[0])  # M: one scale for all frames, from the average
    images = read_exposures(repo.objects, _item(_in_place(path), "frames"), "dark").numpy().astype(np.float64)
    lazy = open_exposures(repo.objects, _item(_in_place(path), "frames"), "dark")
    assert np.allclose(lazy.region(1, slice(3, 50), slice(60, 90)), images[1, 3:50, 60:90], atol=1e-5)
    average = images.mean(0)
    assert abs(average.mean()) < 1e-4 and abs(average.std() - 1) < 1e-3
    assert abs(images.mean()) < 1e-3 and images.std() > 1.5  # single frames are noisier than their average


def test_source_polarity_record_keeps_old_hashes_and_merges(tmp_path: Path) -> None:
    repo = Repository.init(str(tmp_path / "repo"))
    light = DataSource("grid")
    assert "polarity" not in light.to_body()  # records from before the field hash as they did
    dark = DataSource("grid", polarity="dark")
    h = dark.save(repo.objects)
    assert DataSource.load(repo.objects, h).polarity == "dark" and h != light.save(repo.objects)
    with pytest.raises(InvalidInput, match="use 'dark' or 'light'"):
        DataSource("grid", polarity="bright").to_body()
    base = Population("p", {"grid": light.save(repo.objects)})
    ours = Population("p", {"grid": h})
    merged, report = merge_populations(repo.objects, base, ours, base)
    assert not report.conflicts and DataSource.load(repo.objects, merged.sources["grid"]).polarity == "dark"


def test_lazy_patches_extract_what_the_whole_stack_gives(tmp_path: Path) -> None:
    """extract_groups from the lazily read exposures equals extraction from the whole normalised stack,
    for frames and tilts, particles inside and across every edge, several crop-size groups."""
    import torch

    from mrepo.workers.imaging import extract_groups

    rng = np.random.default_rng(3)
    for kind, stack in (("frames", rng.normal(5.0, 1.0, (4, 60, 80))), ("tilts", rng.normal(-3.0, 2.0, (5, 70, 50)))):
        path = _mrc(tmp_path / f"{kind}.mrc", stack)
        repo = Repository.init(str(tmp_path / f"repo-{kind}"))
        item = _item(_in_place(path), kind)
        lazy, whole = open_exposures(repo.objects, item, "dark"), read_exposures(repo.objects, item, "dark")
        assert lazy.shape == tuple(whole.shape)
        n, h, w = whole.shape
        centres = torch.tensor([[x, y] for x in (-20, 0, 3, w // 2, w - 2, w + 30) for y in (-5, 1, h // 2, h - 1)],
                               dtype=torch.float64)[:, None].expand(-1, n, 2).clone()
        centres += torch.from_numpy(rng.integers(-2, 3, centres.shape)).double()  # moves per exposure
        sizes = np.array([16, 12, 16, 8, 12][:n])
        for a, b in zip(extract_groups(whole, centres, 16, 32, sizes, 2.0),
                        extract_groups(lazy, centres, 16, 32, sizes, 2.0)):
            assert torch.equal(a.exposures, b.exposures) and a.size == b.size
            assert torch.equal(a.ft, b.ft), (kind, a.size, float((a.ft - b.ft).abs().max()))
            assert float(a.ft.abs().max()) > 0


def test_lazy_patches_hold_only_their_pixels(tmp_path: Path) -> None:
    """Opening a 160 MiB tilt stack and extracting a particle batch from it allocates a small fraction
    of the stack (the statistics pass holds one exposure at a time; the whole stack would be 160 MiB)."""
    import torch

    from mrepo.workers.imaging import extract_groups

    path = tmp_path / "big.mrc"
    with mrcfile.new_mmap(path, shape=(40, 1024, 1024), mrc_mode=2, overwrite=True) as m:
        for k in range(40):
            m.data[k] = np.random.default_rng(k).normal(1.0, 1.0, (1024, 1024)).astype(np.float32)
    repo = Repository.init(str(tmp_path / "repo"))
    tracemalloc.start()
    try:
        lazy = open_exposures(repo.objects, _item(_in_place(path)), "light")
        centres = torch.from_numpy(np.random.default_rng(1).uniform(0, 1024, (8, 40, 2))).round()
        (group,) = extract_groups(lazy, centres, 32, 64, np.full(40, 32), 2.0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert group.ft.shape == (8, 40, 64, 33)  # the patches (5 MiB of crops) and one exposure's statistics
    assert peak < 40 * 2**20, f"lazy extraction allocated {peak / 2**20:.1f} MiB for a 160 MiB stack"
