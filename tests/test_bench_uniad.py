"""benchmarks/bench_uniad.py's backbone selection: the verdict follows the rule, margin included."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("bench_uniad", ROOT / "benchmarks" / "bench_uniad.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(backbone: str, selection_auroc: float) -> dict:
    return {"backbone": backbone, "weights": "pypi:x", "channels": 8, "selected_epoch": 3, "epochs": 10,
            "selection_set": {"image_AUROC": selection_auroc, "pixel_AUROC": 60.0, "pixel_AUPRO": 50.0},
            "image_AUROC": 70.0, "pixel_AUROC": 70.0, "pixel_AUPRO": 70.0, "s_per_epoch": 1.0, "img_per_s": 1.0,
            "peak_mib": 10.0}


def test_hanley_mcneil_standard_error_by_hand(bench):
    # A = 0.5, 50 + 50: Q1 = 1/3, Q2 = 1/3, variance = (0.25 + 2 * 49 * (1/3 - 1/4)) / 2500
    expected = 100 * ((0.25 + 98 * (1 / 3 - 0.25)) / 2500) ** 0.5
    assert bench.auroc_standard_error(50.0, 50, 50) == pytest.approx(expected)
    assert bench.auroc_standard_error(90.0, 1000, 1000) < bench.auroc_standard_error(90.0, 95, 20)


def test_a_lead_within_the_noise_keeps_conf(bench):
    text = bench.backbone_selection_markdown([_row("conf_net", 72.3), _row("other_net", 73.6)], "conf_net")
    assert "Verdict: conf keeps conf_net: other_net leads by 1.3 points" in text
    assert text.index("| other_net") < text.index("| conf_net")  # ranked by the selection set


def test_a_lead_beyond_the_noise_replaces_conf(bench):
    text = bench.backbone_selection_markdown([_row("conf_net", 72.3), _row("other_net", 85.0)], "conf_net")
    assert "Verdict: other_net beats conf's conf_net by 12.7 points" in text


def test_conf_best_or_absent(bench):
    assert "the best on the selection set" in bench.backbone_selection_markdown(
        [_row("conf_net", 80.0), _row("other_net", 70.0)], "conf_net")
    assert "was not run" in bench.backbone_selection_markdown([_row("other_net", 70.0)], "conf_net")
