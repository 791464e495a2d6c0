"""The training metrics of a run: running means between rows, and the rows written to
``metrics.csv`` and ``metrics.json`` (docs/formats.md, "Training run folder").

Imports: :mod:`meta.run.folder` and :mod:`repsim.io` only.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from meta.run.folder import RunFolder
from repsim.io import atomic_write_text, read_json, write_json

__all__ = ["MetricsLog", "MetricsWindow"]


@dataclass
class MetricsWindow:
    """Sums of the training metrics since the last metrics row (resumable: plain floats)."""

    count: int = 0
    sums: dict[str, float] = field(default_factory=dict)

    def add(self, metrics: Mapping[str, float], seconds: float) -> None:
        self.count += 1
        for name, value in {**metrics, "seconds": seconds}.items():
            self.sums[name] = self.sums.get(name, 0.0) + float(value)

    def row(self, iteration: int) -> dict[str, Any]:
        """The means as a ``train`` row (``None`` where not finite), and a fresh window."""
        means = {k: v / self.count for k, v in self.sums.items()}
        row = {
            "iteration": iteration,
            "split": "train",
            **{k: v if math.isfinite(v) else None for k, v in means.items()},
        }
        self.count, self.sums = 0, {}
        return row


class MetricsLog:
    """Rows of training and validation metrics, written to ``metrics.csv`` and ``metrics.json``
    (atomically). Accuracies are fractions; ``seconds`` is wall time per iteration."""

    def __init__(self, folder: RunFolder, rows: list[dict[str, Any]] | None = None) -> None:
        self.folder, self.rows = folder, list(rows or [])

    @classmethod
    def resume(cls, folder: RunFolder, count: int) -> MetricsLog:
        """The first ``count`` rows of ``metrics.json`` (rows after the checkpoint are dropped)."""
        rows = read_json(folder.metrics_json)["rows"] if folder.metrics_json.is_file() else []
        if len(rows) < count:
            raise ValueError(f"{str(folder.metrics_json)!r} has {len(rows)} rows, the checkpoint expects {count}")
        return cls(folder, rows[:count])

    def write(self) -> None:
        columns = list(dict.fromkeys(k for row in self.rows for k in row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.folder.metrics_csv, buffer.getvalue())
        write_json(self.folder.metrics_json, {"columns": columns, "rows": self.rows})
