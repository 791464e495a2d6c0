"""Small helpers shared by ``bench_distributed.py`` and ``bench_gpu.py``: the machine's load in
words, medians that tolerate empty lists, ratios, Markdown tables, and a wall-clock budget that
timing loops consult so that a whole script stays within a bound.

Nothing here times anything by itself; each benchmark's docstring says what it measures.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Sequence

__all__ = ["Budget", "load_line", "markdown_table", "median", "ratio"]


def load_line() -> str:
    """The 1-, 5- and 15-minute load averages and the CPU count, in words (the machines are
    shared: a reader needs this beside any timing)."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} on {os.cpu_count()} CPUs"


def median(values: Sequence[float]) -> float:
    """The median, NaN for no values."""
    return statistics.median(values) if values else float("nan")


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, NaN when the denominator is 0 or NaN."""
    return numerator / denominator if denominator and denominator == denominator else float("nan")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub Markdown table (cells as given, ``str()``-ed)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


class Budget:
    """A wall-clock allowance: ``left()`` seconds remain of ``seconds`` from its creation;
    ``share(parts)`` is an even share of what is left among ``parts`` remaining pieces of work."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = time.perf_counter()

    def used(self) -> float:
        return time.perf_counter() - self.started

    def left(self) -> float:
        return self.seconds - self.used()

    def share(self, parts: int) -> float:
        return max(0.0, self.left()) / max(1, parts)
