"""Comparing two output folders' CSVs where only the wall clock may differ: the columns that are
clock readings (:func:`clock_columns`) are left out, every other byte must agree."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def clock_columns(columns) -> list[str]:
    """The columns that are wall-clock readings, which no two runs share: ``seconds`` and
    ``*_seconds`` (metrics.csv's ``seconds`` and ``comm_seconds``, figure 5's ``wall_seconds``,
    the speed table's ``maml_seconds`` and ``anil_seconds``) and ``speedup`` (a ratio of two)."""
    return [c for c in columns if c in ("seconds", "speedup") or c.endswith("_seconds")]


def csv_contents(path: Path) -> pd.DataFrame | bytes:
    """A CSV's bytes, or where it has clock columns its other columns."""
    frame = pd.read_csv(path)
    clocks = clock_columns(frame.columns)
    return frame.drop(columns=clocks) if clocks else path.read_bytes()


def csv_files(out: Path) -> dict[str, pd.DataFrame | bytes]:
    """Every CSV under ``out`` (relative path -> :func:`csv_contents`)."""
    return {str(path.relative_to(out)): csv_contents(path) for path in sorted(out.rglob("*.csv"))}


def assert_same_csv(a: Path, b: Path) -> None:
    """``a`` and ``b`` agree byte for byte, clock columns aside."""
    left, right = csv_contents(a), csv_contents(b)
    if isinstance(left, bytes):
        assert left == right, f"{a} differs from {b}"
    else:
        pd.testing.assert_frame_equal(left, right, check_exact=True, obj=str(a))
