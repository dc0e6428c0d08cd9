"""Detector contrast end to end: `mrepo sim` dark data (one file per tilt) -> import -> `mrepo reconstruct`.

A reconstruction from the initial parameters must correlate positively with the true map when the
source's polarity is right, and be refused (exit 2, no commit) when it is forced wrong. The
commands are the real CLI (in-process through typer's runner; the refusal also as a subprocess,
for its exit status), on a local folder repository.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import torch

from mrepo.graph import Repository
from mrepo.kernels.fsc import fsc
from mrepo.workers.reconstruct import Reconstruction, ReconstructionError, check_reconstruction

SIM = ["--seed", "3", "--particles", "10", "--size", "160", "--box", "32", "--pixel-size", "2", "--snr", "0.5"]


class _Result:
    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def mrepo(*args: str, cwd: Path) -> _Result:
    """Run ``mrepo ARGS`` in-process with relative paths resolved against ``cwd``."""
    from typer.testing import CliRunner

    from mrepo.cli import app

    old = os.getcwd()
    os.chdir(cwd)
    try:
        r = CliRunner().invoke(app, list(args))
    finally:
        os.chdir(old)
    return _Result(r.exit_code, r.stdout, r.stderr)


def mrepo_process(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mrepo", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def _truth_fsc(repo: Repository, ds: Path, name: str) -> np.ndarray:
    """FSC (shells 0..box/2) of the committed half-map average of ``name`` against the simulator's true map."""
    sp = repo.species(repo.population().species[name])
    avg = (np.asarray(repo.objects.get_array(sp.half1)) + np.asarray(repo.objects.get_array(sp.half2))) / 2
    with mrcfile.open(ds / "species" / name / "map.mrc") as m:
        truth = np.array(m.data, np.float32)
    with mrcfile.open(ds / "species" / name / "mask.mrc") as m:
        mask = np.array(m.data, np.float32)
    return fsc(torch.from_numpy(avg.astype(np.float32)), torch.from_numpy(truth), torch.from_numpy(mask)).numpy()


