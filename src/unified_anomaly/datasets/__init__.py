"""Kedro datasets of the project's own: folders and arrays that kedro-datasets has no versioned type for."""

from unified_anomaly.datasets.array_dict import ArrayDictDataset
from unified_anomaly.datasets.image_store import ImageStoreDataset
from unified_anomaly.datasets.model_bundle import ModelBundleDataset

__all__ = ["ArrayDictDataset", "ImageStoreDataset", "ModelBundleDataset"]
