"""Key and ref-name rules (mrepo.store.names) and their use by every backend: no key can
name a file outside a repository root, whatever the caller."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mrepo.store import InvalidName, LocalBackend, open_backend
from mrepo.store.names import check_array_file, check_key, check_object_key, check_ref_key, check_ref_name

H = "ab" * 32
TRAVERSALS = ["../x", "a/../../x", "arrays/" + H + "/../../../X", "refs/heads/../../../../X", "/etc/passwd",
              "a//b", "a/./b", ".hidden", "a/.lock", "a\\..\\b", "a\0b", "", "x/", "é"]


@pytest.mark.parametrize("key", TRAVERSALS)
def test_unsafe_keys_are_refused(key: str) -> None:
    with pytest.raises(InvalidName):
        check_key(key)


@pytest.mark.parametrize("key", ["objects/ab/" + "c" * 62, f"arrays/{H}/zarr.json", f"arrays/{H}/c/0/10/3",
                                 "refs/heads/main", "logs/refs/heads/main/=20261129T081100.123456Z-1a2b3c4d.json",
                                 "cache/items/" + H, "mrepo.json", "HEAD"])
def test_keys_mrepo_writes_are_accepted(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize("key,ok", [
    ("objects/ab/" + "c" * 62, True), ("objects/ab/" + "c" * 61, False), ("objects/AB/" + "c" * 62, False),
    (f"arrays/{H}/zarr.json", True), (f"arrays/{H}/c", True), (f"arrays/{H}/c/0/1/2", True),
    (f"arrays/{H}/c/01", False), (f"arrays/{H}/.zarray", False), (f"arrays/{H}/../../X", False),
    (f"arrays/{H[:-1]}/zarr.json", False), ("refs/heads/main", False),
])
def test_object_keys(key: str, ok: bool) -> None:
    if ok:
        assert check_object_key(key) == key
    else:
        with pytest.raises(InvalidName):
            check_object_key(key)


def test_array_files() -> None:
    assert check_array_file("c/0/0") == "c/0/0"
    for bad in ("c/-1", "c//0", "zarr.json/x", "c/0/../../x", "c/" + "/".join(["0"] * 33)):
        with pytest.raises(InvalidName):
            check_array_file(bad)


@pytest.mark.parametrize("key,ok", [
    ("refs/heads/main", True), ("refs/heads/feature/x-1", True), ("refs/tags/v1.0", True), ("refs/pulls/1", True),
    ("refs/pulls/12", True), ("refs/remotes/origin/main", True), ("refs/remotes/origin/pulls/3", True),
    ("refs/pulls/0", False), ("refs/pulls/01", False), ("refs/pulls/x", False), ("refs/pulls/1/2", False),
    ("refs/heads/HEAD", False), ("refs/heads/../../../../X", False), ("refs/heads/a..b", False),
    ("refs/heads/", False), ("refs/heads/a//b", False), ("refs/heads/x.lock", False), ("refs/heads/.x", False),
    ("refs/other/x", False), ("refs/remotes/origin", False), ("heads/main", False), ("refs/heads/a b", False),
])
def test_ref_keys(key: str, ok: bool) -> None:
    if ok:
        assert check_ref_key(key) == key
    else:
        with pytest.raises(InvalidName):
            check_ref_key(key)


def test_ref_name_errors_name_the_value() -> None:
    with pytest.raises(InvalidName, match=r"invalid branch name 'a\.\.b'"):
        check_ref_name("a..b", "branch name")
    with pytest.raises(InvalidName, match="HEAD"):
        check_ref_name("HEAD", "branch name")


# ----------------------------------------------------------------------------- backends


@pytest.mark.parametrize("kind", ["local", "memory", pytest.param("s3", marks=pytest.mark.s3)])
@pytest.mark.parametrize("key", ["../escape", "arrays/" + H + "/../../../escape", "refs/heads/../../../../escape",
                                 "a/../escape"])
def test_every_backend_refuses_traversal(make_url: Callable[[str], str], tmp_path: Path, kind: str,
                                         key: str) -> None:
    url = make_url(kind)
    backend = open_backend(url)
    for op in (lambda: backend.put(key, b"x"), lambda: backend.get(key), lambda: backend.exists(key),
               lambda: backend.delete(key), lambda: backend.cas(key, None, b"x"), lambda: list(backend.list(key + "/"))):
        with pytest.raises(InvalidName):
            op()
    assert not any(p.name == "escape" for p in tmp_path.rglob("*"))


def test_local_backend_refuses_a_symlink_out_of_its_root(tmp_path: Path) -> None:
    root, outside = tmp_path / "repo", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    os.symlink(outside, root / "objects")
    backend = LocalBackend(root)
    with pytest.raises(InvalidName, match="outside the repository root"):
        backend.put("objects/ab/" + "c" * 62, b"x")
    assert list(outside.iterdir()) == []


_PART = st.text(alphabet="abc.-_=/\\+@:\0 é", min_size=0, max_size=12)


@settings(max_examples=300, deadline=None)
@given(key=st.lists(_PART, min_size=1, max_size=6).map("/".join))
def test_any_accepted_key_stays_inside_the_root(tmp_path_factory: pytest.TempPathFactory, key: str) -> None:
    root = tmp_path_factory.getbasetemp() / "confined"
    root.mkdir(exist_ok=True)
    backend = LocalBackend(root)
    try:
        check_key(key)
    except InvalidName:
        with pytest.raises(InvalidName):
            backend.put(key, b"x")
        return
    path = (root / key).resolve()
    assert str(path).startswith(str(root.resolve()) + os.sep)
