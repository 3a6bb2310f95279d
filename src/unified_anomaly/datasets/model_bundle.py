from __future__ import annotations

from pathlib import Path

from unified_anomaly.datasets._local import LocalVersionedDataset
from unified_anomaly.models.bundle import ModelBundle, load_bundle, save_bundle


class ModelBundleDataset(LocalVersionedDataset):
    """A trained :class:`~unified_anomaly.models.bundle.ModelBundle`: safetensors weights and a JSON config,
    so loading rebuilds the model from the registry and unpickles nothing."""

    def save(self, data: ModelBundle) -> None:
        save_bundle(Path(self._get_save_path()), data)

    def _read(self, path: Path) -> ModelBundle:
        return load_bundle(path)
