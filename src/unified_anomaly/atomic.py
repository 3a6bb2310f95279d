"""Atomic writes: a file or folder appears complete or not at all."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Calls ``write(tmp)`` for a temporary sibling of ``path`` and renames it to ``path`` once complete.

    ``write`` creates ``tmp`` as a file or a folder. Nothing is left behind if it fails or is interrupted
    (a hard kill can leave a ``.tmp-*`` sibling, which no reader ever picks up).
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} already exists; versions are written once")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".tmp-{path.name}-{uuid.uuid4().hex[:8]}"
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
        raise
