"""The files of a reproduction folder, defined once: every table's and figure's CSV name, columns
and place (``tables/<name>.csv`` or ``figures/<name>.csv``), the order of their labels, and how
they are written and read back (docs/formats.md, "Reproduction output").

The pipeline writes the CSVs with :func:`write_table`; the report, the notebooks and the tests'
fake reproduction read them with :func:`read_table` / :func:`load_tables`, so a column changes
here or nowhere.

Imports: :mod:`meta.core.names` and :mod:`repsim.io`; nothing else of :mod:`meta.study`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from meta.core.names import BODY_BASELINES, FROZEN_LABELS, LAYERS, META_LEARNERS
from repsim.io import write_csv

#: Columns every CSV has (but those of the meta-RL study, :data:`RL_NAMES`): the few-shot setting.
SHARED: tuple[str, ...] = ("dataset", "ways", "shots")
_ACCURACY = ("accuracy", "ci95", "std_seeds", "n_seeds", "n_tasks")
_SIMILARITY = ("value", "ci95", "std_seeds", "n_tasks", "n_seeds")
#: Columns of each CSV, in order; the file stem is the key.
COLUMNS: dict[str, tuple[str, ...]] = {
    "table1_freezing": ("algorithm", *SHARED, "frozen", *_ACCURACY),
    "table2_anil_vs_maml": ("algorithm", *SHARED, *_ACCURACY),
    "table3_cross_model_similarity": ("comparison", "layer", "measure", "value", "std", "n_pairs", *SHARED),
    "table4_nil": ("method", *SHARED, *_ACCURACY),
    "table5_body_regimes": ("regime", "test", *SHARED, *_ACCURACY),
    "figure2_adaptation_similarity": ("algorithm", "layer", "measure", *_SIMILARITY, *SHARED),
    "figure3_early_training": ("algorithm", "iteration", "kind", "layer", "measure", *_SIMILARITY, *SHARED),
    # the paper's analyses beyond its main tables (meta.study.aggregate_analyses)
    "figure5_learning_curves": ("algorithm", "seed", "iteration", "split", "accuracy", "loss", "wall_seconds", *SHARED),
    "figure_weight_movement": ("algorithm", "architecture", "step", "layer", "quantity", *_SIMILARITY, *SHARED),
    "figure_regime_similarity": ("regime_a", "regime_b", "layer", "measure", "value", "ci95", "n_tasks", *SHARED),
    "table_test_time_heads": ("body", "procedure", "adapted", *SHARED, *_ACCURACY),
    "table_speed": ("quantity", "maml_seconds", "anil_seconds", "speedup", "paper_speedup", "repeats", *SHARED),
    # the architecture study: when does feature reuse hold?
    "table_architecture_accuracy": ("architecture", "algorithm", "procedure", "frozen", "steps", *SHARED, *_ACCURACY),
    "figure_architecture_similarity": ("architecture", "algorithm", "step", "layer", "measure", *_SIMILARITY, *SHARED),
    # the meta-RL study (presets with ``rl`` only; meta.study.rl_study): no few-shot setting
    "table2_rl": (
        "env",
        "algorithm",
        "steps",
        "return",
        "ci95",
        "std_seeds",
        "n_seeds",
        "n_tasks",
        "horizon",
        "iterations",
    ),
    "figure_rl_similarity": ("env", "algorithm", "layer", "measure", *_SIMILARITY, "steps"),
}
#: The CSVs of the meta-RL study: written only by presets with ``rl`` (the others never have them),
#: and without the few-shot setting's columns.
RL_NAMES: tuple[str, ...] = ("table2_rl", "figure_rl_similarity")
#: The CSVs under ``tables/`` and under ``figures/``.
TABLE_NAMES: tuple[str, ...] = tuple(name for name in COLUMNS if name.startswith("table"))
FIGURE_NAMES: tuple[str, ...] = tuple(name for name in COLUMNS if name.startswith("figure"))
#: Columns read as numbers (``pm`` is the paper's ``±``, see :mod:`meta.study.paper`).
NUMERIC: frozenset[str] = frozenset(
    {
        "ways",
        "shots",
        "iteration",
        "accuracy",
        "ci95",
        "std_seeds",
        "n_seeds",
        "n_tasks",
        "value",
        "std",
        "n_pairs",
        "pm",
        "seed",
        "loss",
        "wall_seconds",
        "step",
        "steps",
        "maml_seconds",
        "anil_seconds",
        "speedup",
        "paper_speedup",
        "repeats",
        "return",
        "horizon",
        "iterations",
    }
)
#: Numeric columns that count things (shown as integers).
COUNTS: frozenset[str] = frozenset(
    {
        "ways",
        "shots",
        "iteration",
        "n_seeds",
        "n_tasks",
        "n_pairs",
        "seed",
        "step",
        "steps",
        "repeats",
        "horizon",
        "iterations",
    }
)
#: Key columns that identify a row of an accuracy table beyond (dataset, ways, shots).
ACCURACY_KEYS: dict[str, tuple[str, ...]] = {
    "table1_freezing": ("algorithm", "frozen"),
    "table2_anil_vs_maml": ("algorithm",),
    "table4_nil": ("method",),
    "table5_body_regimes": ("regime", "test"),
}

#: Table 5's rows: how the body was trained (all tested with NIL), in the paper's order.
BODY_REGIMES: tuple[str, ...] = ("maml", "anil", *BODY_BASELINES)
#: The similarity measures the paper reports.
SIMILARITY_MEASURES: tuple[str, ...] = ("cca", "cka")
#: Order of the values of categorical columns (others follow in order of appearance).
ORDER: dict[str, tuple[str, ...]] = {
    "layer": LAYERS,
    "frozen": FROZEN_LABELS,
    "regime": BODY_REGIMES,
    "algorithm": META_LEARNERS,
    "method": ("maml", "anil", "nil"),
    "comparison": ("maml-maml", "anil-anil", "maml-anil"),
    "measure": SIMILARITY_MEASURES,
    "regime_a": BODY_REGIMES,
    "regime_b": BODY_REGIMES,
    "body": META_LEARNERS,
}
#: Precedence of the columns rows are sorted by (settings first, then the paper's categories).
_SORT_BY = (
    *SHARED,
    "env",
    "comparison",
    "architecture",
    "body",
    "algorithm",
    "method",
    "regime",
    "regime_a",
    "regime_b",
    "test",
    "procedure",
    "quantity",
    "seed",
    "split",
    "iteration",
    "kind",
    "steps",
    "measure",
    "frozen",
    "step",
    "layer",
)


class MissingTableError(ValueError):
    """A table the caller asked for was not measured (its CSV is absent)."""


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------


def folder_of(name: str) -> str:
    """``"tables"`` or ``"figures"``: where the CSV ``name`` lives (``ValueError`` for an unknown name)."""
    if name not in COLUMNS:
        raise ValueError(f"unknown table {name!r}; known: {', '.join(COLUMNS)}")
    return "tables" if name in TABLE_NAMES else "figures"


def csv_path(out_dir: str | Path, name: str) -> Path:
    """``out_dir/tables/<name>.csv`` or ``out_dir/figures/<name>.csv``."""
    return Path(out_dir) / folder_of(name) / f"{name}.csv"


def write_table(out_dir: str | Path, name: str, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write the CSV ``name`` from ``rows`` (dicts keyed by column), with exactly the columns of
    :data:`COLUMNS` in order, atomically; returns its path."""
    return write_csv(csv_path(out_dir, name), pd.DataFrame(list(rows), columns=list(COLUMNS[name])))


