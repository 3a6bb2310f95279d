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
