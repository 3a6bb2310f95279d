"""`kedro run --runner ParallelRunner`: independent per-model nodes side by side, the same numbers as in sequence.

The sequential run it is compared with is itself interrupted by a failing node and resumed with the
``--from-nodes`` that Kedro suggests (the robustness requirement; tests/test_robustness.py has the SIGKILL case).
"""

from __future__ import annotations

import math
import re

import mlflow
import pytest

from conftest import run_kedro
from evaluate_inputs import (
    EVALUATE_PARAMS,
    incomplete_versions,
    metric_values,
    versions,
    write_evaluate_inputs,
)

pytestmark = pytest.mark.slow

COMMAND = ("run", "--pipeline", "evaluate", "--namespaces", "uniad,rd")


def test_resumed_sequential_run_and_parallel_run_give_the_same_metrics(project_copy, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # Kedro's log lines unwrapped, to read its resume hint
    write_evaluate_inputs(project_copy)
    outputs = project_copy / "data" / "07_model_output" / "default"

    # 1. a node raises (a refused parameter value, found only by choose_threshold): nothing half-written
    failed = run_kedro(project_copy, *COMMAND, "--params", EVALUATE_PARAMS + ",evaluate.threshold.split=test",
                       check=False)
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0 and "must not be 'test'" in output
    assert not list(outputs.glob("*/threshold.json/*"))  # the failed node wrote nothing
    assert incomplete_versions(project_copy / "data") == []
    done = {m: versions(outputs / m / "test_predictions.npz") for m in ("uniad", "rd")}

    # 2. resume with Kedro's own suggestion: the completed nodes' versions are reused, not recomputed
    suggestion = re.search(r'--from-nodes "([^"]+)"', output)
    assert suggestion, output[-3000:]
    run_kedro(project_copy, *COMMAND, "--from-nodes", suggestion.group(1), "--params", EVALUATE_PARAMS)
    for model, before in done.items():
        if before:
            assert versions(outputs / model / "test_predictions.npz") == before
    assert incomplete_versions(project_copy / "data") == []

    # 3. ParallelRunner on the same inputs: the same numbers
    run_kedro(project_copy, *COMMAND, "--params", EVALUATE_PARAMS, "--runner", "ParallelRunner",
              "--runner-params", "max_workers=2")
    for model in ("uniad", "rd"):
        sequential, parallel = metric_values(project_copy, model)
        assert sequential.keys() == parallel.keys() and "image_AUROC" in sequential
        for name, value in sequential.items():  # the same inputs and seeds: the same numbers
            assert value == parallel[name] or (math.isnan(value) and math.isnan(parallel[name])), (model, name)

    # MLflow: each evaluation is a nested run under its `kedro run`, with either runner
    mlflow.set_tracking_uri(f"sqlite:///{project_copy / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["unified_anomaly"], output_format="list")
    parallel_run = [r for r in runs if "ParallelRunner" in r.data.tags.get("runner", "")]
    assert len(parallel_run) == 1 and parallel_run[0].info.status == "FINISHED"
    children = {r.info.run_name for r in runs if r.data.tags.get("mlflow.parentRunId") == parallel_run[0].info.run_id}
    assert children == {"evaluate uniad", "evaluate rd"}
