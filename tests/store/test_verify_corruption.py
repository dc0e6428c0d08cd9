"""Any single changed byte in any stored object (record, blob, array chunk, zarr.json) is
reported by ``verify``; removing an object is reported too."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mrepo.graph import Repository, verify
from tests.factories import make_population


@pytest.fixture(scope="module")
def small_repo(tmp_path_factory) -> Repository:
    """A committed population: 2 items, 1 species (records, blobs, 7 arrays)."""
    repo = Repository.init(str(tmp_path_factory.mktemp("corrupt") / "repo"))
    repo.commit(make_population(repo, n_items=2), message="first")
    repo.objects.max_workers = 2
    return repo


def stored_files(repo: Repository) -> list[Path]:
    root = Path(repo.url)
    return sorted(p for sub in ("objects", "arrays") for p in (root / sub).rglob("*") if p.is_file())


def test_small_repo_verifies_and_holds_every_object_kind(small_repo: Repository) -> None:
    report = verify(small_repo.storage, workers=2)
    assert report.ok, report.problems
    files = stored_files(small_repo)
    objects = [p for p in files if "objects" in p.parts]
    arrays = {p.relative_to(small_repo.url).parts[1] for p in files if "arrays" in p.parts}
    assert report.checked == len(objects) + len(arrays)  # everything stored is reachable and was checked
    assert any(p.read_bytes().startswith(b"blob\0") for p in objects)
    assert any(p.name == "zarr.json" for p in files) and any("/c/" in p.as_posix() for p in files)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_flipped_byte_is_reported(small_repo: Repository, data: st.DataObject) -> None:
    files = stored_files(small_repo)
    path = data.draw(st.sampled_from(files), label="file")
    original = path.read_bytes()
    offset = data.draw(st.integers(0, len(original) - 1), label="offset")
    flip = data.draw(st.integers(1, 255), label="xor")
    changed = bytearray(original)
    changed[offset] ^= flip
    path.write_bytes(bytes(changed))
    try:
        report = verify(small_repo.storage, workers=2)
    finally:
        path.write_bytes(original)
    assert not report.ok, f"{path} byte {offset} ^ {flip} went unnoticed"
    rel = path.relative_to(small_repo.url).as_posix()
    h = rel.split("/")[1] if rel.startswith("arrays/") else rel.removeprefix("objects/").replace("/", "")
    assert any(h in p for p in report.problems), report.problems
    assert verify(small_repo.storage, workers=2).ok


@pytest.mark.parametrize("which", ["record", "blob", "chunk", "zarr.json"])
def test_missing_object_is_reported(small_repo: Repository, which: str) -> None:
    files = stored_files(small_repo)
    if which == "chunk":
        path = next(p for p in files if "/c/" in p.as_posix())
    elif which == "zarr.json":
        path = next(p for p in files if p.name == "zarr.json")
    else:
        want = b"blob\0" if which == "blob" else b"record\0"
        path = next(p for p in files if "objects" in p.parts and p.read_bytes().startswith(want)
                    and b"commit" not in p.read_bytes()[:20])
    original = path.read_bytes()
    os.unlink(path)
    try:
        report = verify(small_repo.storage, workers=2)
    finally:
        path.write_bytes(original)
    assert not report.ok
    assert any("missing" in p or "corrupt" in p for p in report.problems)
