"""The end-of-run summary: where the MLflow run is, its nested evaluations, and the best model per metric.

Built by :func:`build_summary` from plain values (testable without MLflow); :func:`summarise_run` gathers
them from the tracking store after a ``kedro run`` and logs the result as ``summary.md`` to the run.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

logger = logging.getLogger(__name__)

# The metrics a user compares first (names as evaluation/ logs them); classification only for UniADC.
HEADLINE_METRICS = ("image_AUROC", "pixel_AUROC", "pixel_AUPRO", "pooled_image_AUROC", "image_ClassAcc")
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"  # conf/base/mlflow.yml, what `make mlflow-ui` opens
UI_ADDRESS = "http://127.0.0.1:5000"  # the Makefile's mlflow-ui target
SUMMARY_ARTIFACT = "summary.md"


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def best_per_metric(
    evaluations: Mapping[str, Mapping[str, float]], metrics: Sequence[str] = HEADLINE_METRICS
) -> dict[str, tuple[str, float]]:
    """{metric: (model, value)} of the highest finite value per metric; metrics no model has are left out.

    Ties go to the model listed first (evaluation order)."""
    best: dict[str, tuple[str, float]] = {}
    for metric in metrics:
        for model, values in evaluations.items():
            value = _finite(values.get(metric))
            if value is not None and (metric not in best or value > best[metric][1]):
                best[metric] = (model, value)
    return best


def metrics_table(evaluations: Mapping[str, Mapping[str, float]], metrics: Sequence[str] = HEADLINE_METRICS) -> str:
    """Markdown: one row per headline metric, the best model and every model's value (best in bold)."""
    best = best_per_metric(evaluations, metrics)
    models = list(evaluations)
    lines = ["| metric | best | " + " | ".join(models) + " |", "|---|---|" + "---:|" * len(models)]
    for metric, (winner, top) in best.items():
        cells = []
        for model in models:
            value = _finite(evaluations[model].get(metric))
            cells.append("–" if value is None else (f"**{value:.4f}**" if model == winner else f"{value:.4f}"))
        lines.append(f"| {metric} | {winner} ({top:.4f}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def build_summary(
    run_id: str,
    experiment_name: str,
    experiment_id: str,
    tracking_uri: str,
    evaluations: Mapping[str, Mapping[str, float]],
    nested_runs: Mapping[str, str] | None = None,
    dataset: str = "",
) -> str | None:
    """The Markdown summary of one run, or None when it evaluated no model (nothing worth summarising).

    evaluations: {model: {metric name: value}} of this run; nested_runs: {run name: run id}.
    """
    if not evaluations:
        return None
    if tracking_uri == DEFAULT_TRACKING_URI or tracking_uri.endswith("/mlflow.db"):
        opener = f"`make mlflow-ui`, then {UI_ADDRESS}/#/experiments/{experiment_id}/runs/{run_id}"
    else:
        opener = f"`mlflow ui --backend-store-uri {tracking_uri}` (or your MLflow server)"
    lines = [f"## Run summary{f' ({dataset})' if dataset else ''}", ""]
    if run_id:
        lines += [f"- MLflow run `{run_id}` in experiment `{experiment_name}`, tracking URI `{tracking_uri}`",
                  f"- open it: {opener}"]
    else:
        lines.append("- no MLflow run (tracking disabled for this pipeline in conf/base/mlflow.yml)")
    if nested_runs:
        lines.append("- nested evaluation runs: " + ", ".join(f"`{name}` ({rid[:8]})" for name, rid in nested_runs.items()))
    if best_per_metric(evaluations):
        lines += ["", "Best model per headline metric (test split, this run's evaluations):", "",
                  metrics_table(evaluations)]
    else:
        lines += ["", f"No headline metric ({', '.join(HEADLINE_METRICS)}) was computed in this run."]
    return "\n".join(lines) + "\n"


def nested_evaluations(client, experiment_id: str, run_id: str) -> tuple[dict[str, str], dict[str, dict[str, float]]]:
    """({run name: run id}, {model: metrics}) of the runs nested in ``run_id``, oldest first."""
    children = client.search_runs(
        [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'", order_by=["attributes.start_time ASC"]
    )
    names, metrics = {}, {}
    for child in children:
        name = child.info.run_name or child.info.run_id
        names[name] = child.info.run_id
        if name.startswith("evaluate "):  # keyed like the evaluate namespaces (the tag `model` may read rd+cada)
            metrics[name.removeprefix("evaluate ")] = dict(child.data.metrics)
    return names, metrics


def summarise_run(run_id: str | None, captured: Mapping[str, Mapping[str, float]], dataset: str = "") -> str | None:
    """Gathers this run's evaluations (``captured`` metric values win over the nested runs' metrics), prints the
    summary after a log line and, when there is an MLflow run, logs it as ``summary.md``. Never raises: a summary
    must not fail a run that has finished."""
    try:
        import mlflow

        evaluations: dict[str, dict[str, float]] = {}
        nested: dict[str, str] = {}
        experiment_name = experiment_id = ""
        tracking_uri = mlflow.get_tracking_uri()
        client = None
        if run_id:
            client = mlflow.MlflowClient()
            experiment_id = client.get_run(run_id).info.experiment_id
            experiment_name = client.get_experiment(experiment_id).name
            nested, evaluations = nested_evaluations(client, experiment_id, run_id)
        for model, values in captured.items():
            evaluations[model] = {**evaluations.get(model, {}), **values}
        summary = build_summary(run_id or "", experiment_name, experiment_id, tracking_uri, evaluations, nested,
                                dataset)
        if summary is None:
            return None
        if client is not None:
            client.log_text(run_id, summary, SUMMARY_ARTIFACT)
        logger.info("Run summary below%s", f" (also on MLflow run {run_id} as {SUMMARY_ARTIFACT})" if client else "")
        print(summary, flush=True)  # not through the log handler: a rich console would wrap the table
        return summary
    except Exception as error:  # reporting only: never fail a finished run
        logger.warning("could not build the end-of-run summary: %s", error)
        return None
