"""Raw data referenced in place: ``verify`` hashes it whole (a changed voxel fails), and
``export relion`` writes raw data that lives only in the repository instead of pointing at
the original import path, or refuses in one line, writing nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import mrcfile
import pytest
import torch
from typer.testing import CliRunner

from mrepo.graph import Repository, verify
from mrepo.io.export_relion import export_relion
from mrepo.io.sim_import import import_sim
from mrepo.io.star import read_star
from mrepo.store import InvalidInput, hash_file

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mrepo.cli.sim import app

    out = tmp_path_factory.mktemp("sim") / "frames"
    res = CliRunner().invoke(app, ["frames", "--out", str(out), "--seed", "3", "--particles", "4", "--frames", "3",
                                   "--size", "128", "--box", "40"])
    assert res.exit_code == 0, res.output
    return out


def _item_stack(repo: Repository) -> Path:
    pop = repo.population()
    src = repo.source(next(iter(pop.sources.values())))
    item = repo.item(next(iter(src.items.values())))
    return Path(item.raw.uri.removeprefix("file://"))


def _imported(simulated: Path, tmp_path: Path, *, copy: bool) -> tuple[Path, Repository]:
    """A copy of the simulated folder at ``tmp_path/data`` imported into a new repository at
    ``tmp_path/r`` (raw data referenced in place, or copied in with ``copy``)."""
    data = tmp_path / "data"
    shutil.copytree(simulated, data)
    repo = Repository.init(str(tmp_path / "r"))
    import_sim(repo, data, copy=copy)
    return data, repo


def test_verify_hashes_raw_data_in_place(simulated: Path, tmp_path: Path) -> None:
    data, repo = _imported(simulated, tmp_path, copy=False)
    stack = _item_stack(repo)
    assert stack.is_file() and stack.is_relative_to(data)
    phases: list[str] = []
    ok = verify(repo.storage, progress=lambda phase, done, total: phases.append(phase))
    assert ok.ok, ok.problems
    # the display prefixes the command ("verify raw data: 1/1"); the phase must not repeat it
    assert "raw data" in phases and set(phases) <= {"verify", "raw data"}, phases

    with mrcfile.open(stack, mode="r+") as m:  # one voxel changes, header and size stay
        m.data[1, 7, 9] += 1.0
    bad = verify(repo.storage)
    assert not bad.ok
    assert any(str(stack) in p and "changed" in p for p in bad.problems), bad.problems
    assert verify(repo.storage, raw=False).ok  # the repository's own objects are intact

    stack.unlink()
    gone = verify(repo.storage)
    assert any(str(stack) in p and "missing" in p for p in gone.problems), gone.problems


def test_export_writes_raw_data_that_lives_only_in_the_repository(simulated: Path, tmp_path: Path) -> None:
    data, repo = _imported(simulated, tmp_path, copy=True)
    original = _item_stack(repo)
    key = hash_file(original)
    shutil.rmtree(data)  # the import folder is gone: only the repository holds the movie

    out = tmp_path / "export"
    export_relion(repo, "main", out)
    mics = read_star(out / "micrographs.star")["micrographs"]
    movie_column = "rlnMicrographMovieName" if "rlnMicrographMovieName" in mics else "rlnMicrographName"
    written = [(out / p) if not Path(p).is_absolute() else Path(p) for p in mics[movie_column]]
    raw_written = [p for p in written if "raw" in p.parts]
    assert raw_written, list(mics[movie_column])
    for p in raw_written:
        assert p.is_file() and p.is_relative_to(out) and not str(p).startswith(str(data))
        assert hash_file(p) == key  # byte-identical to what was imported


def test_export_refuses_raw_data_that_is_nowhere(simulated: Path, tmp_path: Path) -> None:
    _, repo = _imported(simulated, tmp_path, copy=False)
    stack = _item_stack(repo)
    stack.unlink()
    out = tmp_path / "export"
    with pytest.raises(InvalidInput, match="lives neither in the repository nor at .*re-import with --copy"):
        export_relion(repo, "main", out)
    assert not out.exists() or not any(out.iterdir())  # nothing written


def test_cli_verify_reports_the_changed_file_and_no_raw_skips_it(simulated: Path, tmp_path: Path) -> None:
    from mrepo.cli import app

    _, repo = _imported(simulated, tmp_path, copy=False)
    url = str(tmp_path / "r")
    stack = _item_stack(repo)
    with mrcfile.open(stack, mode="r+") as m:
        m.data[0, 3, 3] *= 2.0
    runner = CliRunner()
    bad = runner.invoke(app, ["verify", "--repo", url])
    assert bad.exit_code != 0 and str(stack) in bad.output.replace("\n", "") and "changed" in bad.output
    assert runner.invoke(app, ["verify", "--no-raw", "--repo", url]).exit_code == 0


def test_copied_tilt_images_are_kept_by_gc_and_travel_with_a_clone(tmp_path: Path) -> None:
    """A tilt series imported with --copy as one file per tilt: the files are referenced from the item
    (raw.parts), so gc keeps them, clone copies them and export writes them from the repository."""
    import json
    import time

    from mrepo.cli.sim import app as sim_app
    from mrepo.graph import clone, gc

    sim = tmp_path / "tilts"
    res = CliRunner().invoke(sim_app, ["tilts", "--out", str(sim), "--seed", "2", "--particles", "4", "--size", "96",
                                       "--box", "32", "--max-tilt", "30", "--step", "15", "--one-file-per-image",
                                       "--species", "1"])
    assert res.exit_code == 0, res.output
    repo = Repository.init(str(tmp_path / "r"))
    import_sim(repo, sim, copy=True)
    src = repo.source(next(iter(repo.population().sources.values())))
    item = repo.item(next(iter(src.items.values())))
    files = [f["hash"] for f in json.loads(repo.objects.get_blob(item.raw.hash))["files"]]
    assert item.raw.format == "manifest" and set(item.raw.parts) == set(files)
    gc(repo.storage, grace_seconds=0, now=time.time() + 5)
    assert all(repo.objects.has_object(h) for h in files)
    copy, _ = clone(str(tmp_path / "r"), str(tmp_path / "copy"))
    assert all(copy.objects.has_object(h) for h in files)
    shutil.rmtree(sim)  # only the repositories hold the tilt images now
    assert verify(copy.storage).ok
    out = tmp_path / "export"
    export_relion(copy, "main", out)
    written = sorted((out / "raw").glob("*/*.mrc"))
    assert sorted(hash_file(p) for p in written) == sorted(set(files))
