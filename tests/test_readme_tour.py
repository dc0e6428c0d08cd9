"""The README's CLI tour runs as written: its bash block, in an empty folder, with the installed
``mrepo`` (this interpreter's) on PATH. The fast test leaves out the refinement line (marked slow
in the full run); every other command must exit 0."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def tour_block() -> str:
    """The first ```bash block after the '## A short CLI tour' heading."""
    text = README.read_text()
    section = text[text.index("## A short CLI tour"):]
    match = re.search(r"```bash\n(.*?)```", section, re.S)
    assert match, "README.md: no bash block in the CLI tour"
    return match.group(1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_tour(tmp_path: Path, *, refine: bool) -> subprocess.CompletedProcess:
    script = tour_block()
    if not refine:
        script = re.sub(r"^mrepo refine .*$", ": refinement left out of the fast run", script, flags=re.M)
    assert "mrepo refine" in tour_block()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MREPO_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PORT"] = str(_free_port())
    proc = subprocess.Popen(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=900)
    finally:
        try:  # the tour's background server, also when a step failed before `kill %1`
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


def check(result: subprocess.CompletedProcess, tmp_path: Path) -> None:
    assert result.returncode == 0, result.stdout[-4000:]
    assert "Traceback" not in result.stdout and "error:" not in result.stdout, result.stdout[-4000:]
    tour = tmp_path / "tour"
    assert (tour / "copy.mrepo" / "mrepo.json").exists() and (tour / "export").is_dir()
    assert "clean: no findings" in result.stdout and "source added     tomo" in result.stdout


pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="the tour waits for the server with curl")


def test_readme_tour_runs_as_written(tmp_path: Path) -> None:
    check(run_tour(tmp_path, refine=False), tmp_path)


@pytest.mark.slow
def test_readme_tour_with_refinement(tmp_path: Path) -> None:
    result = run_tour(tmp_path, refine=True)
    check(result, tmp_path)
    assert "refine iteration 1/1" in result.stdout
