"""RayExecutor on a simulated two-node cluster (``ray.cluster_utils.Cluster``, one CPU per
node): the actors land on different nodes, read and write the same store, and the commit
equals the local executor's."""

from __future__ import annotations

from pathlib import Path

import pytest

from mrepo.graph import Repository
from mrepo.workers.driver import refine_population
from mrepo.workers.executors import LocalExecutor
from mrepo.workers.settings import RefineSettings

from .test_executors import SETTINGS, build_population

ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]


@pytest.fixture(scope="module")
def two_nodes():
    cluster = cluster_utils.Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_two_node_cluster_commits_like_local(two_nodes, tmp_path: Path) -> None:
    from mrepo.workers.executors import RayExecutor

    settings = RefineSettings.from_json(SETTINGS)
    repo_a = Repository.init(str(tmp_path / "a"))
    build_population(repo_a, 4)
    repo_b = Repository.init(str(tmp_path / "b"))
    build_population(repo_b, 4)
    with RayExecutor() as ex:  # default: one actor per CPU slot of the cluster
        assert ex.workers == 2
        (ca,) = refine_population(repo_a, "main", 1, settings, ex)
        nodes = {i["node"] for i in ex.info()}
    assert len(nodes) == 2  # one actor per node
    (cb,) = refine_population(repo_b, "main", 1, settings, LocalExecutor())
    assert repo_a.get_commit(ca).population == repo_b.get_commit(cb).population