@pytest.fixture(scope="module")
def dark_tilts(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dark")
    r = mrepo("sim", "tilts", "--out", "ds", *SIM, "--max-tilt", "30", "--step", "6", "--one-file-per-image", cwd=root)
    assert r.returncode == 0, r.stderr
    return root


def test_sim_writes_dark_particles_on_a_positive_mean_one_file_per_tilt(dark_tilts: Path) -> None:
    ds = dark_tilts / "ds"
    manifest = json.loads((ds / "dataset.json").read_text())
    assert manifest["contrast"] == "dark"
    files = manifest["items"][0]["images"]
    assert len(files) == 11 and "stack" not in manifest["items"][0]
    truth = json.loads((ds / "truth.json").read_text())["items"][0]
    assert truth["contrast"] == "dark" and truth["mean_counts"] == 19.0
    with mrcfile.open(ds / files[5]) as m:
        image = np.asarray(m.data, np.float64)
    assert image.ndim == 2 and abs(image.mean() - 19.0) < 0.5  # counts on a positive mean
    assert np.array_equal(image, np.round(image)) and image.min() >= 0  # Poisson counts


def test_reconstruction_from_initial_parameters_correlates_positively_with_the_truth(dark_tilts: Path) -> None:
    root = dark_tilts
    assert mrepo("init", "good", cwd=root).returncode == 0
    r = mrepo("-R", "good", "import", "sim", "ds", cwd=root)
    assert r.returncode == 0, r.stderr
    repo = Repository.open(str(root / "good"))
    src = repo.source(repo.population().sources["sim"])
    assert src.polarity == "dark"  # recorded by the simulator, kept by the import
    assert repo.item(next(iter(src.items.values()))).raw.format == "manifest"  # one MRC per tilt
    before = repo.head("main")
    r = mrepo("-R", "good", "reconstruct", "--json", cwd=root)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    commit = repo.get_commit(out["commit"])
    assert commit.parents == (before,) and commit.operation["name"] == "reconstruct"
    for name, row in out["species"].items():
        assert row["reference_correlation"] > 0.5 and row["half_correlation"] > 0.5, (name, row)
        curve = _truth_fsc(repo, root / "ds", name)
        low = curve[1:4]  # shells 1-3: 107, 53 and 36 Å (box 32 at 2 Å)
        assert (low > 0.5).all(), (name, curve[:6])


def test_wrong_polarity_is_refused_with_the_anti_correlation_message_and_commits_nothing(dark_tilts: Path) -> None:
    root = dark_tilts
    assert mrepo("init", "wrong", cwd=root).returncode == 0
    r = mrepo("-R", "wrong", "import", "sim", "ds", "--contrast", "light", cwd=root)
    assert r.returncode == 0, r.stderr
    repo = Repository.open(str(root / "wrong"))
    assert repo.source(repo.population().sources["sim"]).polarity == "light"
    head = repo.head("main")
    r = mrepo_process("-R", "wrong", "reconstruct", cwd=root)
    assert r.returncode == 2
    error = r.stderr.strip().splitlines()[-1]  # progress lines come first
    assert error.startswith("error: species") and "anti-correlates with its reference" in error
    assert "mrepo source contrast" in error and "nothing committed" in error
    assert repo.head("main") == head
    # the fix the message names: set the source's contrast, then the reconstruction is accepted
    r = mrepo("-R", "wrong", "source", "contrast", "sim", "dark", cwd=root)
    assert r.returncode == 0, r.stderr
    r = mrepo("-R", "wrong", "reconstruct", cwd=root)
    assert r.returncode == 0, r.stderr


def _rec(half1: np.ndarray, half2: np.ndarray, mask: np.ndarray) -> Reconstruction:
    curve = fsc(torch.from_numpy(half1), torch.from_numpy(half2), torch.from_numpy(mask)).double().numpy()
    return Reconstruction(half1, half2, curve, 10.0, (half1 + half2) / 2)


def _ball(box: int, radius: float) -> np.ndarray:
    r = np.linalg.norm(np.indices((box,) * 3) - box // 2, axis=0)
    return (r <= radius).astype(np.float32)


def test_half_maps_agreeing_only_through_their_mean_are_refused() -> None:
    rng = np.random.default_rng(0)
    box = 32
    mask = _ball(box, 12)
    # what unnormalised data give: both halves carry a large shared mean, the structure is noise
    h1 = (5.0 + rng.normal(0, 1, (box,) * 3)).astype(np.float32)
    h2 = (5.0 + rng.normal(0, 1, (box,) * 3)).astype(np.float32)
    rec = _rec(h1, h2, mask)
    assert rec.fsc[1] > 0.5  # the masked FSC is fooled at low frequency
    with pytest.raises(ReconstructionError, match="agree only through a shared mean"):
        check_reconstruction(rec, mask, 2.0, name="alpha")


def test_a_real_structure_passes_and_its_negative_is_refused() -> None:
    rng = np.random.default_rng(1)
    box = 32
    mask = _ball(box, 14)
    structure = _ball(box, 6) - 0.5 * _ball(box, 3)
    noisy = [(structure + rng.normal(0, 0.3, (box,) * 3)).astype(np.float32) for _ in range(2)]
    check = check_reconstruction(_rec(*noisy, mask), mask, 2.0, name="alpha", reference=structure)
    assert check.half_correlation > 0.5 and check.reference_correlation > 0.9
    with pytest.raises(ReconstructionError, match="anti-correlates"):
        check_reconstruction(_rec(-noisy[0], -noisy[1], mask), mask, 2.0, name="alpha", reference=structure)



def test_dark_frame_series_reconstructs_positively_and_refuses_the_wrong_sign(tmp_path: Path) -> None:
    from mrepo.io import import_sim
    from mrepo.sim import write_dataset
    from mrepo.workers.executors import LocalExecutor
    from mrepo.workers.reconstruct_run import reconstruct_population
    from tests.workers.simdata import frames_sim

    sim = frames_sim(n_particles=12, contrast="dark")  # one MRC stack of frames
    write_dataset(sim, tmp_path / "ds")
    good = Repository.init(str(tmp_path / "good"))
    import_sim(good, tmp_path / "ds")
    res = reconstruct_population(good, "main", LocalExecutor())
    for name in res.reconstructions:
        curve = _truth_fsc(good, tmp_path / "ds", name)
        assert (curve[1:3] > 0.5).all(), (name, curve[:6])
    wrong = Repository.init(str(tmp_path / "wrong"))
    import_sim(wrong, tmp_path / "ds", contrast="light")
    head = wrong.head("main")
    with pytest.raises(ReconstructionError, match="anti-correlates"):
        reconstruct_population(wrong, "main", LocalExecutor())
    assert wrong.head("main") == head
