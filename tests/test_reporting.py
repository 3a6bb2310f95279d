"""The end-of-run summary: best model per headline metric, the Markdown, and summary.md on the MLflow run."""

from __future__ import annotations

import math

import mlflow
import pytest

from unified_anomaly.reporting import SUMMARY_ARTIFACT, best_per_metric, build_summary, summarise_run

EVALUATIONS = {
    "uniad": {"image_AUROC": 0.80, "pixel_AUROC": 0.90, "pixel_AUPRO": 0.70, "pooled_image_AUROC": 0.75},
    "rd": {"image_AUROC": 0.85, "pixel_AUROC": 0.88, "pixel_AUPRO": math.nan, "pooled_image_AUROC": 0.75},
    "uniadc": {"image_AUROC": 0.60, "pixel_AUROC": 0.95, "image_ClassAcc": 0.40},
}


def test_best_per_metric_skips_nan_and_missing_and_keeps_the_first_on_ties():
    best = best_per_metric(EVALUATIONS)
    assert best == {"image_AUROC": ("rd", 0.85), "pixel_AUROC": ("uniadc", 0.95), "pixel_AUPRO": ("uniad", 0.70),
                    "pooled_image_AUROC": ("uniad", 0.75), "image_ClassAcc": ("uniadc", 0.40)}
    assert best_per_metric({"a": {"image_AUROC": math.nan}}) == {}


def test_summary_names_the_run_and_tabulates_the_best_models():
    text = build_summary("abc123", "unified_anomaly", "7", "sqlite:///mlflow.db", EVALUATIONS,
                         {"evaluate uniad": "f00dbeef99"}, dataset="default")
    assert "`abc123`" in text and "`unified_anomaly`" in text and "make mlflow-ui" in text
    assert "/#/experiments/7/runs/abc123" in text and "`evaluate uniad` (f00dbeef)" in text
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert rows["metric"] == "| metric | best | uniad | rd | uniadc |"
    assert rows["image_AUROC"] == "| image_AUROC | rd (0.8500) | 0.8000 | **0.8500** | 0.6000 |"
    assert rows["pixel_AUPRO"] == "| pixel_AUPRO | uniad (0.7000) | **0.7000** | – | – |"
    assert "image_ClassAcc | uniadc" in rows["image_ClassAcc"]


def test_no_summary_without_evaluations_and_no_run_link_without_a_run():
    assert build_summary("abc", "e", "1", "sqlite:///mlflow.db", {}) is None
    assert summarise_run(None, {}) is None
    text = build_summary("", "", "", "sqlite:///mlflow.db", EVALUATIONS)
    assert "no MLflow run" in text and "make mlflow-ui" not in text and "| image_AUROC | rd (0.8500) |" in text


@pytest.mark.slow  # creates an sqlite tracking store
def test_summarise_run_reads_nested_runs_and_logs_summary_md():
    mlflow.set_experiment("summary")
    with mlflow.start_run(run_name="kedro run") as parent:
        for model, values in {"uniad_cada": EVALUATIONS["uniad"], "rd": EVALUATIONS["rd"]}.items():
            with mlflow.start_run(run_name=f"evaluate {model}", nested=True):
                mlflow.set_tag("model", model.replace("_", "+"))  # the tag may differ from the namespace
                mlflow.log_metrics(values)
    # uniadc's values come from the catalog only (e.g. evaluate.log_to_mlflow: false)
    text = summarise_run(parent.info.run_id, {"uniadc": EVALUATIONS["uniadc"]}, dataset="default")
    assert "`evaluate uniad_cada`" in text and "`evaluate rd`" in text
    assert "| metric | best | uniad_cada | rd | uniadc |" in text  # one column per model, named by namespace
    assert "| pixel_AUROC | uniadc (0.9500) |" in text
    logged = mlflow.artifacts.load_text(f"runs:/{parent.info.run_id}/{SUMMARY_ARTIFACT}")
    assert logged == text
