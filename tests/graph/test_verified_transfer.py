"""Nothing received is trusted: clone/fetch/pull/push verify every object against its name
before it becomes visible, replace damaged objects they find present, refuse malformed
records; ``verify --repair REMOTE`` restores damaged objects; ref namespaces never clash;
refs point only at records of their kind."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable

import numpy as np
import pytest
from typer.testing import CliRunner

from mrepo.cli import app
from mrepo.graph import DataSource, Population, Repository, clone, fetch, push, repair, verify
from mrepo.store import CorruptObject, InvalidInput, RefConflict, canonical_json, hash_bytes, references
from mrepo.store.errors import InvalidRecord
from mrepo.store.hashing import RECORD_TAG
from mrepo.store.objects import array_prefix, object_key
from tests.factories import make_item, make_population

T1, T2 = "2024-05-01T00:00:01Z", "2024-05-01T00:00:02Z"
DESTINATIONS = ["local", "memory", pytest.param("s3", marks=pytest.mark.s3)]


def source(make_url: Callable[[str], str]) -> tuple[Repository, str]:
    src = Repository.init(make_url("local"))
    return src, src.commit(make_population(src, n_items=2), message="first", time=T1)


def closure(repo: Repository, head: str) -> dict[str, str]:
    """hash -> type of everything ``head`` reaches."""
    out: dict[str, str] = {}
    stack = [("record", head)]
    while stack:
        kind, h = stack.pop()
        if h in out:
            continue
        out[h] = kind
        if kind == "record":
            stack.extend(references(repo.objects.get_record(h)))
    return out


def flip(repo: Repository, key: str, offset: int = -3) -> None:
    """Flip one bit of the stored file ``key`` (written below every check, as a bad disk would)."""
    data = bytearray(repo.storage.backend.get(key))
    data[offset] ^= 0x10
    repo.storage.backend.put(key, bytes(data))


def pick(repo: Repository, head: str, what: str) -> tuple[str, str]:
    """(hash, stored key) of one object of the given sort in ``head``'s closure."""
    objs = closure(repo, head)
    if what == "record":
        h = next(h for h, k in sorted(objs.items()) if k == "record" and repo.objects.get_record_with_kind(h)[0]
                 == "particles")
        return h, object_key(h)
    if what == "blob":
        h = next(h for h, k in sorted(objs.items()) if k == "blob")
        return h, object_key(h)
    h = next(h for h, k in sorted(objs.items()) if k == "array")
    first_chunk = sorted(repo.objects.array_meta(h).chunk_digests)[0]
    return h, array_prefix(h) + ("zarr.json" if what == "zarr.json" else first_chunk)


def refs_of(repo: Repository) -> list[str]:
    return [k for k, _ in repo.refs.list("refs/")]


