"""Tables of a snapshot report (:func:`repsim.snapshot_report.report_snapshot`): the
before-vs-after pivot, its Markdown, and writing several tables at once.

Nothing here computes similarity; the functions take the report's DataFrames.

Imports: :mod:`repsim.io` only; never :mod:`repsim.measures` (tables compute no measure) nor
:mod:`meta`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from repsim.io import markdown_table, write_csv, write_json


def _mean_ci_cell(mean: float, half: float, n_tasks: int, n_undefined: int) -> str:
    """``"0.8123 ± 0.0312 (n=20)"``; the half-width is ``NaN`` for fewer than two tasks, and
    tasks without a value are counted (``"NaN (undefined in 20 tasks)"``)."""
    undefined = f", undefined in {n_undefined}" if n_undefined else ""
    if math.isnan(mean):
        return f"NaN (undefined in {n_undefined} tasks)"
    half_text = "NaN" if math.isnan(half) else f"{half:.4f}"
    return f"{mean:.4f} ± {half_text} (n={n_tasks}{undefined})"


def before_after_table(summary: pd.DataFrame, *, step: int | None = None) -> pd.DataFrame:
    """Pivot a snapshot summary to one row per (inputs, layer) and one column per measure at
    ``step`` (default: each input set's last step, i.e. before vs after adaptation); cells read
    ``mean ± CI half-width (n=tasks)``. Layers and measures keep their order of appearance."""
    rows = []
    for inputs, part in summary.groupby("inputs", sort=False):
        at = part[part["step"] == (part["step"].max() if step is None else step)]
        for layer, by_layer in at.groupby("layer", sort=False):
            row: dict[str, Any] = {"inputs": inputs, "step": int(by_layer["step"].iloc[0]), "layer": layer}
            for r in by_layer.itertuples(index=False):
                row[r.measure] = _mean_ci_cell(r.mean, r.ci_half_width, int(r.n_tasks), int(r.n_undefined))
            rows.append(row)
    return pd.DataFrame(rows)


def summary_markdown(summary: pd.DataFrame, *, confidence: float = 0.95, title: str | None = None) -> str:
    """Markdown report of a snapshot summary: the before-vs-after table (last inner step) with a
    sentence saying what the numbers are."""
    level = f"{round(confidence * 100)}%"
    text = [f"# {title}\n" if title else ""]
    text.append(
        "Similarity of each layer's representation before adaptation (meta-learned weights) and"
        " after the last inner-loop step, on each task's inputs passed as one batch. Cells: mean"
        f" over tasks ± half-width of the {level} t-interval over tasks"
        " (mean ± t_{n-1} s / sqrt(n)), with n the number of tasks with a value.\n"
    )
    text.append(markdown_table(before_after_table(summary)))
    return "\n".join(t for t in text if t)


def write_tables(
    tables: Mapping[str, pd.DataFrame], out_dir: str | Path, *, formats: Sequence[str] = ("csv",)
) -> list[Path]:
    """Write each DataFrame ``tables[name]`` as ``out_dir/name.<fmt>`` for each format in
    ``formats`` (``"csv"``, ``"json"``); returns the written paths."""
    writers = {"csv": write_csv, "json": write_json}
    unknown = set(formats) - set(writers)
    if unknown:
        raise ValueError(f"unknown table format(s) {sorted(unknown)}; choose from {sorted(writers)}")
    out = Path(out_dir)
    return [writers[fmt](out / f"{name}.{fmt}", df) for name, df in tables.items() for fmt in formats]
