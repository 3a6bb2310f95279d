"""Project hooks: runtime-parameter checks live in test_docs.py; here, run tagging under parallel nodes."""

from __future__ import annotations

import multiprocessing
from types import SimpleNamespace

import pytest

from unified_anomaly.hooks import ProjectHooks

INPUTS = [f"dataset_{index}" for index in range(300)] + ["ingested_images"]


class VersionedCatalog:
    """Every input resolves to the same load version, as under one ``kedro run``."""

    def get(self, name):
        return SimpleNamespace(resolve_load_version=lambda: "2026-01-01T00.00.00.000Z")


def _tag_inputs_in_the_shared_run(tracking_uri: str, run_id: str, barrier, results) -> None:
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    barrier.wait()  # every process tags the same keys at the same moment, as ParallelRunner's workers do
    try:
        with mlflow.start_run(run_id=run_id):
            hooks = ProjectHooks()
            hooks._tags = {"dataset": "toy"}
            hooks.before_node_run(node=SimpleNamespace(inputs=INPUTS), catalog=VersionedCatalog(), inputs={})
        results.put("ok")
    except Exception as error:  # reported to the parent, which shows it
        results.put(f"{type(error).__name__}: {error}")


@pytest.mark.slow
def test_nodes_tagging_one_run_from_parallel_processes_do_not_collide(tmp_path):
    import mlflow

    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run() as run:
        run_id = run.info.run_id
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(4), context.Queue()
    workers = [context.Process(target=_tag_inputs_in_the_shared_run, args=(tracking_uri, run_id, barrier, results))
               for _ in range(4)]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=300) for _ in workers]
    for worker in workers:
        worker.join()
    assert outcomes == ["ok"] * 4, outcomes
    tags = mlflow.MlflowClient(tracking_uri).get_run(run_id).data.tags
    assert tags["input.dataset_7.version"] == "2026-01-01T00.00.00.000Z"
    assert tags["dataset_version"] == "2026-01-01T00.00.00.000Z"
