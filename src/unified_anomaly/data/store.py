"""ImageStore: decoded, resized images and class-valued masks on disk, read through memory maps.

A store is a folder::

    manifest.csv   the manifest (see ``manifest.py``); row i describes images[i] and masks[i]
    images.npy     uint8 N×S×S×3 (RGB)
    masks.npy      uint8 N×S×S, pixel value = class id (0 = normal)
    meta.json      {"size": S, "dataset": ..., "class_names": {category: ["good", defect, ...]}}

Writing streams chunks into ``.npy`` memory maps, so memory does not grow with the dataset, and
goes through a temporary folder renamed at the end, so a store on disk is always complete.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from unified_anomaly.atomic import atomic_write
from unified_anomaly.data.manifest import ANOMALY, NORMAL

MANIFEST_FILE = "manifest.csv"
IMAGES_FILE = "images.npy"
MASKS_FILE = "masks.npy"
META_FILE = "meta.json"


@dataclass
class ImageStore:
    """Images, masks and their manifest; arrays are memory maps when loaded from disk."""

    manifest: pd.DataFrame
    images: np.ndarray
    masks: np.ndarray
    class_names: dict[str, list[str]]
    size: int
    dataset: str = ""
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.manifest)

    @property
    def categories(self) -> list[str]:
        return sorted(self.manifest["category"].unique())

    def select(
        self,
        split: str | Sequence[str] | None = None,
        category: str | Sequence[str] | None = None,
        label: str | None = None,
        max_rank: int | None = None,
    ) -> np.ndarray:
        """Row indices matching every given filter; ``max_rank=K`` keeps ranks 0..K-1 (K-shot)."""
        keep = np.ones(len(self.manifest), dtype=bool)
        for column, wanted in (("split", split), ("category", category), ("label", label)):
            if wanted is None:
                continue
            values = [wanted] if isinstance(wanted, str) else list(wanted)
            keep &= self.manifest[column].isin(values).to_numpy()
        if max_rank is not None:
            keep &= (self.manifest["rank"] < max_rank).to_numpy()
        return np.flatnonzero(keep)

    def labels(self, indices: np.ndarray) -> np.ndarray:
        """1 for anomalous images, 0 for normal ones."""
        return (self.manifest["label"].to_numpy()[indices] == ANOMALY).astype(np.uint8)

    def iter_batches(self, indices: np.ndarray, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Yields (indices, images N×S×S×3, masks N×S×S) in order, copied out of the memory maps."""
        for start in range(0, len(indices), batch_size):
            chunk = np.asarray(indices[start : start + batch_size])
            yield chunk, np.ascontiguousarray(self.images[chunk]), np.ascontiguousarray(self.masks[chunk])

    def subset(self, indices: np.ndarray) -> ImageStore:
        """An in-memory store holding only the given rows."""
        indices = np.asarray(indices)
        return ImageStore(
            manifest=self.manifest.iloc[indices].reset_index(drop=True),
            images=np.ascontiguousarray(self.images[indices]),
            masks=np.ascontiguousarray(self.masks[indices]),
            class_names=dict(self.class_names),
            size=self.size,
            dataset=self.dataset,
            extra=dict(self.extra),
        )


@dataclass
class ImageStream:
    """A store still to be written: its manifest and an iterable of ``(images, masks)`` chunks in row order.

    Nodes return this instead of arrays so that writing streams; ``ImageStoreDataset.save`` consumes it.
    """

    manifest: pd.DataFrame
    chunks: Iterable[tuple[np.ndarray, np.ndarray]]
    class_names: dict[str, list[str]]
    size: int
    dataset: str = ""
    extra: dict = field(default_factory=dict)


def read_store(path: str | os.PathLike, mmap: bool = True) -> ImageStore:
    path = Path(path)
    for name in (MANIFEST_FILE, IMAGES_FILE, MASKS_FILE, META_FILE):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path} is not a complete image store: {name} is missing")
    meta = json.loads((path / META_FILE).read_text())
    manifest = pd.read_csv(path / MANIFEST_FILE, keep_default_na=False)
    manifest = manifest.drop(columns="index")
    for column in ("rank", "class_id", "width", "height"):
        manifest[column] = manifest[column].astype("int64")
    mode = "r" if mmap else None
    return ImageStore(
        manifest=manifest,
        images=np.load(path / IMAGES_FILE, mmap_mode=mode, allow_pickle=False),
        masks=np.load(path / MASKS_FILE, mmap_mode=mode, allow_pickle=False),
        class_names={k: list(v) for k, v in meta["class_names"].items()},
        size=int(meta["size"]),
        dataset=meta.get("dataset", ""),
        extra=meta.get("extra", {}),
    )


def write_store(path: str | os.PathLike, data: ImageStore | ImageStream) -> None:
    """Writes atomically: into a temporary sibling folder, renamed to ``path`` once complete."""

    def write(tmp: Path) -> None:
        tmp.mkdir()
        write_store_into(tmp, data)

    atomic_write(path, write)


def write_store_into(folder: Path, data: ImageStore | ImageStream) -> None:
    """Writes the arrays with sequential file writes (not memory maps, whose dirty pages would count as the
    process's memory), so peak memory is one chunk whatever the dataset's size."""
    manifest = data.manifest.reset_index(drop=True)
    n, s = len(manifest), int(data.size)
    chunks = [(data.images, data.masks)] if isinstance(data, ImageStore) else data.chunks
    written = 0
    with _NpyWriter(folder / IMAGES_FILE, (n, s, s, 3)) as images, _NpyWriter(folder / MASKS_FILE, (n, s, s)) as masks:
        for chunk_images, chunk_masks in chunks:
            k = len(chunk_images)
            if written + k > n:
                raise ValueError(f"image stream yields more than the manifest's {n} rows")
            images.write(chunk_images)
            masks.write(chunk_masks)
            written += k
    if written != n:
        raise ValueError(f"image stream yielded {written} rows, the manifest has {n}")
    out = manifest.copy()
    out.insert(0, "index", np.arange(n))
    out.to_csv(folder / MANIFEST_FILE, index=False)
    meta = {"size": s, "dataset": data.dataset, "class_names": data.class_names, "extra": data.extra,
            "counts": {"images": n, "normal": int((manifest["label"] == NORMAL).sum()),
                       "anomaly": int((manifest["label"] == ANOMALY).sum())}}
    (folder / META_FILE).write_text(json.dumps(meta, indent=2))


class _NpyWriter:
    """A uint8 ``.npy`` file written row-chunk by row-chunk."""

    def __init__(self, path: Path, shape: tuple[int, ...]):
        self.path, self.shape = path, shape
        self.row_shape = shape[1:]

    def __enter__(self) -> _NpyWriter:
        self.handle = open(self.path, "wb")
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False, "shape": self.shape}
        np.lib.format.write_array_header_1_0(self.handle, header)
        return self

    def write(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=np.uint8)
        if rows.shape[1:] != self.row_shape:
            raise ValueError(f"{self.path.name}: rows of shape {rows.shape[1:]}, expected {self.row_shape}")
        self.handle.write(memoryview(rows).cast("B"))

    def __exit__(self, *exc) -> None:
        self.handle.close()
