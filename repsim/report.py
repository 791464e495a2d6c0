"""Tables of similarity results: CSV, JSON and Markdown, every file written atomically.

Nothing here computes similarity; the functions take the DataFrames of
:func:`repsim.compare.compare_models` and :func:`repsim.snapshots.report_snapshot` and write
them. Atomic means: the bytes go to a temporary file in the destination folder, which is then
renamed over the destination with :func:`os.replace`, so a reader never sees half a file.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()

@contextmanager
def atomic_open(path: str | Path) -> Iterator[BinaryIO]:
    """Open a binary stream whose bytes replace ``path`` atomically when the block ends.

    The stream is a temporary file in the destination folder (missing folders are created);
    on success it is flushed, fsynced and renamed over ``path`` with :func:`os.replace`; on any
    exception it is deleted and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_open`). Returns ``path``."""
    with atomic_open(path) as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`atomic_write_bytes`)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_csv(df: pd.DataFrame, path: str | Path) -> Path:
    """Write ``df`` as CSV without the index (NaN as an empty field), atomically."""
    return atomic_write_text(path, df.to_csv(index=False, float_format="%.17g"))


def _json_value(value: Any) -> Any:
    """A JSON-safe scalar: NaN and infinities become ``null``, numpy scalars become Python."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(obj: pd.DataFrame | Mapping[str, Any], path: str | Path) -> Path:
    """Write a DataFrame (as a list of row records) or a mapping as JSON, atomically.

    NaN and infinite values become ``null`` (JSON has no NaN).
    """
    if isinstance(obj, pd.DataFrame):
        payload: Any = [
            {k: _json_value(v) for k, v in row.items()} for row in obj.to_dict(orient="records")
        ]
    else:
        payload = obj
    return atomic_write_text(path, json.dumps(payload, indent=2, default=str) + "\n")


def markdown_table(df: pd.DataFrame, *, float_format: str = "{:.4f}") -> str:
    """Render ``df`` as a GitHub-flavoured Markdown table (index dropped; floats formatted with
    ``float_format``; NaN shown as ``NaN``; ``|`` in cells escaped)."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "NaN" if math.isnan(value) else float_format.format(value)
        return str(value).replace("|", "\\|")

    header = [cell(c) for c in df.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


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
    return [writers[fmt](df, out / f"{name}.{fmt}") for name, df in tables.items() for fmt in formats]
