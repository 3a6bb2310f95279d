from __future__ import annotations

from pathlib import Path

import numpy as np

from unified_anomaly.datasets._local import LocalVersionedDataset


class ArrayDictDataset(LocalVersionedDataset):
    """A ``dict[str, np.ndarray]`` as an uncompressed ``.npz`` (no pickles: object arrays are refused)."""

    def _write(self, path: Path, data: dict[str, np.ndarray]) -> None:
        arrays = {name: np.asarray(value) for name, value in data.items()}
        bad = [name for name, value in arrays.items() if value.dtype == object]
        if bad:
            raise TypeError(f"{self._filepath}: arrays {bad} have dtype object; store numbers or fixed-width strings")
        with open(path, "wb") as handle:
            np.savez(handle, **arrays)

    def _read(self, path: Path) -> dict[str, np.ndarray]:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