@pytest.mark.parametrize("dst_kind", DESTINATIONS)
@pytest.mark.parametrize("what", ["record", "blob", "chunk", "zarr.json"])
def test_clone_refuses_a_tampered_object(make_url: Callable[[str], str], dst_kind: str, what: str) -> None:
    src, head = source(make_url)
    h, key = pick(src, head, what)
    flip(src, key, offset=len(src.storage.backend.get(key)) // 2)
    dst_url = make_url(dst_kind)
    with pytest.raises(CorruptObject, match=f"{h}.*received from {src.url}"):
        clone(src.url, dst_url)
    dst = Repository.open(dst_url)
    assert refs_of(dst) == []  # no ref, and nothing referencing the bad object
    if what in ("record", "blob"):
        assert not dst.objects.has_object(h)
    else:
        assert not dst.objects.has_array(h)
    parents = [p for p, k in closure(src, head).items() if k == "record" and p != h
               and any(c == h for _, c in references(src.objects.get_record(p)))] if what != "record" else []
    assert all(not dst.objects.has_object(p) for p in parents)


@pytest.mark.parametrize("what", ["record", "chunk"])
def test_push_and_fetch_refuse_tampered_objects(make_url: Callable[[str], str], what: str) -> None:
    src, head = source(make_url)
    h, key = pick(src, head, what)
    flip(src, key)
    remote = Repository.init(make_url("memory"))
    with pytest.raises(CorruptObject, match=h):
        push(src, remote.url)
    assert remote.head() is None
    local = Repository.init(make_url("local"))
    local.add_remote("origin", src.url)
    with pytest.raises(CorruptObject, match=h):
        fetch(local, "origin")
    assert refs_of(local) == []


def _bad_record(kind: str, payload: bytes) -> tuple[bytes, str]:
    data = RECORD_TAG + kind.encode() + b"\0" + payload
    return data, hash_bytes(data)


def _commit_body(repo: Repository, head: str) -> dict:
    return repo.objects.get_record(head, "commit")


@pytest.mark.parametrize("case,match", [
    ("whitespace", "not in canonical form"),
    ("duplicate", "duplicate key"),
    ("nan", "NaN is not allowed"),
    ("no-parents", "field parents: required but missing"),
    ("unknown-kind", "unknown record kind 'bogus'"),
    ("bad-ref", r"field population: expected a record reference"),
])
def test_malformed_records_are_refused_by_clone(make_url: Callable[[str], str], case: str, match: str) -> None:
    src, head = source(make_url)
    body = _commit_body(src, head)
    text = canonical_json(body)
    if case == "whitespace":
        data, h = _bad_record("commit", json.dumps(body, sort_keys=True, indent=1).encode())
    elif case == "duplicate":
        data, h = _bad_record("commit", text[:-1] + b',"message":"other"}')
    elif case == "nan":
        data, h = _bad_record("commit", text[:-1] + b',"z":NaN}')
    elif case == "no-parents":
        data, h = _bad_record("commit", canonical_json({k: v for k, v in body.items() if k != "parents"}))
    elif case == "unknown-kind":
        data, h = _bad_record("bogus", text)
    else:
        data, h = _bad_record("commit", canonical_json({**body, "population": {"@record": "nothex"}}))
    src.storage.backend.put(object_key(h), data)  # bytes hash to their name: only the form is wrong
    src.storage.backend.cas("refs/heads/evil", None, (h + "\n").encode())  # below every check
    dst_url = make_url("local")
    with pytest.raises(InvalidRecord, match=match):
        clone(src.url, dst_url)
    dst = Repository.open(dst_url)
    assert refs_of(dst) == [] and not dst.objects.has_object(h)
    problems = verify(src.storage).problems
    assert any(h in p and "invalid" in p for p in problems), problems


@pytest.mark.parametrize("what", ["commit", "zarr.json", "blob"])
def test_fetch_replaces_a_damaged_present_object(make_url: Callable[[str], str], what: str) -> None:
    src, head = source(make_url)
    dst, _ = clone(src.url, make_url("local"))
    if what == "commit":
        h, key = head, object_key(head)
    else:  # an array or blob referenced by a record the next fetch brings
        h, key = pick(dst, head, what)
        dst.storage.backend.delete(object_key(head))  # the commit is missing: the fetch walks down again
        for rec, kind in closure(src, head).items():
            if kind == "record" and rec != head:
                dst.storage.backend.delete(object_key(rec))
    if dst.storage.backend.exists(key):
        flip(dst, key, offset=len(dst.storage.backend.get(key)) // 2)
    assert not verify(dst.storage).ok
    stats = fetch(dst, "origin")
    assert stats.records >= 1
    assert verify(dst.storage).ok, verify(dst.storage).problems
    assert dst.objects.verify_object({"zarr.json": "array", "blob": "blob"}.get(what, "record"), h) is None


def test_verify_repair_from_a_remote(make_url: Callable[[str], str], tmp_path) -> None:
    src, head = source(make_url)
    dst, _ = clone(src.url, str(tmp_path / "dst"))
    damaged = {}
    for what in ("record", "blob", "chunk"):
        h, key = pick(dst, head, what)
        flip(dst, key)
        damaged[h] = what
    h_missing, _ = pick(dst, head, "zarr.json")
    h_missing = next(h for h, k in closure(dst, head).items() if k == "array" and h not in damaged)
    dst.storage.backend.delete(array_prefix(h_missing) + "zarr.json")
    report = verify(dst.storage)
    assert {h for _, h in report.damaged} == set(damaged) | {h_missing}

    runner = CliRunner()
    bad = runner.invoke(app, ["verify", "--repo", str(tmp_path / "dst"), "--json"])
    assert bad.exit_code != 0 and len(json.loads(bad.stdout)["problems"]) >= 4
    result = runner.invoke(app, ["verify", "--repo", str(tmp_path / "dst"), "--repair", "origin", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["ok"] and doc["problems"] == [] and len(doc["repaired"]) == 4
    assert verify(dst.storage).ok


def test_repair_reports_what_the_remote_cannot_provide(make_url: Callable[[str], str]) -> None:
    src, head = source(make_url)
    dst, _ = clone(src.url, make_url("local"))
    h, key = pick(dst, head, "chunk")
    flip(dst, key)
    flip(src, key)  # the remote's copy is damaged too
    out, final = repair(dst.storage, src.storage)
    assert not final.ok and out.repaired == [] and any(h in f for f in out.failed)


# ----------------------------------------------------------------------------- refs


@pytest.mark.parametrize("kind", ["local", "memory", pytest.param("s3", marks=pytest.mark.s3)])
def test_ref_namespaces_never_clash(make_url: Callable[[str], str], kind: str) -> None:
    repo = Repository.init(make_url(kind))
    head = repo.commit(make_population(repo, n_items=1), message="m", time=T1)
    repo.create_branch("dev/sub", head)
    with pytest.raises(RefConflict, match="refs/heads/main/x"):
        repo.create_branch("main/x", head)
    with pytest.raises(RefConflict, match="refs/heads/dev/sub exists below it"):
        repo.create_branch("dev", head)
    with pytest.raises(RefConflict):
        repo.create_tag("v1/a", head) if repo.create_tag("v1", head) else None
    assert sorted(repo.branches()) == ["dev/sub", "main"] and repo.tags() == {"v1": head}


def test_refs_point_only_at_records_of_their_kind(make_url: Callable[[str], str]) -> None:
    repo = Repository.init(make_url("local"))
    head = repo.commit(make_population(repo, n_items=1), message="m", time=T1)
    population = repo.get_commit(head).population
    with pytest.raises(InvalidInput, match="refs/heads/x may point only at a commit record"):
        repo.refs.update("refs/heads/x", population, None)
    with pytest.raises(InvalidInput, match="refs/pulls/1 may point only at a pull-request record"):
        repo.refs.update("refs/pulls/1", head, None)
    with pytest.raises(InvalidInput, match="invalid ref"):
        repo.refs.update("refs/pulls/0", head, None)
    assert repo.branches() == {"main": head}


def test_a_refused_array_leaves_no_chunk_files(make_url: Callable[[str], str]) -> None:
    src = Repository.init(make_url("local"))
    arr = np.random.default_rng(4).normal(size=(64, 8)).astype(np.float32)
    h = src.objects.put_array(arr, chunks=(4, 8))  # 16 chunk files
    item = dataclasses.replace(make_item(src, "fov"), models={"shifts": h})
    src.commit(Population("p", {"g": DataSource("g", {item.key: item.save(src.objects)}).save(src.objects)}),
               message="m", time=T1)
    flip(src, array_prefix(h) + "c/15/0")
    dst = Repository.init(make_url("local"))
    with pytest.raises(CorruptObject, match=f"array {h} chunk c/15/0"):
        fetch(dst, src.url)
    assert list(dst.storage.backend.list(array_prefix(h))) == []
    assert refs_of(dst) == []


def _forged_array_source(make_url: Callable[[str], str]) -> tuple[Repository, str, str]:
    """A repository whose ``dev`` commit names array ``h`` whose stored files agree with each
    other but not with ``h``: ``zarr.json`` is mrepo's canonical document naming ``h`` and listing the
    digest of the chunk file stored, which holds other content (a self-consistent forgery: every
    check short of decoding the chunks and hashing the array passes). (repo, head, h)."""
    from numcodecs import Zstd

    from mrepo.store.zarr_codec import chunk_digest, metadata_document

    src = Repository.init(make_url("local"))
    real = np.arange(16, dtype=np.float32).reshape(4, 4)
    h = src.objects.put_array(real)
    lie = Zstd(level=1).encode((real + 1).tobytes())
    src.storage.backend.put(array_prefix(h) + "c/0/0", lie)
    src.storage.backend.put(array_prefix(h) + "zarr.json", metadata_document(real, (4, 4), h, {"c/0/0": chunk_digest(lie)}))
    src.objects.clear_cache()
    item = dataclasses.replace(make_item(src, "fov"), models={"m": h})
    head = src.commit(Population("p", {"g": DataSource("g", {item.key: item.save(src.objects)}).save(src.objects)}),
                      message="m", time=T1, branch="dev")
    return src, head, h


@pytest.mark.parametrize("dst_kind", DESTINATIONS)
def test_push_refuses_a_self_consistent_forged_array(make_url: Callable[[str], str], dst_kind: str) -> None:
    """Push verifies arrays in full like every transfer (issue 13 item 1: push into a local store
    too): chunks that match the digests of their ``zarr.json`` but decode to content that does not
    hash to the array's name are refused, and the destination shows none of it."""
    src, head, h = _forged_array_source(make_url)
    remote = Repository.init(make_url(dst_kind))
    before = remote.commit(make_population(remote, n_items=1), message="there", time=T1, branch="dev")
    with pytest.raises(CorruptObject, match=f"array {h} is corrupt: its content does not match its hash"):
        push(src, remote.url, "dev", force=True)  # force: the check, not the history, must stop it
    assert remote.head("dev") == before  # the branch did not move
    assert not remote.objects.has_array(h)
    assert list(remote.storage.backend.list(array_prefix(h))) == []  # no zarr.json, no chunk file left
    assert not remote.objects.has_object(head)
    assert verify(remote.storage).ok


def test_push_of_a_forged_array_is_one_line_error(make_url: Callable[[str], str], tmp_path) -> None:
    src, head, h = _forged_array_source(make_url)
    dst = tmp_path / "dst"
    Repository.init(str(dst)).close()
    result = CliRunner().invoke(app, ["push", str(dst), "dev", "--repo", src.url, "--json"])
    assert result.exit_code not in (0, 1), (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and h in lines[0], result.stderr
    remote = Repository.open(str(dst))
    assert remote.head("dev") is None and not remote.objects.has_array(h) and not remote.objects.has_object(head)
    assert not (dst / "arrays").exists() or not any((dst / "arrays").rglob("zarr.json"))
