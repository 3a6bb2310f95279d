"""`kedro run --runner ParallelRunner`: independent per-model nodes side by side, the same numbers as in sequence."""

from __future__ import annotations

import math

import mlflow
import pytest

from conftest import run_kedro
from evaluate_inputs import EVALUATE_PARAMS, metric_values, write_evaluate_inputs

pytestmark = pytest.mark.slow


def test_parallel_runner_gives_the_sequential_metrics(project_copy):
    write_evaluate_inputs(project_copy)
    command = ("run", "--pipeline", "evaluate", "--namespaces", "uniad,rd", "--params", EVALUATE_PARAMS)
    run_kedro(project_copy, *command)
    run_kedro(project_copy, *command, "--runner", "ParallelRunner", "--runner-params", "max_workers=2")

    for model in ("uniad", "rd"):
        sequential, parallel = metric_values(project_copy, model)
        assert sequential.keys() == parallel.keys() and "image_AUROC" in sequential
        for name, value in sequential.items():  # the same inputs and seeds: the same numbers
            assert value == parallel[name] or (math.isnan(value) and math.isnan(parallel[name])), (model, name)

    # MLflow: each evaluation is still a nested run under its `kedro run`, for both runners
    mlflow.set_tracking_uri(f"sqlite:///{project_copy / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["unified_anomaly"], output_format="list")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert sorted("ParallelRunner" in p.data.tags["runner"] for p in parents) == [False, True]  # one each
    for parent in parents:
        children = {r.info.run_name for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
        assert children == {"evaluate uniad", "evaluate rd"}
