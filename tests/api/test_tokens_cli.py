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
