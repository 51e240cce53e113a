"""Shared helpers for benchmark scripts: robust timing and updating one section of BENCHMARKS.md.

Each script owns a section delimited by HTML comments, so scripts can be rerun independently
without clobbering each other's numbers. Timings are medians after warm-up: these machines are
shared and noisy, and every speed target is reported as a ratio to a reference measured in the
same run.
"""

from __future__ import annotations

import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import torch

CONFIGS = Path(__file__).resolve().parent.parent / "asr" / "configs"
BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
HEADER = "# Benchmarks\n\nEvery number below is written by a script under `benchmarks/`; rerun it to reproduce.\n"


def median_time(fn: Callable[[], object], *, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_gflops(n: int = 1024, repeats: int = 9) -> float:
    """Reference compute rate of this machine right now: a square fp32 matmul, median GFLOP/s."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    seconds = median_time(lambda: a @ b, repeats=repeats, warmup=2)
    return 2 * n**3 / seconds / 1e9


def machine_line() -> str:
    return (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}"
    )


def update_section(name: str, body: str) -> None:
    """Replace (or append) the section ``name`` of BENCHMARKS.md with ``body``."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    text = BENCHMARKS_MD.read_text(encoding="utf-8") if BENCHMARKS_MD.exists() else HEADER
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        _, after = rest.split(end, 1)
        text = before + block + after
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    BENCHMARKS_MD.write_text(text, encoding="utf-8")


def table(headers: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def parse_models(items: list[str]) -> list[tuple[str, str]]:
    """``--model NAME=PATH`` values as (name, path); exits with a message unless each path is a file."""
    models = []
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not Path(path).is_file():
            sys.exit(f"--model {item!r}: expected NAME=PATH to an existing checkpoint")
        models.append((name, path))
    return models
