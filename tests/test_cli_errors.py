"""Errors and exit codes of the ``mrepo`` command: one table (mrepo.cli.exit_codes), one line per error,
the same code for the same failure, nothing written on bad input."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mrepo.cli import app
from mrepo.cli.exit_codes import TABLE, ExitCode, markdown_table
from mrepo.graph import Repository
from mrepo.store import (
    CorruptObject,
    InvalidInput,
    MergeConflict,
    MissingExtra,
    MrepoError,
    ObjectNotFound,
    RefConflict,
    RefNotFound,
    RepositoryNotFound,
    Unreachable,
)
from mrepo.store.http_backend import AccessDenied, ServerError
from tests.factories import make_population

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def mrepo(*args: str, code: int = 0):
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, (args, result.exit_code, result.output)
    return result


def one_line_error(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def test_error_classes_carry_the_codes_of_the_table() -> None:
    expected = {MrepoError: ExitCode.ERROR, InvalidInput: ExitCode.BAD_INPUT, RefConflict: ExitCode.REF_CONFLICT,
                MergeConflict: ExitCode.MERGE_CONFLICT, AccessDenied: ExitCode.ACCESS_DENIED,
                ServerError: ExitCode.UNREACHABLE, Unreachable: ExitCode.UNREACHABLE,
                RepositoryNotFound: ExitCode.NOT_FOUND, RefNotFound: ExitCode.NOT_FOUND,
                ObjectNotFound: ExitCode.NOT_FOUND, CorruptObject: ExitCode.CORRUPT,
                MissingExtra: ExitCode.MISSING_EXTRA}
    for cls, code in expected.items():
        assert cls.exit_code == code, cls
    assert [d.code for d in TABLE] == sorted(ExitCode)  # every code documented once, in order


@pytest.mark.parametrize("doc", ["README.md", "docs/exit-codes.md"])
def test_readme_and_docs_carry_the_table(doc: str) -> None:
    assert markdown_table() in (ROOT / doc).read_text()


@pytest.fixture
def repo_with_history(tmp_path: Path) -> tuple[str, list[str]]:
    url = str(tmp_path / "repo")
    r = Repository.init(url)
    pop = make_population(r, n_items=1)
    commits = [r.commit(pop, message=f"c{i}", time=f"2024-03-01T00:00:0{i}Z") for i in range(3)]
    return url, commits


def test_parent_revisions_resolve(repo_with_history) -> None:
    url, (c0, c1, c2) = repo_with_history
    r = Repository.open(url)
    assert r.resolve("main^") == c1 and r.resolve("main^^") == c0 and r.resolve("main~2") == c0
    assert r.resolve("main~") == c1 and r.resolve("main^1") == c1 and r.resolve("main^0") == c2
    assert r.resolve("main~1^") == c0
    result = mrepo("show", "main^^^", "--repo", url, "--json", code=ExitCode.NOT_FOUND)
    assert "goes past the first commit" in one_line_error(result)
    assert "parent" in one_line_error(mrepo("show", "main^2", "--repo", url, code=ExitCode.NOT_FOUND))
    assert mrepo("log", "main^", "--repo", url).stdout.count("commit ") == 2


@pytest.mark.parametrize("command", ["refine", "reconstruct"])
def test_refine_names_a_missing_branch(repo_with_history, command: str) -> None:
    url, _ = repo_with_history
    message = one_line_error(mrepo(command, "-b", "mian", "--repo", url, code=ExitCode.NOT_FOUND))
    assert "branch 'mian' does not exist" in message and "main" in message


@pytest.mark.parametrize("args", [
    ["species", "add", "apo", "--half1", "h1.mrc", "--half2", "h2.mrc", "--mask", "m.mrc", "--particles", "p.star",
     "--diameter", "100"],
    ["source", "contrast", "src", "light"],
    ["species", "denoise", "apo"],
])
def test_every_branch_option_refuses_a_missing_branch_as_not_found(repo_with_history, args: list[str]) -> None:
    """One helper (mrepo.io.branches.branch_head) for the CLI and the importers: exit 7, the branches named."""
    url, commits = repo_with_history
    message = one_line_error(mrepo(*args, "-b", "mian", "--repo", url, code=ExitCode.NOT_FOUND))
    assert "branch 'mian' does not exist (branches: main)" in message
    assert Repository.open(url).branches() == {"main": commits[-1]}  # nothing committed


@pytest.mark.parametrize("command", ["refine", "reconstruct"])
def test_refine_names_an_unknown_executor(repo_with_history, command: str) -> None:
    url, commits = repo_with_history
    result = mrepo(command, "--executor", "slurm", "--repo", url, code=ExitCode.BAD_INPUT)
    assert "--executor must be 'local' or 'ray', got 'slurm'" in result.output
    assert Repository.open(url).head("main") == commits[-1]  # nothing committed

def test_gc_grace_needs_a_unit(repo_with_history) -> None:
    url, _ = repo_with_history
    for bad in ("30", "24", "1.5", "7days"):
        assert "unit" in one_line_error(mrepo("gc", "--grace", bad, "--repo", url, code=ExitCode.BAD_INPUT))
    for good in ("30m", "24h", "7d", "90s", "0"):
        mrepo("gc", "--grace", good, "--dry-run", "--repo", url)


@pytest.mark.parametrize("args, option", [
    (["frames", "--size", "0"], "--size"),
    (["frames", "--pixel-size", "-1"], "--pixel-size"),
    (["frames", "--snr", "nan"], "--snr"),
    (["frames", "--snr", "0"], "--snr"),
    (["frames", "--size", "64", "--box", "96"], "--box"),
    (["frames", "--frames", "1"], "--frames"),
    (["frames", "--particles", "0"], "--particles"),
    (["tilts", "--pixel-size", "nan"], "--pixel-size"),
    (["tilts", "--max-tilt", "95"], "--max-tilt"),
    (["tilts", "--step", "0"], "--step"),
    (["frames", "--size", "100000"], "--size"),  # was a 745 GB MemoryError traceback
    (["tilts", "--seed", "-5"], "--seed"),  # was numpy's "expected non-negative integer"
])
def test_sim_refuses_bad_numbers_in_one_line(tmp_path: Path, args: list[str], option: str) -> None:
    out = tmp_path / "sim"
    message = one_line_error(mrepo("sim", *args, "--out", str(out), code=ExitCode.BAD_INPUT))
    assert option in message
    assert not out.exists()


def test_sim_refuses_a_crowded_field_in_one_line(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    result = mrepo("sim", "frames", "--size", "64", "--box", "48", "--particles", "500", "--frames", "2",
                   "--out", str(out), code=ExitCode.BAD_INPUT)
    assert "particles" in one_line_error(result)


def test_sim_never_overwrites_a_folder_with_files(tmp_path: Path) -> None:
    out = tmp_path / "frames"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    message = one_line_error(mrepo("sim", "frames", "--out", str(out), "--size", "64", "--box", "32",
                                   code=ExitCode.BAD_INPUT))
    assert "--out" in message and "not an empty folder" in message
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "precious"


def test_sim_names_the_options_when_the_species_does_not_fit(tmp_path: Path) -> None:
    message = one_line_error(mrepo("sim", "frames", "--out", str(tmp_path / "s"), "--size", "64", "--box", "16",
                                   "--particles", "2", "--frames", "2", code=ExitCode.BAD_INPUT))
    assert "--box" in message  # was only "could not place 480 atoms 1.5 Å apart in 16.8 Å"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_s3_endpoint_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    port = _closed_port()
    monkeypatch.setenv("MREPO_S3_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for args in (["log", "--repo", "s3://bucket/lab"], ["init", "s3://bucket/lab"]):
        start = time.monotonic()
        message = one_line_error(mrepo(*args, code=ExitCode.UNREACHABLE))
        assert f"127.0.0.1:{port}" in message and "cannot reach S3 endpoint" in message
        assert time.monotonic() - start < 5  # at once, not after botocore's retries (was about 20 s)


@pytest.mark.s3
def test_missing_s3_credentials_are_named_not_called_unreachable(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    monkeypatch.setenv("MREPO_S3_ENDPOINT", moto_endpoint)  # reachable; the client has nothing to sign with
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    message = one_line_error(mrepo("log", "--repo", "s3://bucket/lab", code=ExitCode.ACCESS_DENIED))
    assert "no S3 credentials" in message and "AWS_ACCESS_KEY_ID" in message


@pytest.mark.s3
def test_missing_bucket_is_one_line(moto_endpoint: str) -> None:
    for args in (["log", "--repo", "s3://no-such-bucket/lab"], ["init", "s3://no-such-bucket/lab"]):
        message = one_line_error(mrepo(*args, code=ExitCode.UNREACHABLE))
        assert "S3 bucket 'no-such-bucket' does not exist at " + moto_endpoint in message


def test_clone_stores_an_absolute_origin_and_refuses_memory(repo_with_history, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    url, _ = repo_with_history
    monkeypatch.chdir(tmp_path)
    mrepo("clone", "repo", "mine")  # relative paths, as typed
    assert Repository.open(str(tmp_path / "mine")).remotes()["origin"] == str(tmp_path / "repo")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    mine = str(tmp_path / "mine")
    mrepo("branch", "side", "--repo", mine)
    mrepo("push", "origin", "side", "--repo", mine)  # origin still resolves from another folder
    assert Repository.open(url).head("side") == Repository.open(mine).head("side")
    for args in (["clone", url, "memory://copy"], ["init", "memory://scratch"]):
        assert "dies with the process" in one_line_error(mrepo(*args, code=ExitCode.BAD_INPUT))


def test_http_clone_reads_anonymously_or_names_the_token(repo_with_history, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A real server: without --anonymous-read a clone with no token is exit 5 naming MREPO_TOKEN and
    writes nothing; with it the clone succeeds without a token."""
    from mrepo.api import create_app
    from tests.api.server import thread_server

    url, commits = repo_with_history
    monkeypatch.delenv("MREPO_TOKEN", raising=False)
    tokens = tmp_path / "tokens.toml"
    mrepo("token", "add", "alice", "--role", "read", "--tokens", str(tokens))
    with thread_server(create_app(url, tokens)) as base:
        message = one_line_error(mrepo("clone", f"{base}/repo", str(tmp_path / "denied"), code=ExitCode.ACCESS_DENIED))
        assert "MREPO_TOKEN" in message and not (tmp_path / "denied").exists()
    with thread_server(create_app(url, tokens, True)) as base:
        mrepo("clone", f"{base}/repo", str(tmp_path / "copy"))
    assert Repository.open(str(tmp_path / "copy")).head("main") == commits[-1]
