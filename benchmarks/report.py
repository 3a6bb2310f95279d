"""Writes a benchmark's section into docs/benchmarks.md (replacing the previous one of the same title)."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
HEADER = "# Benchmarks\n\nEvery number below was measured by the script named in its section; re-run it to refresh.\n"


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU only"
    return f"{os.cpu_count()} cores ({cpu}), {device}, Python {platform.python_version()}, torch {torch.__version__}"


def write_section(title: str, body: str, command: str | None = None) -> None:
    """Replaces (or appends) ``## title`` with the body and the command, machine and date that made it."""
    command = command or "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = f"## {title}\n\n- command: `{command}`\n- machine: {machine()}\n- date: {stamp}\n\n{body.strip()}\n"
    replace_section(section)
    print(section)


def replace_section(section: str, path: Path = DOC) -> None:
    """``section`` starts with its ``## title`` line; it replaces that section of ``path`` or is appended."""
    title = section.splitlines()[0]
    if not title.startswith("## "):
        raise ValueError(f"a section starts with '## <title>', not {title!r}")
    text = path.read_text() if path.exists() else HEADER
    pattern = re.compile(rf"^{re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    block = section.rstrip("\n") + "\n\n"
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + block
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.rstrip("\n") + "\n")