def check_columns(frame: pd.DataFrame, name: str, *, where: str | None = None) -> None:
    """``ValueError`` naming ``where`` (default ``name``) and the columns of :data:`COLUMNS`
    that ``frame`` lacks."""
    missing = [column for column in COLUMNS[name] if column not in frame.columns]
    if missing:
        raise ValueError(f"{where or name}: missing column(s) {', '.join(missing)} (docs/formats.md, {name})")


def read_table(path: str | Path, name: str) -> pd.DataFrame:
    """One CSV of the reproduction output as a DataFrame, its columns checked (``ValueError``
    naming the file and the missing columns, or a column that is not numeric where it must be).
    Empty fields are NaN; labels such as ``none`` and ``nil`` stay strings."""
    path = Path(path)
    try:
        frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError as error:
        raise ValueError(f"{path}: empty file, expected the columns {', '.join(COLUMNS[name])}") from error
    check_columns(frame, name, where=str(path))
    for column in NUMERIC.intersection(frame.columns):
        try:
            frame[column] = pd.to_numeric(frame[column])
        except (ValueError, TypeError) as error:
            raise ValueError(f"{path}: column {column!r} must be numeric ({error})") from error
    return frame


def load_tables(out_dir: str | Path) -> dict[str, pd.DataFrame]:
    """Every CSV of the reproduction folder ``out_dir`` that exists, keyed by stem (e.g.
    ``"table1_freezing"``); absent CSVs are absent keys (not measured). ``ValueError`` when
    ``out_dir`` is not a folder."""
    out = Path(out_dir)
    if not out.is_dir():
        what = "is not a folder" if out.exists() else "does not exist"
        raise ValueError(f"reproduction folder {out} {what} (expected the --out of `python -m meta reproduce`)")
    return {name: read_table(csv_path(out, name), name) for name in COLUMNS if csv_path(out, name).is_file()}


