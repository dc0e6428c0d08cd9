"""Stages inside an item reach the driver's hook from Ray actors (real local Ray), as they do
from the local executor; without a hook no relay actor is made."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mrepo.graph import Repository
from mrepo.workers.stages import StageEvent, hooks_installed, stage_hook

from .test_executors import build_population, make_tasks

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.timeout(300)
torch.set_num_threads(1)


def test_ray_actors_report_item_stages_to_the_driver(tmp_path: Path) -> None:
    from mrepo.workers.executors import RayExecutor
    from mrepo.workers.ray_pool import local_ray_options

    repo = Repository.init(str(tmp_path / "r"))
    pop = build_population(repo, 2)
    started = not ray.is_initialized()
    if started:
        ray.init(**local_ray_options(2))
    try:
        with RayExecutor(workers=1) as ex:
            assert not hooks_installed()
            ex.run(make_tasks(repo, pop))  # no listener: plain run
            assert ex._relay is None
            events: list[StageEvent] = []
            with stage_hook(events.append):
                out = ex.run(make_tasks(repo, pop, iteration=2))
            assert ex._relay is None  # the relay actor is gone after the run
    finally:
        if started:
            ray.shutdown()
    names = {repo.item(r.task.item_hash).name for r in out.results}
    assert {e.item for e in events} == names
    for name in names:  # every item's stages, in the order the worker went through them
        mine = [e.stage for e in events if e.item == name]
        assert mine[0] == "refine" and mine[-1] == "back-projection"
        assert any(s.startswith("L-BFGS") for s in mine)
