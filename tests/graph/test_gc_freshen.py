"""gc never sweeps what a writer is about to reference: young records are roots, and
writers freshen objects they find already present."""

from __future__ import annotations

import os
import time

import numpy as np

from mrepo.graph import Repository, gc
from mrepo.store import array_ref
from mrepo.store.objects import array_prefix, object_key


def _age(repo: Repository, key: str, seconds: float) -> None:
    path = os.path.join(repo.storage.backend.root, key)
    old = time.time() - seconds
    os.utime(path, (old, old))


def test_old_array_referenced_by_young_record_survives(tmp_path) -> None:
    repo = Repository.init(str(tmp_path / "r"))
    h = repo.objects.put_array(np.arange(12.0))
    _age(repo, array_prefix(h) + "zarr.json", 10 * 3600)
    for e in repo.storage.backend.list(array_prefix(h)):
        _age(repo, e.key, 10 * 3600)
    # A writer's new, not yet referenced record points at the old array.
    repo.objects.put_record("note", {"map": array_ref(h)})
    report = gc(repo.storage, grace_seconds=3600)
    assert report.deleted_arrays == 0
    assert repo.objects.has_array(h)
    np.testing.assert_array_equal(repo.objects.get_array(h), np.arange(12.0))


def test_rewriting_an_old_object_freshens_it(tmp_path) -> None:
    repo = Repository.init(str(tmp_path / "r"))
    r = repo.objects.put_record("note", {"x": 1})
    a = repo.objects.put_array(np.ones((4, 4)))
    _age(repo, object_key(r), 10 * 3600)
    for e in repo.storage.backend.list(array_prefix(a)):
        _age(repo, e.key, 10 * 3600)
    dry = gc(repo.storage, grace_seconds=3600, dry_run=True)
    assert (dry.deleted_objects, dry.deleted_arrays) == (1, 1)
    # The same content stored again (e.g. by a commit about to reference it) is young again.
    repo.objects.clear_cache()
    assert repo.objects.put_record("note", {"x": 1}) == r
    assert repo.objects.put_array(np.ones((4, 4))) == a
    report = gc(repo.storage, grace_seconds=3600)
    assert (report.deleted_objects, report.deleted_arrays) == (0, 0)
    assert repo.objects.has_object(r) and repo.objects.has_array(a)


def test_unreachable_old_closure_is_swept(tmp_path) -> None:
    repo = Repository.init(str(tmp_path / "r"))
    h = repo.objects.put_array(np.arange(3.0))
    r = repo.objects.put_record("note", {"map": array_ref(h)})
    for key in [object_key(r), *(e.key for e in repo.storage.backend.list(array_prefix(h)))]:
        _age(repo, key, 10 * 3600)
    report = gc(repo.storage, grace_seconds=3600)
    assert (report.deleted_objects, report.deleted_arrays) == (1, 1)
    assert not repo.objects.has_array(h)


def test_young_cache_pointers_are_roots_and_old_ones_are_swept(tmp_path) -> None:
    repo = Repository.init(str(tmp_path / "r"))
    kept = repo.objects.put_record("item-result", {"sums": array_ref(repo.objects.put_array(np.ones(3)))})
    stale = repo.objects.put_record("item-result", {"n": 2})
    for key in [object_key(kept), object_key(stale), *(e.key for e in repo.storage.backend.list("arrays/"))]:
        _age(repo, key, 10 * 3600)
    repo.storage.backend.put("cache/items/young", (kept + "\n").encode())
    repo.storage.backend.put("cache/items/old", (stale + "\n").encode())
    repo.storage.backend.put("cache/items/garbage", b"not a hash")
    _age(repo, "cache/items/old", 10 * 3600)
    report = gc(repo.storage, grace_seconds=3600)
    assert report.deleted_pointers == 2 and report.deleted_objects == 1 and report.deleted_arrays == 0
    assert repo.objects.has_object(kept) and not repo.objects.has_object(stale)
    assert [e.key for e in repo.storage.backend.list("cache/")] == ["cache/items/young"]
