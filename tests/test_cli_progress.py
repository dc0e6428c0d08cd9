"""The one progress display: a bar on a terminal, timestamped log lines otherwise; refinement
workers report stages inside an item (L-BFGS steps, back-projection) through a hook only."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import torch
from rich.console import Console

from mrepo.cli.progress import ProgressDisplay, iteration_progress
from mrepo.graph import Repository
from mrepo.workers.executors import LocalExecutor
from mrepo.workers.stages import StageEvent, stage_hook
from tests.factories import make_population
from tests.workers.test_executors import build_population, make_tasks

torch.set_num_threads(1)
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


def test_clone_logs_timestamped_lines_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    src = tmp_path / "src"
    repo = Repository.init(str(src))
    repo.commit(make_population(repo), message="x")
    env = {**os.environ, "MREPO_PROGRESS_INTERVAL": "0", "PYTHONPATH": os.getcwd()}
    run = subprocess.run([sys.executable, "-m", "mrepo", "clone", str(src), str(tmp_path / "dst")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert lines and all(re.match(rf"^{STAMP} clone", ln) for ln in lines), run.stderr
    last = re.search(r"(\d+)/(\d+)$", lines[-1])
    assert last and last.group(1) == last.group(2)  # the phase's last line says it finished
    assert "\x1b[" not in run.stderr  # no terminal control codes in a log


def test_log_lines_are_throttled_but_keep_the_last_one() -> None:
    out = io.StringIO()
    display = ProgressDisplay("push", stream=out, terminal=False, interval=3600)
    with display:
        for i in range(1, 101):
            display("objects", i, 100)
    lines = out.getvalue().splitlines()
    assert [ln.split(" ", 1)[1] for ln in lines] == ["push objects: 1/100", "push objects: 100/100"]


def test_refinement_stages_reach_the_display_from_a_real_local_run(tmp_path: Path) -> None:
    repo = Repository.init(str(tmp_path / "r"))
    pop = build_population(repo, n_items=2)
    events: list[StageEvent] = []
    with stage_hook(events.append):
        LocalExecutor(use_cache=False).run(make_tasks(repo, pop))
    stages = [e.stage for e in events]
    assert stages.count("refine") == 2 and stages.count("back-projection") == 2
    lbfgs = [e for e in events if e.stage.startswith("L-BFGS")]
    assert lbfgs and all(1 <= e.step <= e.total == 2 for e in lbfgs)
    assert {e.item for e in events} == {repo.item(h).name for h in repo.source(pop.sources["grid1"]).items.values()}

    # the same run shown on a "terminal" and in a log
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=120)
    with iteration_progress("refine", console=console) as update:
        LocalExecutor(use_cache=False).run(make_tasks(repo, pop), progress=update)
    assert "particles/s" in buf.getvalue()
    log = io.StringIO()
    display = ProgressDisplay("refine", stream=log, terminal=False, interval=0)
    with display, stage_hook(display.stage):
        LocalExecutor(use_cache=False).run(make_tasks(repo, pop), progress=display.items)
    text = log.getvalue()
    assert re.search(rf"^{STAMP} refine: \S+: L-BFGS \S+ 1/2$", text, re.M), text
    stage_lines = [ln.split(" ", 1)[1] for ln in text.splitlines() if "L-BFGS" in ln]
    assert all(a != b for a, b in zip(stage_lines, stage_lines[1:]))  # no line repeats the one before
    assert re.search(rf"^{STAMP} refine: 2/2 items, \d+/\d+ particles, .* particles/s, ETA 0:00:00$", text, re.M)
