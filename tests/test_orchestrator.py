"""`make airflow-dag` (kedro-airflow): the default pipeline as an Airflow DAG, one task per Kedro node."""

from __future__ import annotations

import ast

import pytest

from conftest import run_kedro

pytestmark = pytest.mark.slow


def dag_structure(source: str) -> tuple[dict[str, str], set[tuple[str, str]]]:
    """``{task_id: node name}`` and the ``(upstream, downstream)`` task edges of a generated DAG file."""
    tasks: dict[str, str] = {}
    for function in ast.walk(ast.parse(source)):
        if not isinstance(function, ast.FunctionDef):
            continue
        task_ids = [keyword.value.value for decorator in function.decorator_list if isinstance(decorator, ast.Call)
                    for keyword in decorator.keywords if keyword.arg == "task_id"]
        calls = [c for c in ast.walk(function) if isinstance(c, ast.Call) and getattr(c.func, "id", "") == "_run_kedro_node"]
        if task_ids and calls:
            (names,) = [ast.literal_eval(k.value) for k in calls[0].keywords if k.arg == "node_names"]
            assert len(names) == 1, names
            tasks[task_ids[0]] = names[0]
    edges = set()
    for operation in ast.walk(ast.parse(source)):
        if isinstance(operation, ast.BinOp) and isinstance(operation.op, ast.RShift):
            upstream, downstream = (side.slice.value for side in (operation.left, operation.right))
            edges.add((upstream, downstream))
    return tasks, edges


def test_airflow_dag_has_one_task_per_node_and_the_pipeline_edges(project_copy, tmp_path):
    from unified_anomaly.pipeline_registry import register_pipelines

    target = tmp_path / "dags"
    run_kedro(project_copy, "airflow", "create", "--pipelines", "__default__", "--target-dir", str(target))
    source = (target / "unified_anomaly_dag.py").read_text()
    tasks, edges = dag_structure(source)  # parses as Python (Airflow itself is not installed here)

    pipeline = register_pipelines()["__default__"]
    assert sorted(tasks.values()) == sorted(node.name for node in pipeline.nodes)
    task_of = {name: task for task, name in tasks.items()}
    expected = {(task_of[parent.name], task_of[child.name])
                for child, parents in pipeline.node_dependencies.items() for parent in parents}
    assert edges == expected
    assert 'pipeline_name = "__default__"' in source and 'package_name = "unified_anomaly"' in source
