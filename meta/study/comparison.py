"""Our numbers beside the paper's, as display tables: which of the paper's rows match a setting
of ours (:func:`paper_match`), the comparison of each table (:func:`comparison_table`), the
paper's own table (:func:`paper_display`), and every cell as a display string
(:func:`format_frame`).

Nothing here computes a result: every number of ours comes from the reproduction's CSVs; the one
aggregate, Table 3's mean over the body's layers (:func:`body_means`), is an average of the CSV's
values, the way the paper reports it.

Imports: :mod:`meta.core.names`, :mod:`meta.study.paper`, :mod:`meta.study.schema`; never matplotlib.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from meta.core.names import BODY
from meta.study import paper
from meta.study.schema import (
    ACCURACY_KEYS,
    COUNTS,
    NUMERIC,
    SHARED,
    finite,
    require,
    setting_label,
    sorted_rows,
)

#: Omniglot-shaped data sets the paper does not have: the paper's Omniglot rows are shown beside
#: them as a reference, marked as a different data set.
OMNIGLOT_LIKE = frozenset({"glyphs", "synthetic"})
SAME_SETTING = "same setting"
NOT_IN_THE_PAPER = "not in the paper"


# ---------------------------------------------------------------------------------------------
# Display strings
# ---------------------------------------------------------------------------------------------


def _number(value: Any, digits: int = 2) -> str:
    """``value`` with ``digits`` decimals; NaN/None as an empty string; a label as itself."""
    if not finite(value):
        return "" if value is None or isinstance(value, (float, np.floating)) else str(value)
    return f"{float(value):.{digits}f}"


def _pm(value: Any, half: Any, digits: int = 2) -> str:
    """``"97.31 ± 0.42"`` (or just the value when the half-width is unknown; ``n/a`` without a value)."""
    if not finite(value):
        return "n/a"
    return f"{value:.{digits}f} ± {half:.{digits}f}" if finite(half) else f"{value:.{digits}f}"


def _label(value: Any) -> str:
    """A label cell: the value as a string, missing values empty."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def format_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` in the paper's row order with every cell a display string: counts as
    integers, numbers with 2 decimals in accuracy tables (percent) and 3 in similarity tables,
    missing values empty."""
    shown = sorted_rows(frame).astype(object)
    digits = 2 if "accuracy" in frame.columns else 3
    for column in shown.columns:
        if column in COUNTS:
            shown[column] = [str(int(v)) if finite(v) else "" for v in shown[column]]
        elif column in NUMERIC:
            shown[column] = [_number(v, digits) for v in shown[column]]
        else:
            shown[column] = [_label(v) for v in shown[column]]
    return shown


# ---------------------------------------------------------------------------------------------
# Which of the paper's rows to show beside ours
# ---------------------------------------------------------------------------------------------


def paper_match(paper_rows: pd.DataFrame, dataset: str, ways: Any, shots: Any) -> tuple[pd.DataFrame, str]:
    """The paper's rows to show beside ours for a setting, and how they relate (a sentence;
    :data:`SAME_SETTING` when the setting is the same).

    Same data set: rows with the same ways and shots ("same setting"). An Omniglot-shaped data set
    the paper lacks (:data:`OMNIGLOT_LIKE`): the paper's Omniglot rows with the same ways and shots,
    else the same shots, labelled as a different data set. Otherwise nothing.
    """
    same_data = paper_rows[paper_rows["dataset"] == dataset]
    if not same_data.empty:
        rows = same_data[(same_data["ways"] == ways) & (same_data["shots"] == shots)]
        return rows, SAME_SETTING if not rows.empty else NOT_IN_THE_PAPER
    omniglot = paper_rows[paper_rows["dataset"] == "omniglot"]
    if dataset not in OMNIGLOT_LIKE or omniglot.empty:
        return paper_rows.iloc[:0], f"the paper has no {dataset} numbers for this table"
    for mask in ((omniglot["ways"] == ways) & (omniglot["shots"] == shots), omniglot["shots"] == shots):
        rows = omniglot[mask]
        if not rows.empty:
            first = rows.iloc[0]
            label = setting_label("Omniglot", first["ways"], first["shots"])
            return rows, f"reference only: the paper's {label}, a different data set (ours: {dataset})"
    return omniglot.iloc[:0], f"the paper has no {dataset} numbers and no Omniglot {int(shots)}-shot numbers"


def matching_rows(candidates: pd.DataFrame, keys: Mapping[str, Any]) -> pd.DataFrame:
    """The rows of ``candidates`` whose columns equal ``keys`` (column -> value)."""
    for column, value in keys.items():
        candidates = candidates[candidates[column] == value]
    return candidates


# ---------------------------------------------------------------------------------------------
# Comparisons
# ---------------------------------------------------------------------------------------------


def _accuracy_comparison(name: str, ours: pd.DataFrame) -> pd.DataFrame:
    """One row per row of ours: our accuracy ± 95% CI, the paper's accuracy ± its ``±``, how the
    two relate, and the difference (ours − paper, points) where the setting is the same."""
    keys = ACCURACY_KEYS[name]
    reference = paper.paper_table(name)
    rows = []
    for row in sorted_rows(ours).itertuples(index=False):
        mine = row._asdict()
        candidates, relation = paper_match(reference, mine["dataset"], mine["ways"], mine["shots"])
        candidates = matching_rows(candidates, {key: mine[key] for key in keys})
        theirs = candidates.iloc[0] if not candidates.empty else None
        same = theirs is not None and relation == SAME_SETTING
        if theirs is None and relation == SAME_SETTING:
            relation = NOT_IN_THE_PAPER
        rows.append(
            {
                **{key: mine[key] for key in keys},
                "setting": setting_label(mine["dataset"], mine["ways"], mine["shots"]),
                "ours (± 95% CI)": _pm(mine["accuracy"], mine["ci95"]),
                "paper (± as stated)": _pm(theirs["accuracy"], theirs["pm"]) if theirs is not None else "",
                "paper's setting": relation,
                "ours − paper": f"{mine['accuracy'] - theirs['accuracy']:+.2f}" if same else "",
            }
        )
    return pd.DataFrame(rows)


def body_means(frame: pd.DataFrame, value: str = "value") -> pd.DataFrame:
    """Mean of ``value`` over the body's layers (conv1..conv4, those present) per comparison (or
    algorithm), measure and setting, with ``n_layers``: how the paper's Table 3 reports similarity."""
    group = [c for c in ("comparison", "algorithm", "iteration", "measure", *SHARED) if c in frame.columns]
    body = frame[frame["layer"].isin(BODY)]
    return (
        body.groupby(group, sort=False, dropna=False)[value]
        .agg(["mean", "count"])
        .rename(columns={"mean": value, "count": "n_layers"})
        .reset_index()
    )


