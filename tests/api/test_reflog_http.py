"""The server records every ref move it makes in its reflog, under the token's user name."""

from __future__ import annotations

from mrepo.graph import Repository
from tests.factories import make_population


def test_reflog_through_the_server_records_the_token_user(served) -> None:
    remote = Repository.open(served.url, served.opts("write"))
    remote.commit(make_population(remote), message="first", branch="lab")
    head = remote.commit(make_population(remote, seed=3), message="second", branch="lab")
    entries = remote.reflog("lab")  # read back over HTTP (list + GET of logs/refs/...)
    assert [e.new for e in entries][0] == head
    assert {e.who for e in entries} == {"writeer"}  # the server's principal, not a client claim
    assert entries[0].operation == "commit"
    # the server wrote them into its own store
    local = served.repo()
    assert [e.key for e in local.reflog("lab")] == [e.key for e in entries]
    remote.close()
