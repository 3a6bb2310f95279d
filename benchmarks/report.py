"""Writes a benchmark's section into docs/benchmarks.md (replacing the previous one of the same title)."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
DOC_ENV = "UNIFIED_ANOMALY_BENCHMARKS_DOC"  # another file to write to (benchmarks/run_all.py --quick sets it)
HEADER = "# Benchmarks\n\nEvery number below was measured by the script named in its section; re-run it to refresh.\n"


def _cpuinfo() -> dict[str, str]:
    """The first CPU's fields of /proc/cpuinfo (empty where there is none)."""
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return info


def cpu_isa(info: dict[str, str] | None = None) -> str:
    """The widest vector ISA relevant to torch: bf16 matmuls need AVX-512 BF16 or AMX ("" when unknown)."""
    flags = set((_cpuinfo() if info is None else info).get("flags", "").split())
    for flag, name in (("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX-512 BF16"), ("avx512f", "AVX-512"),
                       ("avx2", "AVX2")):
        if flag in flags:
            return name
    return ""


def cpu_description() -> str:
    """The CPU's model name, family/model and ISA: two machines named alike can differ by 2× in these
    benchmarks."""
    info = _cpuinfo()
    cpu = info.get("model name") or platform.processor() or platform.machine()
    family = f"family {info['cpu family']} model {info.get('model', '?')}" if "cpu family" in info else ""
    return ", ".join(part for part in (cpu, family, cpu_isa(info)) if part)


def machine() -> str:
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU only"
    return f"{os.cpu_count()} cores ({cpu_description()}), {device}, Python {platform.python_version()}, torch {torch.__version__}"


def write_section(title: str, body: str, command: str | None = None) -> None:
    """Replaces (or appends) ``## title`` with the body and the command, machine and date that made it."""
    command = command or "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = f"## {title}\n\n- command: `{command}`\n- machine: {machine()}\n- date: {stamp}\n\n{body.strip()}\n"
    replace_section(section)
    print(section)


def doc_path() -> Path:
    """docs/benchmarks.md, or the file named by the environment variable ``UNIFIED_ANOMALY_BENCHMARKS_DOC``."""
    return Path(os.environ.get(DOC_ENV) or DOC)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (``ru_maxrss``; Linux reports KiB), in MB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def replace_section(section: str, path: Path | None = None) -> None:
    """``section`` starts with its ``## title`` line; it replaces that section of ``path`` or is appended.

    A section that reports no peak RSS gets the benchmark process's peak so far (all its model runs together).
    """
    path = Path(path) if path is not None else doc_path()
    title = section.splitlines()[0]
    if not title.startswith("## "):
        raise ValueError(f"a section starts with '## <title>', not {title!r}")
    if "peak rss" not in section.lower():
        section = (section.rstrip("\n") + f"\n\nPeak RSS of the benchmark process (ru_maxrss, every model run "
                   f"of it together, data included): {peak_rss_mb():.0f} MB.\n")
    text = path.read_text() if path.exists() else HEADER
    pattern = re.compile(rf"^{re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    block = section.rstrip("\n") + "\n\n"
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + block
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.rstrip("\n") + "\n")


def replace_preamble(preamble: str, path: Path | None = None) -> None:
    """Replaces everything before the first ``## `` section (title, intro, run-all header) with ``preamble``."""
    path = Path(path) if path is not None else doc_path()
    text = path.read_text() if path.exists() else HEADER
    match = re.search(r"^## ", text, re.M)
    rest = text[match.start():] if match else ""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(preamble.rstrip("\n") + "\n\n" + rest.rstrip("\n") + "\n")
