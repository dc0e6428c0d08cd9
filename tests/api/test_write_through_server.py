"""Write commands against ``-R http://…``: records reach the server leaves first, only before the ref moves."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mrepo.graph import Repository, verify
from mrepo.store import MrepoError
from tests.api.conftest import Served

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "io"))
from io_projects import relion_spa  # noqa: E402 - RELION files laid out as RELION writes them


def _objects(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in (root / "objects").rglob("*") if p.is_file()} \
        if (root / "objects").exists() else set()


def test_import_relion_spa_through_the_server(served: Served, tmp_path) -> None:
    from mrepo.io import import_relion_spa

    proj = relion_spa(tmp_path / "proj")
    repo = Repository.open(served.url, served.opts("maintain"))
    res = import_relion_spa(repo, proj["particles"], source="mics", project=tmp_path / "proj", dose_per_frame=1.5)
    server = served.repo()
    assert server.head("main") == res.commit
    assert sorted(server.population().sources) == ["mics"]
    report = verify(server.storage)
    assert report.ok, report.problems


def test_failed_write_sends_no_records(served: Served, tmp_path) -> None:
    """Bad input (a particle naming an unknown micrograph): nothing reaches the server."""
    from mrepo.io import import_relion_spa

    proj = relion_spa(tmp_path / "proj", particles=[["Other/none.mrc", 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1e4, 1e4,
                                                     0.0, 1]])
    repo = Repository.open(served.url, served.opts("maintain"))
    before = _objects(served.path)
    with pytest.raises(MrepoError):
        import_relion_spa(repo, proj["particles"], source="mics", project=tmp_path / "proj", dose_per_frame=1.5)
    assert _objects(served.path) == before
    assert served.repo().head("main") is None
