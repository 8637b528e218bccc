"""The machine a benchmark ran on, in one line, for the pages in docs/benchmarks/."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import torch

#: Benchmark clocks: CPU time of the calling thread (robust to other processes on a shared
#: machine, for single-threaded runs) or wall-clock time.
CLOCKS = {"cpu": time.thread_time, "wall": time.perf_counter}


def machine() -> str:
    """CPU model, logical CPUs, torch version and intra-op threads, Python version."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__} "
        f"({torch.get_num_threads()} intra-op thread(s)), Python {platform.python_version()}"
    )


def write_page(text: str, out: str) -> None:
    """Print a benchmark's Markdown page and write it to ``out`` (its folder created)."""
    print(text)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(text)