def _table3_comparison(ours: pd.DataFrame) -> pd.DataFrame:
    """Per comparison, measure and setting: our mean over the body's layers beside the paper's
    body average."""
    reference = paper.paper_table("table3_cross_model_similarity")
    rows = []
    for row in sorted_rows(body_means(ours)).itertuples(index=False):
        theirs = matching_rows(reference, {"comparison": row.comparison, "measure": row.measure})
        rows.append(
            {
                "comparison": row.comparison,
                "measure": row.measure,
                "setting": setting_label(row.dataset, row.ways, row.shots),
                "ours (mean over body layers)": f"{row.value:.3f} ({row.n_layers} layers)",
                "paper (body average)": f"{theirs['value'].iloc[0]:.2f}" if not theirs.empty else "",
                "paper's setting": "not stated in the paper's main text" if not theirs.empty else NOT_IN_THE_PAPER,
            }
        )
    return pd.DataFrame(rows)


def _figure2_comparison(ours: pd.DataFrame) -> pd.DataFrame:
    """Per row of ours that the paper bounds in its text (MAML's CCA): our value, the bound and
    whether ours is within it."""
    bounds = paper.paper_table("figure2_adaptation_similarity")
    rows = []
    for row in sorted_rows(ours).itertuples(index=False):
        bound = matching_rows(bounds, {"algorithm": row.algorithm, "layer": row.layer, "measure": row.measure})
        if bound.empty:
            continue
        relation, limit = bound["relation"].iloc[0], float(bound["value"].iloc[0])
        inside = row.value > limit if relation == ">" else row.value < limit
        rows.append(
            {
                "algorithm": row.algorithm,
                "layer": row.layer,
                "measure": row.measure,
                "setting": setting_label(row.dataset, row.ways, row.shots),
                "ours (± 95% CI)": _pm(row.value, row.ci95, 3),
                "paper (stated in text)": f"{relation} {limit}",
                "paper's setting": (
                    "MiniImageNet"
                    if row.dataset == "miniimagenet"
                    else f"reference only: MiniImageNet, a different data set (ours: {row.dataset})"
                ),
                "ours within the paper's bound": "yes" if inside else "no",
            }
        )
    return pd.DataFrame(rows)


def comparison_table(name: str, tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Our numbers of ``name`` beside the paper's, as display strings (one row per comparable row
    of ours). :class:`meta.study.schema.MissingTableError` when ``name`` was not measured; an
    empty frame where the paper has nothing to compare with (Figure 3)."""
    ours = require(tables, name)
    if name in ACCURACY_KEYS:
        return _accuracy_comparison(name, ours)
    if name == "table3_cross_model_similarity":
        return _table3_comparison(ours)
    if name == "figure2_adaptation_similarity":
        return _figure2_comparison(ours)
    return pd.DataFrame()


def paper_display(name: str) -> pd.DataFrame:
    """The paper's table ``name`` with only the columns it states, as display strings."""
    frame = paper.paper_table(name)
    stated = [c for c in frame.columns if frame[c].notna().any() and c not in ("quote", "n_tasks")]
    return format_frame(frame[stated])
