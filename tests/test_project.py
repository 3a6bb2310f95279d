"""The project as Kedro sees it: pipelines registered, the graph exportable by kedro-viz."""

import json

import pytest

from conftest import run_kedro

pytestmark = pytest.mark.slow


def test_pipeline_registry_chains_the_default_run():
    from unified_anomaly.pipeline_registry import DEFAULT_CHAIN, register_pipelines

    pipelines = register_pipelines()
    assert {"ingest", "__default__"} <= set(pipelines)
    default_nodes = {n.name for n in pipelines["__default__"].nodes}
    for name in DEFAULT_CHAIN:
        if name in pipelines:
            assert {n.name for n in pipelines[name].nodes} <= default_nodes


def test_kedro_viz_build_exports_every_pipeline(project_copy):
    run_kedro(project_copy, "viz", "build")
    main = json.loads((project_copy / "build" / "api" / "main").read_text())
    exported = {p["id"] for p in main["pipelines"]}
    assert {"__default__", "ingest"} <= exported
    assert any(node["name"] == "scan_dataset" for node in main["nodes"])


def test_every_dataset_a_pipeline_writes_is_declared_and_versioned():
    from kedro.config import OmegaConfigLoader
    from kedro.io import DataCatalog

    from conftest import REPO_ROOT
    from unified_anomaly.pipeline_registry import register_pipelines

    loader = OmegaConfigLoader(str(REPO_ROOT / "conf"), base_env="base", default_run_env="base",
                               merge_strategy={"parameters": "soft", "globals": "soft"})
    catalog = DataCatalog.from_config(loader["catalog"])
    unversioned = []
    for name in sorted(register_pipelines()["__default__"].all_outputs()):
        dataset = catalog.get(name)
        if dataset is None or getattr(dataset, "_version", None) is None:
            unversioned.append(name)
    assert unversioned == []
