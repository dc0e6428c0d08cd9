"""Record schemas (mrepo.graph.schema): every record mrepo writes passes, malformed ones are
refused with a one-line message naming the kind and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from mrepo.graph import Population, Repository, merge_pull, open_pull
from mrepo.graph.schema import check_record_bytes, known_kinds, ref_target_kind, validate_record
from mrepo.store import CorruptObject, canonical_json, hash_bytes
from mrepo.store.errors import InvalidRecord
from mrepo.store.hashing import RECORD_TAG
from tests.factories import make_population

H = "0" * 64


def all_records(repo: Repository) -> dict[str, str]:
    out = {}
    for e in repo.storage.backend.list("objects/"):
        data = repo.storage.backend.get(e.key)
        if data.startswith(RECORD_TAG):
            h = e.key.removeprefix("objects/").replace("/", "")
            out[h] = check_record_bytes(h, data)[0]
    return out


def test_every_record_mrepo_writes_is_valid(tmp_path: Path) -> None:
    repo = Repository.init(str(tmp_path / "r"))
    pop = make_population(repo, n_items=2)
    repo.commit(pop, message="base", time="2024-01-01T00:00:00Z")
    repo.create_branch("feature")
    more = make_population(repo, n_items=1, species=("holo",), seed=9)
    repo.commit(Population(pop.name, {**pop.sources, "grid2": more.sources["grid1"]}, {**pop.species, **more.species}),
                message="holo",
                branch="feature", time="2024-01-01T00:00:01Z")
    repo.commit(Population(pop.name, pop.sources, pop.species, {"note": 1}), message="meta",
                time="2024-01-01T00:00:02Z")
    open_pull(repo, "feature", "main", "Add holo", time="2024-01-01T00:00:03Z")
    merge_pull(repo, 1, policy="allow", author="t", time="2024-01-01T00:00:04Z")
    kinds = set(all_records(repo).values())  # check_record_bytes raised on any invalid one
    assert {"commit", "population", "source", "item", "particles", "species", "pull-request",
            "collision-report"} <= kinds
    assert kinds <= set(known_kinds())


def _commit() -> dict:
    return {"parents": [{"@record": H}], "population": {"@record": H}, "author": "a", "time": "t", "message": "m",
            "operation": {"name": "commit"}, "mrepo_version": "0.1"}


@pytest.mark.parametrize("kind,change,match", [
    ("commit", {"parents": None}, "field parents: expected a list"),
    ("commit", {"parents": [H]}, r"field parents\[0\]: expected a record reference"),
    ("commit", {"population": {"@array": H}}, "field population: expected a record reference"),
    ("commit", {"operation": {}}, "field operation.name: required but missing"),
    ("commit", {"author": 3}, "field author: expected a string"),
    ("commit", {"extra": {"@blob": "xyz"}}, "field extra: expected a blob reference holding a 64-hex hash"),
    ("species", {}, "field name: required but missing"),
    ("pull-request", {}, "field number: required but missing"),
])
def test_malformed_bodies_are_refused(kind: str, change: dict, match: str) -> None:
    body = {**_commit(), **change} if kind == "commit" else change
    if "parents" in change and change["parents"] is None:
        body = {k: v for k, v in body.items() if k != "parents"} | {"parents": "x"}
    with pytest.raises(InvalidRecord, match=f"{kind} record: {match}"):
        validate_record(kind, body)


def test_unknown_kinds_are_refused_and_messages_are_one_line() -> None:
    with pytest.raises(InvalidRecord, match="unknown record kind 'note'") as info:
        validate_record("note", {"x": 1})
    assert "\n" not in str(info.value)
    validate_record("commit", _commit())


def test_check_record_bytes_checks_hash_form_and_schema() -> None:
    data = RECORD_TAG + b"commit\0" + canonical_json(_commit())
    assert check_record_bytes(hash_bytes(data), data)[0] == "commit"
    with pytest.raises(InvalidRecord):
        bad = RECORD_TAG + b"commit\0" + canonical_json({**_commit(), "time": 1})
        check_record_bytes(hash_bytes(bad), bad)
    with pytest.raises(CorruptObject, match="does not match its hash"):
        check_record_bytes(H, data)


@pytest.mark.parametrize("key,kind", [("refs/heads/main", "commit"), ("refs/tags/v1", "commit"),
                                      ("refs/pulls/3", "pull-request"), ("refs/remotes/o/main", "commit"),
                                      ("refs/remotes/o/pulls/3", "pull-request")])
def test_ref_target_kinds(key: str, kind: str) -> None:
    assert ref_target_kind(key) == kind
