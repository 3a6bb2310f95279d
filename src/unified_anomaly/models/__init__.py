"""Plain torch models behind one prediction contract (no Kedro here)."""

from unified_anomaly.models.contract import AnomalyModel, Predictions, pick_device
from unified_anomaly.models.registry import build_model, register_model, registered_models

__all__ = ["AnomalyModel", "Predictions", "build_model", "pick_device", "register_model", "registered_models"]
