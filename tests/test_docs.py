"""Every ``--params`` example in the README and docs names keys the parameters files define.

The project hook refuses unknown keys, so a stale example would fail for the user who copies it.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from unified_anomaly.hooks import check_runtime_params

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
PARAMS = re.compile(r"--params[ =](\"[^\"]+\"|[^\s`]+)")


def base_parameters() -> dict:
    merged: dict = {}
    for path in sorted((ROOT / "conf" / "base").glob("parameters*.yml")):
        merged.update(yaml.safe_load(path.read_text()) or {})
    return merged


def nested(assignments: str) -> dict:
    """``a.b=1,c.d=x`` -> ``{"a": {"b": "1"}, "c": {"d": "x"}}`` (values are not checked)."""
    result: dict = {}
    for assignment in assignments.split(","):
        key = assignment.split("=", 1)[0].strip()
        node = result
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = "value"
    return result


def documented_params() -> list[tuple[str, str]]:
    examples = []
    for document in DOCUMENTS:
        text = document.read_text().replace("\\\n", "")  # shell line continuations
        for match in PARAMS.finditer(text):
            value = match.group(1).strip('"')
            if value != "...":
                examples.append((document.relative_to(ROOT).as_posix(), value))
    return examples


def test_the_docs_have_params_examples():
    assert len(documented_params()) >= 10


@pytest.mark.parametrize(("document", "assignments"), documented_params())
def test_documented_params_keys_exist(document, assignments):
    check_runtime_params(base_parameters(), nested(assignments))


def test_a_misspelt_key_is_caught():
    with pytest.raises(KeyError, match="train_uniad.training.epoch"):
        check_runtime_params(base_parameters(), nested("train_uniad.training.epoch=5"))
