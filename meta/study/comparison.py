"""Our numbers beside the paper's, as display tables: which of the paper's rows match a setting
of ours (:func:`paper_match`), the comparison of each table (:func:`comparison_table`) and its
compact form for the report (:func:`comparison_view`: one sentence per setting saying what the
paper has, and only the columns that have something in them), the paper's own table in compact
form (:func:`paper_display`), and every cell as a display string (:func:`format_frame`).

Nothing here computes a result: every number of ours comes from the reproduction's CSVs; the one
aggregate, Table 3's mean over the body's layers (:func:`body_means`), is an average of the CSV's
values, the way the paper reports it.

Imports: :mod:`meta.core.names`, :mod:`meta.study` (paper, schema, labels); never matplotlib.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from meta.core.names import BODY
from meta.study import paper
from meta.study.labels import COLUMN_LABELS, label
from meta.study.schema import (
    ACCURACY_KEYS,
    COUNTS,
    NUMERIC,
    SHARED,
    finite,
    ordered,
    require,
    setting_label,
    sorted_rows,
)

#: Omniglot-shaped data sets the paper does not have: the paper's Omniglot rows are shown beside
#: them as a reference, marked as a different data set.
OMNIGLOT_LIKE = frozenset({"glyphs", "synthetic"})
SAME_SETTING = "the paper's numbers for the same setting"
NOT_IN_THE_PAPER = "the paper has no numbers for this setting"
#: Headers of the comparison tables.
OURS, PAPER, DIFFERENCE, SETTING, RELATION = "ours", "paper", "ours − paper", "setting", "paper's setting"


# ---------------------------------------------------------------------------------------------
# Display strings
# ---------------------------------------------------------------------------------------------


def _number(value: Any, digits: int = 2) -> str:
    """``value`` with ``digits`` decimals; NaN/None as an empty string; a label as itself."""
    if not finite(value):
        return "" if value is None or isinstance(value, (float, np.floating)) else str(value)
    return f"{float(value):.{digits}f}"


def pm_text(value: Any, half: Any, digits: int = 2) -> str:
    """``"97.31 ± 0.42"`` (just the value when the half-width is unknown; ``n/a`` without a value)."""
    if not finite(value):
        return "n/a"
    return f"{value:.{digits}f} ± {half:.{digits}f}" if finite(half) else f"{value:.{digits}f}"


def stated_text(value: Any, half: Any) -> str:
    """The paper's ``value ± half`` with the decimals it states (``"44.5 ± 0.8"``, ``"98.0 ± 0.04"``)."""

    def short(x: float) -> str:
        text = f"{x:.2f}"
        return text[:-1] if text.endswith("0") else text

    return f"{short(value)} ± {short(half)}" if finite(half) else short(value)


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
    """The paper's rows to show beside ours for a setting, and what they are (a phrase;
    :data:`SAME_SETTING` when the setting is the same).

    Same data set: rows with the same ways and shots. An Omniglot-shaped data set the paper lacks
    (:data:`OMNIGLOT_LIKE`): the paper's Omniglot rows with the same ways and shots, else the same
    shots, named as a reference from a different data set. Otherwise nothing.
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
            reference = setting_label("Omniglot", first["ways"], first["shots"])
            return rows, f"beside the paper's {reference}, a different data set: a reference only"
    return omniglot.iloc[:0], f"the paper has no {dataset} numbers and no Omniglot {int(shots)}-shot numbers"


def matching_rows(candidates: pd.DataFrame, keys: Mapping[str, Any]) -> pd.DataFrame:
    """The rows of ``candidates`` whose columns equal ``keys`` (column -> value)."""
    for column, value in keys.items():
        candidates = candidates[candidates[column] == value]
    return candidates


def _keys(row: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, str]:
    """The key columns of a row, with display headers and names (``MAML``, ``frozen at test time``)."""
    return {COLUMN_LABELS.get(key, key): label(key, row[key]) for key in keys}


# ---------------------------------------------------------------------------------------------
# Comparisons
# ---------------------------------------------------------------------------------------------


def _accuracy_comparison(name: str, ours: pd.DataFrame) -> pd.DataFrame:
    """One row per row of ours: our accuracy ± 95% CI, the paper's accuracy ± its ``±``, what the
    paper's row is, and the difference (ours − paper, points) where the setting is the same."""
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
                **_keys(mine, keys),
                SETTING: setting_label(mine["dataset"], mine["ways"], mine["shots"]),
                OURS: pm_text(mine["accuracy"], mine["ci95"]),
                PAPER: stated_text(theirs["accuracy"], theirs["pm"]) if theirs is not None else "",
                RELATION: relation,
                DIFFERENCE: f"{mine['accuracy'] - theirs['accuracy']:+.2f}" if same else "",
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
                **_keys(row._asdict(), ("comparison", "measure")),
                SETTING: setting_label(row.dataset, row.ways, row.shots),
                f"{OURS} (mean over conv1-4)": f"{row.value:.3f}" if row.n_layers == len(BODY) else "",
                f"{PAPER} (mean over the body)": f"{theirs['value'].iloc[0]:.2f}" if not theirs.empty else "",
                RELATION: "the paper's setting is not stated in its main text"
                if not theirs.empty
                else NOT_IN_THE_PAPER,
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
                **_keys(row._asdict(), ("algorithm", "layer", "measure")),
                SETTING: setting_label(row.dataset, row.ways, row.shots),
                OURS: pm_text(row.value, row.ci95, 3),
                PAPER: f"{relation} {limit}",
                RELATION: (
                    SAME_SETTING
                    if row.dataset == "miniimagenet"
                    else "beside the paper's bounds for MiniImageNet, a different data set: a reference only"
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


def _relation_sentence(name: str, setting: str, relations: list[str]) -> str:
    """What the paper has for one setting of ours, as a sentence."""
    text = "; ".join(relations)
    if "has no" in text:
        text += f" (its {paper.PROVENANCE[name].label}: {paper.PROVENANCE[name].setting.rstrip('.')})"
    return f"{setting}: {text}."


def comparison_view(name: str, tables: Mapping[str, pd.DataFrame]) -> tuple[list[str], pd.DataFrame]:
    """:func:`comparison_table` for the report: one sentence per setting saying what the paper
    has for it (said once, not on every row), and the table without the columns that are empty
    (no paper column when the paper has no numbers for any setting) or the same on every row."""
    table = comparison_table(name, tables)
    if table.empty:
        return [], table
    settings = ordered(table[SETTING])
    notes = [_relation_sentence(name, s, ordered(table.loc[table[SETTING] == s, RELATION])) for s in settings]
    empty = [c for c in table.columns if not table[c].astype(bool).any()]
    table = table.drop(columns=[RELATION, *empty, *([SETTING] if len(settings) == 1 else [])])
    constant = _constant_keys(table)
    if constant:
        notes.append("Every row: " + ", ".join(f"{column} {table[column].iloc[0]}" for column in constant) + ".")
    return notes, table.drop(columns=constant)


def _constant_keys(table: pd.DataFrame) -> list[str]:
    """The label columns of ``table`` (not ours, the paper's or their difference) with one value
    on every one of two or more rows."""
    numbers = [c for c in table.columns if c.startswith((OURS, PAPER, DIFFERENCE))]
    return [c for c in table.columns if c not in numbers and len(table) > 1 and table[c].nunique() == 1]


# ---------------------------------------------------------------------------------------------
# The paper's tables, compact
# ---------------------------------------------------------------------------------------------


def _accuracy_cells(frame: pd.DataFrame, index: list[str]) -> pd.DataFrame:
    """The paper's accuracy table ``frame`` pivoted: a row per value of the ``index`` columns, a
    column per setting, cells ``accuracy ± pm``."""
    cells = frame.assign(
        **{
            SETTING: [setting_label(*key) for key in zip(frame["dataset"], frame["ways"], frame["shots"])],
            "cell": [stated_text(v, h) for v, h in zip(frame["accuracy"], frame["pm"])],
            **{c: [label(c, v) for v in frame[c]] for c in index},
        }
    )
    table = cells.pivot_table(index=index, columns=SETTING, values="cell", aggfunc="first", sort=False)
    table = table.reindex(columns=ordered(cells[SETTING])).reset_index()
    table.columns.name = None
    return table.rename(columns={c: COLUMN_LABELS.get(c, c) for c in index}).fillna("")


def _by_label(frame: pd.DataFrame, index: str, column: str, cell: Any) -> pd.DataFrame:
    """A row per value of ``index``, a column per value of ``column`` (display names), cells ``cell(row)``."""
    rows: dict[str, dict[str, str]] = {}
    for row in frame.itertuples(index=False):
        key = label(index, getattr(row, index))
        rows.setdefault(key, {COLUMN_LABELS.get(index, index): key})[label(column, getattr(row, column))] = cell(row)
    return pd.DataFrame(list(rows.values())).fillna("")


def paper_display(name: str) -> pd.DataFrame:
    """The paper's table ``name`` in compact form, as display strings: a row per algorithm,
    frozen set, method or body and a column per setting (Tables 1, 2, 4, 5; a label the same on
    every row, such as Table 1's MAML, is left out); a row per pair of
    models and a column per measure (Table 3, averages over the body); the bounds its text states
    (Figure 2); the checkpoints it shows (Figure 3, which states no values)."""
    frame = paper.paper_table(name)
    if name in ACCURACY_KEYS:
        return _accuracy_cells(frame, [k for k in ACCURACY_KEYS[name] if frame[k].nunique() > 1])
    if name == "table3_cross_model_similarity":
        return _by_label(frame, "comparison", "measure", lambda row: f"{row.value:.2f}")
    if name == "figure2_adaptation_similarity":
        return _by_label(frame, "layer", "measure", lambda row: f"{row.relation} {row.value}").rename(
            columns=lambda c: f"MAML, {c}" if c != "layer" else c
        )
    return pd.DataFrame(
        [
            {
                SETTING: setting_label(*key),
                "checkpoints (training iterations)": ", ".join(str(i) for i in part["iteration"]),
            }
            for key, part in frame.groupby(["dataset", "ways", "shots"], sort=False)
        ]
    )
