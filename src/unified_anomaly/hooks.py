"""Project hooks: refuse unknown --params before work starts; tag every MLflow run with what it ran on;
under torchrun, let only rank 0 write datasets and log to MLflow."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

logger = logging.getLogger(__name__)


class UnknownParameterError(KeyError):
    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0])


def check_runtime_params(known: dict[str, Any], runtime: dict[str, Any], prefix: str = "") -> None:
    """Raises for a ``--params`` key that no parameters file defines (a typo would otherwise be ignored)."""
    for key, value in runtime.items():
        name = f"{prefix}{key}"
        if key not in known:
            close = ", ".join(sorted(known)[:20]) if isinstance(known, dict) else ""
            raise UnknownParameterError(
                f"unknown parameter {name!r} given with --params; known keys here: {close}. "
                "Check the spelling against conf/base/parameters_*.yml"
            )
        if isinstance(value, dict) and isinstance(known[key], dict) and known[key]:
            check_runtime_params(known[key], value, prefix=f"{name}.")


def _file_parameters(loader) -> dict[str, Any]:
    """The parameters as the conf files define them (the run's own loader has --params merged in)."""
    from kedro.config import OmegaConfigLoader

    fresh = OmegaConfigLoader(
        conf_source=str(loader.conf_source), env=loader.env, base_env=loader.base_env,
        default_run_env=loader.default_run_env, merge_strategy=loader.merge_strategy,
        config_patterns=loader.config_patterns,
    )
    return fresh["parameters"]


def git_commit() -> tuple[str, bool]:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                    text=True, check=True).stdout.strip())
        return commit, dirty
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False


class ProjectHooks:
    def __init__(self) -> None:
        self._context = None
        self._catalog = None
        self._tags: dict[str, str] = {}
        self._tagged = False
        self._run_id: str | None = None
        self._evaluations: dict[str, dict[str, float]] = {}

    @hook_impl
    def after_context_created(self, context) -> None:
        self._context = context
        mlflow_config = getattr(context, "mlflow", None)  # set by kedro-mlflow's hook, which runs before this one
        if mlflow_config is not None and _non_main_rank():
            from kedro.framework.project import pipelines

            mlflow_config.tracking.disable_tracking.pipelines = list(pipelines)

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        self._catalog = catalog
        if _non_main_rank():  # torchrun ranks > 0 train alongside rank 0; their outputs stay in memory
            from kedro.io import MemoryDataset

            for name in pipeline.all_outputs():
                catalog[name] = MemoryDataset()
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            from unified_anomaly.models.distributed import configure_process

            configure_process()  # from the first node on: each rank on its own GPU, only rank 0 logs
        runtime = run_params.get("runtime_params") or {}
        if self._context is not None and runtime:
            check_runtime_params(_file_parameters(self._context.config_loader), runtime)
        commit, dirty = git_commit()
        globals_ = self._context.config_loader["globals"] if self._context is not None else {}
        self._tags = {
            "dataset": str(globals_.get("dataset", "")),
            "kedro_pipeline": ",".join(run_params.get("pipeline_names") or [run_params.get("pipeline_name") or "__default__"]),
            "kedro_env": str(run_params.get("env") or "local"),
            "kedro_session_id": str(run_params.get("run_id") or run_params.get("session_id") or ""),
            "mlflow.source.git.commit": commit,
            "git_dirty": str(dirty).lower(),
        }
        self._tagged = False
        self._run_id = None
        self._evaluations = {}

    @hook_impl
    def before_node_run(self, node, catalog, inputs) -> None:
        """kedro-mlflow has opened the run by the first node: tag it, and record input dataset versions."""
        import mlflow

        if mlflow.active_run() is None:
            return
        if not self._tagged:
            mlflow.set_tags(self._tags)
            self._tagged = True
            self._run_id = mlflow.active_run().info.run_id
        versions = {}
        for name in node.inputs:
            version = _load_version(catalog, name)
            if version:
                versions[f"input.{name}.version"] = version
                if name == "ingested_images":
                    versions["dataset_version"] = version
        if versions:
            # set_tags, not set_tag: under ParallelRunner, nodes sharing an input tag the run at once, and only
            # the batch call retries when another process inserted the same key first
            mlflow.set_tags(versions)

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data, node) -> None:
        """A versioned save uses the session id as its version."""
        import mlflow

        if dataset_name.endswith(".metric_values") and isinstance(data, dict):  # {model}.metric_values
            self._evaluations[dataset_name.rsplit(".", 1)[0]] = data
        if mlflow.active_run() is None:
            return
        if dataset_name == "ingested_images":
            mlflow.set_tags({"dataset_version": self._tags.get("kedro_session_id", "")})
        log_artifact_if_marked(_dataset(self._catalog, dataset_name), dataset_name)

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any]) -> None:
        """A short summary when the run evaluated models: its MLflow run, nested runs, best model per metric."""
        from unified_anomaly.reporting import summarise_run

        summarise_run(self._run_id, self._evaluations, dataset=self._tags.get("dataset", ""))


def _non_main_rank() -> bool:
    """True in a process of a ``torchrun`` launch other than rank 0."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    from unified_anomaly.models.distributed import is_main_process  # torch: imported only under torchrun

    return not is_main_process()


def log_artifact_if_marked(dataset, name: str) -> None:
    """Logs a saved dataset's file(s) to the active MLflow run when its catalog entry carries
    ``metadata: {mlflow_artifact_path: <folder>}`` (versioned datasets included)."""
    import mlflow

    artifact_path = (getattr(dataset, "metadata", None) or {}).get("mlflow_artifact_path")
    if not artifact_path:
        return
    path = getattr(dataset, "_filepath", None)
    if path is None:
        logger.warning("%s is marked for MLflow but has no local file path", name)
        return
    if getattr(dataset, "_version", None) is not None:
        path = dataset._get_versioned_path(dataset.resolve_save_version())
    path = Path(str(path))
    if path.is_dir():
        mlflow.log_artifacts(str(path), artifact_path=f"{artifact_path}/{path.name}")
    elif path.is_file():
        mlflow.log_artifact(str(path), artifact_path=artifact_path)


def _dataset(catalog, name: str):
    try:
        return catalog.get(name) if hasattr(catalog, "get") else catalog._get_dataset(name)
    except Exception:
        return None


def _load_version(catalog, name: str) -> str | None:
    dataset = _dataset(catalog, name)
    dataset = getattr(dataset, "_dataset", dataset)  # wrappers such as MlflowArtifactDataset
    try:
        return dataset.resolve_load_version() if hasattr(dataset, "resolve_load_version") else None
    except Exception:
        return None
