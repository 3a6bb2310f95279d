from __future__ import annotations

from pathlib import Path

from unified_anomaly.data.store import ImageStore, ImageStream, read_store, write_store_into
from unified_anomaly.datasets._local import LocalVersionedDataset


class ImageStoreDataset(LocalVersionedDataset):
    """An :class:`~unified_anomaly.data.store.ImageStore` folder. Saving accepts a store or an
    :class:`~unified_anomaly.data.store.ImageStream` (written chunk by chunk); loading memory-maps the arrays.

    Example catalog entry::

        ingested_images:
          type: unified_anomaly.datasets.ImageStoreDataset
          filepath: data/03_primary/${globals:dataset}/ingested_images
          versioned: true
    """

    def _read(self, path: Path) -> ImageStore:
        return read_store(path)

    def _write(self, path: Path, data: ImageStore | ImageStream) -> None:
        path.mkdir()
        write_store_into(path, data)
