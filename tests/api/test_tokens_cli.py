"""Token files and the CLI: secrets stored hashed, roles, ``mrepo token add`` and ``mrepo serve``."""

from __future__ import annotations

import httpx
import pytest
from typer.testing import CliRunner

from mrepo.api.tokens import TokenStore, add_token, hash_secret
from mrepo.cli import app
from mrepo.graph import Repository
from mrepo.store import InvalidInput
from tests.api.server import free_port, start_subprocess


def test_tokens_are_stored_hashed_and_authenticate(tmp_path) -> None:
    path = tmp_path / "t.toml"
    s1 = add_token(path, "alice", "write")
    s2 = add_token(path, "bob", "maintain")
    text = path.read_text()
    assert s1 not in text and s2 not in text and hash_secret(s1) in text
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    store = TokenStore.load(path)
    assert store.authenticate(s1).name == "alice" and store.authenticate(s2).role == "maintain"
    assert store.authenticate(s1 + "x") is None
    with pytest.raises(InvalidInput, match="already exists"):
        add_token(path, "alice", "read")
    with pytest.raises(InvalidInput, match="unknown role"):
        add_token(path, "carol", "admin")
    with pytest.raises(InvalidInput, match="invalid token name"):
        add_token(path, "a.b", "read")


@pytest.mark.slow  # starts the real CLI, which imports torch: ~30 s on a loaded 2-core machine
def test_cli_token_add_then_serve(tmp_path) -> None:
    result = CliRunner().invoke(app, ["token", "add", "ci", "--role", "read", "--tokens", str(tmp_path / "t.toml")])
    assert result.exit_code == 0, result.output
    secret = result.output.strip().splitlines()[-1]
    assert secret.startswith("mrepo_") and TokenStore.load(tmp_path / "t.toml").authenticate(secret).name == "ci"
    Repository.init(str(tmp_path / "r")).close()
    port = free_port()
    proc = start_subprocess(tmp_path / "r", port, tmp_path / "t.toml", cli=True)
    try:
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/repo/mrepo.json").status_code == 401
        r = httpx.get(f"{base}/repo/mrepo.json", headers={"Authorization": f"Bearer {secret}"})
        assert r.status_code == 200 and r.json()["format"] == "mrepo"
    finally:
        proc.kill()
        proc.wait(10)


def test_removal_role_change_and_expiry_take_effect_on_the_running_server(tmp_path) -> None:
    import os
    import time

    from mrepo.api import create_app
    from mrepo.api.tokens import read_last_used, remove_token, set_role
    from tests.api.server import thread_server

    path = tmp_path / "t.toml"
    alice = add_token(path, "alice", "write")
    bob = add_token(path, "bob", "read")
    past = add_token(path, "old", "maintain", expires="2020-01-01")
    soon = add_token(path, "soon", "read", expires="1d")
    Repository.init(str(tmp_path / "r")).close()
    app = create_app(str(tmp_path / "r"), path, access_log=False)

    def status(secret: str, method: str = "GET", url: str = "/repo/mrepo.json") -> int:
        return httpx.request(method, base + url, headers={"Authorization": f"Bearer {secret}"}).status_code

    def until(predicate, what: str) -> None:  # noqa: ANN001 - the file is re-read within a second
        deadline = time.monotonic() + 5
        while not predicate():
            assert time.monotonic() < deadline, what
            time.sleep(0.1)

    with thread_server(app) as base:
        assert status(alice) == 200 and status(bob) == 200 and status(soon) == 200
        assert status(past) == 401  # expired
        body = {"objects": ["ab" * 32], "arrays": []}
        assert httpx.post(base + "/repo/batch/have", json=body,
                          headers={"Authorization": f"Bearer {bob}"}).status_code == 403
        set_role(path, "bob", "write")
        until(lambda: httpx.post(base + "/repo/batch/have", json=body,
                                 headers={"Authorization": f"Bearer {bob}"}).status_code == 200, "role change")
        remove_token(path, "alice")
        until(lambda: status(alice) == 401, "removal")
        assert status(bob) == 200
        path.write_text("not toml [")  # a broken file refuses everyone (fail closed) until fixed
        os.utime(path, (time.time() + 5, time.time() + 5))
        until(lambda: status(bob) == 401, "broken file")
    assert set(read_last_used(path)) >= {"alice", "bob", "soon"}  # flushed at shutdown


def test_cli_token_list_remove_and_role(tmp_path) -> None:
    import json

    path = tmp_path / "t.toml"
    runner = CliRunner()
    r = runner.invoke(app, ["token", "add", "ci", "--role", "read", "--tokens", str(path), "--expires", "30d"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["token", "add", "x", "--role", "read", "--tokens", str(path), "--expires", "soon"])
    assert r.exit_code == 2 and "invalid expiry" in r.output
    runner.invoke(app, ["token", "add", "ops", "--role", "maintain", "--tokens", str(path)])
    r = runner.invoke(app, ["token", "role", "ci", "write", "--tokens", str(path)])
    assert r.exit_code == 0, r.output
    rows = json.loads(runner.invoke(app, ["token", "list", "--tokens", str(path), "--json"]).stdout)
    assert [(x["name"], x["role"], x["expires"] is not None, x["last_used"]) for x in rows] == [
        ("ci", "write", True, None), ("ops", "maintain", False, None)]
    r = runner.invoke(app, ["token", "remove", "ops", "--tokens", str(path)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["token", "remove", "ops", "--tokens", str(path)])
    assert r.exit_code == 2 and "no token 'ops'" in r.output
    assert TokenStore.load(path).names() == {"ci": "write"}
