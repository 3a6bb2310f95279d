"""Shared base: a versioned dataset stored on the local file system, written atomically."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io.core import AbstractVersionedDataset, Version

from unified_anomaly.atomic import atomic_write


class LocalVersionedDataset(AbstractVersionedDataset):
    """Subclasses implement ``_write(path, data)`` and ``_read(path)``; this class resolves versions and makes
    every save atomic (a temporary sibling renamed into place), so a failed or interrupted run never leaves a
    version that ``load`` could pick up."""

    def __init__(self, filepath: str, version: Version | None = None, metadata: dict[str, Any] | None = None):
        super().__init__(filepath=PurePosixPath(Path(filepath).as_posix()), version=version)
        self.metadata = metadata

    def load(self) -> Any:
        path = Path(self._get_load_path())
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist: run the pipeline that writes it first")
        return self._read(path)

    def save(self, data: Any) -> None:
        path = Path(self._get_save_path())
        atomic_write(path, lambda tmp: self._write(tmp, data))

    def _exists(self) -> bool:
        try:
            return Path(self._get_load_path()).exists()
        except Exception:  # no version yet
            return False

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "version": self._version}

    def _read(self, path: Path) -> Any:
        raise NotImplementedError

    def _write(self, path: Path, data: Any) -> None:
        raise NotImplementedError

