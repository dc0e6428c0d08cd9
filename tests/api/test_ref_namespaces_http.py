"""Ref namespaces through a real server: ``heads/dev`` and ``heads/dev/sub`` never both exist.
The client refuses the clash before sending (RefConflict), and the server answers 409 to a
raw request that tries it anyway, in either order; a writer cannot block a protected ``main``."""

from __future__ import annotations

import httpx
import pytest

from mrepo.graph import Population, Repository, push
from mrepo.store import RefConflict
from tests.api.conftest import Served


def _head(served: Served, tmp_path) -> tuple[Repository, str]:
    local = Repository.init(str(tmp_path / "local"))
    head = local.commit(Population("p"), message="m", time="2024-06-01T00:00:01Z")
    push(local, served.url, "main", remote_branch="dev", options=served.opts("write"))
    return local, head


def test_client_refuses_a_clashing_branch(served: Served, tmp_path) -> None:
    _, head = _head(served, tmp_path)
    remote = Repository.open(served.url, served.opts("write"))
    with pytest.raises(RefConflict, match="refs/heads/dev exists"):
        remote.refs.update("refs/heads/dev/sub", head, None)
    assert sorted(remote.branches()) == ["dev"]


@pytest.mark.parametrize("first,second", [("heads/dev", "heads/dev/sub"), ("heads/x/y", "heads/x"),
                                          ("heads/dev", "heads/dev/a/b"), ("tags/v1", "tags/v1/rc")])
def test_server_answers_409_to_a_clash(served: Served, tmp_path, first: str, second: str) -> None:
    _, head = _head(served, tmp_path)
    auth = {**served.auth("maintain"), "If-None-Match": "*", "Content-Type": "application/octet-stream"}
    if first != "heads/dev":
        assert httpx.put(f"{served.url}/refs/{first}", content=head + "\n", headers=auth).status_code == 201
    answer = httpx.put(f"{served.url}/refs/{second}", content=head + "\n", headers=auth)
    assert answer.status_code == 409, answer.text
    assert "refs/" + first in answer.json().get("detail", answer.text)
    assert httpx.get(f"{served.url}/refs/{second}", headers=served.auth("read")).status_code == 404
def test_a_writer_cannot_block_main(served: Served, tmp_path) -> None:
    _, head = _head(served, tmp_path)
    auth = {**served.auth("write"), "If-None-Match": "*", "Content-Type": "application/octet-stream"}
    answer = httpx.put(f"{served.url}/refs/heads/main/x", content=head + "\n", headers=auth)
    assert answer.status_code in (403, 409), answer.text
    maintainer = {**served.auth("maintain"), "If-None-Match": "*", "Content-Type": "application/octet-stream"}
    assert httpx.put(f"{served.url}/refs/heads/main", content=head + "\n", headers=maintainer).status_code == 201