def require(tables: Mapping[str, pd.DataFrame], name: str) -> pd.DataFrame:
    """``tables[name]``, or :class:`MissingTableError` saying it was not measured."""
    if name not in tables:
        raise MissingTableError(f"{name} was not measured: no {folder_of(name)}/{name}.csv in the reproduction folder")
    return tables[name]


# ---------------------------------------------------------------------------------------------
# Rows: settings and the paper's order
# ---------------------------------------------------------------------------------------------


def finite(value: Any) -> bool:
    """Whether ``value`` is a finite number (not NaN, None or a label)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and math.isfinite(float(value))


def ordered(values: Iterable[Any], preferred: Sequence[Any] = ()) -> list[Any]:
    """The distinct ``values``: those of ``preferred`` first in its order, then the rest as they appear."""
    seen = list(dict.fromkeys(values))
    return [v for v in preferred if v in seen] + [v for v in seen if v not in preferred]


def _rank(column: pd.Series) -> np.ndarray:
    """Sort key of a column: numbers by value; labels in the paper's order (:data:`ORDER`), then
    in order of appearance."""
    if pd.api.types.is_numeric_dtype(column):
        return column.to_numpy(dtype=float)
    order = ordered(column, ORDER.get(str(column.name), ()))
    return column.map({v: i for i, v in enumerate(order)}).to_numpy(dtype=float)


def sorted_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame``'s rows by setting, then in the paper's order of algorithms, frozen sets,
    layers... (stable), with a fresh index."""
    columns = [c for c in _SORT_BY if c in frame.columns]
    if frame.empty or not columns:
        return frame.reset_index(drop=True)
    order = np.lexsort([_rank(frame[c]) for c in reversed(columns)])
    return frame.iloc[order].reset_index(drop=True)


def setting_label(dataset: Any, ways: Any, shots: Any) -> str:
    """``"glyphs 5-way 1-shot"`` (parts the paper does not state are left out)."""
    parts = [str(dataset) if isinstance(dataset, str) else "setting not stated"]
    parts += [f"{int(ways)}-way"] if finite(ways) else []
    parts += [f"{int(shots)}-shot"] if finite(shots) else []
    return " ".join(parts)


def by_setting(frame: pd.DataFrame) -> list[tuple[tuple[Any, Any, Any], pd.DataFrame]]:
    """``frame`` split by (dataset, ways, shots), in order of appearance: ``[(setting, rows)]``."""
    keys = list(dict.fromkeys(zip(frame["dataset"], frame["ways"], frame["shots"])))
    return [
        (key, frame[(frame["dataset"] == key[0]) & (frame["ways"] == key[1]) & (frame["shots"] == key[2])])
        for key in keys
    ]
