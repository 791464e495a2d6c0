"""The paper's tables and figures from a reproduction folder: Markdown tables, figures, one
self-contained ``report.html`` with our numbers beside the paper's, and verdicts on the paper's
qualitative findings.

Input: the folder written by ``python -m meta reproduce --out DIR`` (docs/formats.md,
"Reproduction output"): ``preset.json``, ``tables/*.csv`` and ``figures/*.csv``. Nothing here
trains, evaluates or computes similarity: every number comes from those CSVs (plotting only
draws the DataFrames; the one aggregate, Table 3's mean over the body's layers, is an average of
the CSV's values, the way the paper reports it). A CSV that is absent is "not measured": its
section says so and the rest of the report is written.

Public entry points: :func:`write_paper_outputs` (writes ``tables/*.md``, ``figures/*.png`` and
``report.html``, atomically) and :func:`check_findings` (the verdicts). The notebooks of
``analysis_notebooks/`` call :func:`load_tables`, :func:`comparison_table`, the ``*_figure``
functions and :func:`figure_png`.

Findings checked (:data:`FINDINGS`), each ``holds`` / ``does not hold`` / ``not measured`` under an
explicit rule with thresholds from :class:`Rules`, on MAML rows as in the paper:

1. Figure 2: every conv layer's mean similarity before vs after adaptation (CCA and CKA, each
   measure present) is at least ``body_similarity_min`` and the head's is at least
   ``head_gap_min`` below the lowest conv layer's.
2. Table 1: freezing conv1-4 at test time costs at most ``freeze_drop_max`` accuracy points.
3. Table 2: ANIL's accuracy is within ``close_max`` points of MAML's.
4. Table 4: NIL's accuracy is within ``close_max`` points of ANIL's.
5. Figure 3: rules 1 and 2 hold at every training checkpoint in the CSV.

Each is decided per setting (data set, ways, shots); a finding holds when it holds in every
measured setting.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from meta.study import paper
from repsim.io import atomic_write_bytes, atomic_write_text, markdown_table

SHARED = ("dataset", "ways", "shots")
_ACCURACY = ("accuracy", "ci95", "std_seeds", "n_seeds", "n_tasks")
_SIMILARITY = ("value", "ci95", "std_seeds", "n_tasks", "n_seeds")
#: Required columns of each CSV (docs/formats.md); the file stem is the key.
COLUMNS: dict[str, tuple[str, ...]] = {
    "table1_freezing": ("algorithm", *SHARED, "frozen", *_ACCURACY),
    "table2_anil_vs_maml": ("algorithm", *SHARED, *_ACCURACY),
    "table3_cross_model_similarity": ("comparison", "layer", "measure", "value", "std", "n_pairs", *SHARED),
    "table4_nil": ("method", *SHARED, *_ACCURACY),
    "table5_body_regimes": ("regime", "test", *SHARED, *_ACCURACY),
    "figure2_adaptation_similarity": ("algorithm", "layer", "measure", *_SIMILARITY, *SHARED),
    "figure3_early_training": ("algorithm", "iteration", "kind", "layer", "measure", *_SIMILARITY, *SHARED),
}
TABLE_NAMES: tuple[str, ...] = tuple(name for name in COLUMNS if name.startswith("table"))
FIGURE_NAMES: tuple[str, ...] = tuple(name for name in COLUMNS if name.startswith("figure"))
_NUMERIC = {
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
}
_COUNTS = {"ways", "shots", "iteration", "n_seeds", "n_tasks", "n_pairs"}

TITLES: dict[str, str] = {
    "table1_freezing": "Table 1: freezing layers in the test-time inner loop",
    "table2_anil_vs_maml": "Table 2: ANIL vs MAML",
    "table3_cross_model_similarity": "Table 3: similarity of MAML and ANIL representations across models",
    "table4_nil": "Table 4: NIL-testing vs MAML and ANIL",
    "table5_body_regimes": "Table 5: how the body was trained, all tested with NIL",
    "figure2_adaptation_similarity": "Figure 2: similarity of each layer before vs after adaptation",
    "figure3_early_training": "Figure 3: feature reuse early in training",
}
#: Key columns that identify a row of an accuracy table beyond (dataset, ways, shots).
ACCURACY_KEYS: dict[str, tuple[str, ...]] = {
    "table1_freezing": ("algorithm", "frozen"),
    "table2_anil_vs_maml": ("algorithm",),
    "table4_nil": ("method",),
    "table5_body_regimes": ("regime", "test"),
}
#: Omniglot-shaped data sets the paper does not have: the paper's Omniglot rows are shown beside
#: them as a reference, marked as a different data set.
OMNIGLOT_LIKE = frozenset({"glyphs", "synthetic"})
#: Order of the values of categorical columns (others follow in order of appearance).
_ORDER = {
    "layer": paper.LAYERS,
    "frozen": paper.FROZEN_LABELS,
    "regime": paper.REGIMES,
    "algorithm": ("maml", "fomaml", "anil"),
    "method": ("maml", "anil", "nil"),
    "comparison": ("maml-maml", "anil-anil", "maml-anil"),
    "measure": ("cca", "cka"),
}
SIMILARITY_MEASURES = ("cca", "cka")

HOLDS, FAILS, NOT_MEASURED = "holds", "does not hold", "not measured"


class MissingTableError(ValueError):
    """A table the caller asked for was not measured (its CSV is absent)."""


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def csv_path(out_dir: str | Path, name: str) -> Path:
    """``out_dir/tables/<name>.csv`` or ``out_dir/figures/<name>.csv``."""
    if name not in COLUMNS:
        raise ValueError(f"unknown table {name!r}; known: {', '.join(COLUMNS)}")
    return Path(out_dir) / ("tables" if name in TABLE_NAMES else "figures") / f"{name}.csv"


def read_table(path: str | Path, name: str) -> pd.DataFrame:
    """Read one CSV of the reproduction output and check its columns (``ValueError`` naming the
    file and the missing columns, or a column that is not numeric where it must be). Empty fields
    are NaN; labels such as ``none`` and ``nil`` stay strings."""
    path = Path(path)
    try:
        frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError as error:
        raise ValueError(f"{path}: empty file, expected the columns {', '.join(COLUMNS[name])}") from error
    check_columns(frame, name, where=str(path))
    for column in _NUMERIC.intersection(frame.columns):
        try:
            frame[column] = pd.to_numeric(frame[column])
        except (ValueError, TypeError) as error:
            raise ValueError(f"{path}: column {column!r} must be numeric ({error})") from error
    return frame


def check_columns(frame: pd.DataFrame, name: str, *, where: str | None = None) -> None:
    """``ValueError`` naming ``where`` (default ``name``) and the columns of :data:`COLUMNS`
    that ``frame`` lacks."""
    missing = [column for column in COLUMNS[name] if column not in frame.columns]
    if missing:
        raise ValueError(f"{where or name}: missing column(s) {', '.join(missing)} (docs/formats.md, {name})")


def load_tables(out_dir: str | Path) -> dict[str, pd.DataFrame]:
    """Every CSV of the reproduction folder ``out_dir`` that exists, keyed by stem (e.g.
    ``"table1_freezing"``); absent CSVs are absent keys (not measured). ``ValueError`` when
    ``out_dir`` is not a folder."""
    out = Path(out_dir)
    if not out.is_dir():
        raise ValueError(f"reproduction folder {out} does not exist (expected the --out of `python -m meta reproduce`)")
    return {name: read_table(csv_path(out, name), name) for name in COLUMNS if csv_path(out, name).is_file()}


def load_preset(out_dir: str | Path) -> dict[str, Any] | None:
    """``out_dir/preset.json`` as a dict, or None when absent (``ValueError`` if it is not JSON)."""
    path = Path(out_dir) / "preset.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error


def require(tables: Mapping[str, pd.DataFrame], name: str) -> pd.DataFrame:
    """``tables[name]``, or :class:`MissingTableError` saying it was not measured."""
    if name not in tables:
        folder = "tables" if name in TABLE_NAMES else "figures"
        raise MissingTableError(f"{name} was not measured: no {folder}/{name}.csv in the reproduction folder")
    return tables[name]


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------


def _ordered(values: Iterable[Any], preferred: Sequence[Any] = ()) -> list[Any]:
    """Distinct values: those of ``preferred`` first in its order, then the rest as they appear."""
    seen = list(dict.fromkeys(values))
    return [v for v in preferred if v in seen] + [v for v in seen if v not in preferred]


#: Precedence of the columns rows are sorted by (settings first, then the paper's categories).
_SORT_BY = (
    "dataset",
    "ways",
    "shots",
    "comparison",
    "algorithm",
    "method",
    "regime",
    "test",
    "iteration",
    "kind",
    "measure",
    "frozen",
    "layer",
)


def _rank(column: pd.Series) -> np.ndarray:
    """Sort key of a column: numbers by value; labels in the paper's order (:data:`_ORDER`), then
    in order of appearance."""
    if pd.api.types.is_numeric_dtype(column):
        return column.to_numpy(dtype=float)
    order = _ordered(column, _ORDER.get(str(column.name), ()))
    return column.map({v: i for i, v in enumerate(order)}).to_numpy(dtype=float)


def _sorted_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows by setting, then in the paper's order of algorithms, frozen sets, layers... (stable)."""
    columns = [c for c in _SORT_BY if c in frame.columns]
    if frame.empty or not columns:
        return frame.reset_index(drop=True)
    order = np.lexsort([_rank(frame[c]) for c in reversed(columns)])
    return frame.iloc[order].reset_index(drop=True)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and math.isfinite(float(value))


def _number(value: Any, digits: int = 2) -> str:
    """``value`` with ``digits`` decimals; NaN/None as an empty string; a label as itself."""
    if not _finite(value):
        return "" if value is None or isinstance(value, (float, np.floating)) else str(value)
    return f"{float(value):.{digits}f}"


def _pm(value: Any, half: Any, digits: int = 2) -> str:
    """``"97.31 ± 0.42"`` (or just the value when the half-width is unknown)."""
    if not _finite(value):
        return "n/a"
    return f"{value:.{digits}f} ± {half:.{digits}f}" if _finite(half) else f"{value:.{digits}f}"


def setting_label(dataset: Any, ways: Any, shots: Any) -> str:
    """``"glyphs 5-way 1-shot"`` (parts the paper does not state are left out)."""
    parts = [str(dataset) if isinstance(dataset, str) else "setting not stated"]
    parts += [f"{int(ways)}-way"] if _finite(ways) else []
    parts += [f"{int(shots)}-shot"] if _finite(shots) else []
    return " ".join(parts)


def _settings(frame: pd.DataFrame) -> list[tuple[tuple[Any, Any, Any], pd.DataFrame]]:
    """``frame`` split by (dataset, ways, shots), in order of appearance."""
    keys = list(dict.fromkeys(zip(frame["dataset"], frame["ways"], frame["shots"])))
    return [
        (key, frame[(frame["dataset"] == key[0]) & (frame["ways"] == key[1]) & (frame["shots"] == key[2])])
        for key in keys
    ]


def format_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` with every cell a display string: counts as integers, numbers with 2
    decimals in accuracy tables (percent) and 3 in similarity tables, missing values empty."""
    shown = _sorted_rows(frame).astype(object)
    digits = 2 if "accuracy" in frame.columns else 3
    for column in shown.columns:
        if column in _COUNTS:
            shown[column] = [str(int(v)) if _finite(v) else "" for v in shown[column]]
        elif column in _NUMERIC:
            shown[column] = [_number(v, digits) for v in shown[column]]
        else:
            shown[column] = [
                "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in shown[column]
            ]
    return shown


# ---------------------------------------------------------------------------------------------
# Ours beside the paper
# ---------------------------------------------------------------------------------------------


def _paper_match(paper_rows: pd.DataFrame, dataset: str, ways: Any, shots: Any) -> tuple[pd.DataFrame, str]:
    """The paper's rows to show beside ours for a setting, and how they relate.

    Same data set: rows with the same ways and shots ("same setting"). An Omniglot-shaped data set
    the paper lacks (:data:`OMNIGLOT_LIKE`): the paper's Omniglot rows with the same ways and shots,
    else the same shots, labelled as a different data set. Otherwise nothing.
    """
    same_data = paper_rows[paper_rows["dataset"] == dataset]
    if not same_data.empty:
        rows = same_data[(same_data["ways"] == ways) & (same_data["shots"] == shots)]
        return rows, "same setting" if not rows.empty else "not in the paper"
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


def _accuracy_comparison(name: str, ours: pd.DataFrame) -> pd.DataFrame:
    """One row per row of ours: our accuracy ± 95% CI, the paper's accuracy ± its ``±``, how the
    two relate, and the difference (ours − paper, points) where the setting is the same."""
    keys = ACCURACY_KEYS[name]
    reference = paper.paper_table(name)
    rows = []
    for row in _sorted_rows(ours).itertuples(index=False):
        mine = row._asdict()
        candidates, relation = _paper_match(reference, mine["dataset"], mine["ways"], mine["shots"])
        for key in keys:
            candidates = candidates[candidates[key] == mine[key]]
        theirs = candidates.iloc[0] if not candidates.empty else None
        same = theirs is not None and relation == "same setting"
        if theirs is None and relation == "same setting":
            relation = "not in the paper"
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
    algorithm), measure and setting: how the paper's Table 3 reports similarity."""
    group = [c for c in ("comparison", "algorithm", "iteration", "measure", *SHARED) if c in frame.columns]
    body = frame[frame["layer"].isin(paper.BODY)]
    return (
        body.groupby(group, sort=False, dropna=False)[value]
        .agg(["mean", "count"])
        .rename(columns={"mean": value, "count": "n_layers"})
        .reset_index()
    )


def _table3_comparison(ours: pd.DataFrame) -> pd.DataFrame:
    reference = paper.paper_table("table3_cross_model_similarity")
    rows = []
    for row in _sorted_rows(body_means(ours)).itertuples(index=False):
        theirs = reference[(reference["comparison"] == row.comparison) & (reference["measure"] == row.measure)]
        rows.append(
            {
                "comparison": row.comparison,
                "measure": row.measure,
                "setting": setting_label(row.dataset, row.ways, row.shots),
                "ours (mean over body layers)": f"{row.value:.3f} ({row.n_layers} layers)",
                "paper (body average)": f"{theirs['value'].iloc[0]:.2f}" if not theirs.empty else "",
                "paper's setting": "not stated in the paper's main text" if not theirs.empty else "not in the paper",
            }
        )
    return pd.DataFrame(rows)


def _figure2_comparison(ours: pd.DataFrame) -> pd.DataFrame:
    bounds = paper.paper_table("figure2_adaptation_similarity")
    rows = []
    for row in _sorted_rows(ours).itertuples(index=False):
        bound = bounds[
            (bounds["algorithm"] == row.algorithm) & (bounds["layer"] == row.layer) & (bounds["measure"] == row.measure)
        ]
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
    of ours). :class:`MissingTableError` when ``name`` was not measured; an empty frame where the
    paper has nothing to compare with (Figure 3)."""
    ours = require(tables, name)
    if name in ACCURACY_KEYS:
        return _accuracy_comparison(name, ours)
    if name == "table3_cross_model_similarity":
        return _table3_comparison(ours)
    if name == "figure2_adaptation_similarity":
        return _figure2_comparison(ours)
    return pd.DataFrame()


def paper_display(name: str) -> pd.DataFrame:
    """The paper's table ``name`` with only the columns it states (display strings)."""
    frame = paper.paper_table(name)
    stated = [c for c in frame.columns if frame[c].notna().any() and c not in ("quote", "n_tasks")]
    return format_frame(frame[stated])


# ---------------------------------------------------------------------------------------------
# Findings
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rules:
    """Thresholds of the verdicts (similarities in [0, 1], accuracies in percentage points).

    Attributes:
        body_similarity_min: every conv layer's mean similarity before vs after adaptation must
            be at least this (the paper: CCA > 0.9 for the body).
        head_gap_min: the head's similarity must be at least this much below the lowest conv
            layer's (the paper: head CCA < 0.5).
        freeze_drop_max: freezing conv1-4 at test time may cost at most this many points (the
            paper's largest drop: 1.5 points, MiniImageNet 5-shot).
        close_max: "close" accuracies differ by at most this many points (the paper's largest
            ANIL−MAML gap: 2.5 points, Omniglot 20-way 1-shot).
    """

    body_similarity_min: float = 0.9
    head_gap_min: float = 0.1
    freeze_drop_max: float = 3.0
    close_max: float = 3.0


RULES = Rules()


@dataclass(frozen=True)
class Finding:
    """A verdict on one of the paper's qualitative findings.

    Attributes:
        key: short name (``adaptation_similarity``, ``freezing``, ``anil_vs_maml``, ``nil_vs_anil``,
            ``early_training``).
        source: where the paper shows it (``Figure 2``, ``Table 1``...).
        claim: the paper's claim.
        rule: the rule applied, thresholds included.
        verdict: :data:`HOLDS`, :data:`FAILS` (``does not hold``) or :data:`NOT_MEASURED`.
        evidence: the numbers used, one line per setting (or why nothing was measured).
    """

    key: str
    source: str
    claim: str
    rule: str
    verdict: str
    evidence: tuple[str, ...]


def _combine(verdicts: Iterable[str]) -> str:
    """Holds if every measured part holds; not measured if nothing was measured."""
    measured = [v for v in verdicts if v != NOT_MEASURED]
    if not measured:
        return NOT_MEASURED
    return HOLDS if all(v == HOLDS for v in measured) else FAILS


def _similarity_check(part: pd.DataFrame, where: str, rules: Rules) -> list[tuple[str, str]]:
    """Rule 1 on the similarity rows of one setting (one row per layer and measure):
    [(verdict, evidence)] per measure of :data:`SIMILARITY_MEASURES` present."""
    results = []
    for measure in [m for m in SIMILARITY_MEASURES if m in set(part["measure"])]:
        values = part[part["measure"] == measure].groupby("layer", sort=False)["value"].mean()
        missing = [layer for layer in paper.LAYERS if layer not in values.index or not _finite(values[layer])]
        if missing:
            results.append((NOT_MEASURED, f"{where}, {measure.upper()}: no value for {', '.join(missing)}"))
            continue
        body_min, head = float(values[list(paper.BODY)].min()), float(values["head"])
        ok = body_min >= rules.body_similarity_min and head <= body_min - rules.head_gap_min
        layers = ", ".join(f"{layer} {values[layer]:.3f}" for layer in paper.LAYERS)
        results.append(
            (
                HOLDS if ok else FAILS,
                f"{where}, {measure.upper()}: {layers}; lowest conv {body_min:.3f} "
                f"({'≥' if body_min >= rules.body_similarity_min else '<'} {rules.body_similarity_min}), "
                f"head {body_min - head:.3f} below it "
                f"({'≥' if body_min - head >= rules.head_gap_min else '<'} {rules.head_gap_min})",
            )
        )
    if not results:
        results.append((NOT_MEASURED, f"{where}: no CCA or CKA rows"))
    return results


def _gap_check(
    part: pd.DataFrame,
    column: str,
    first: str,
    second: str,
    where: str,
    *,
    limit: float,
    one_sided: bool,
    value: str = "accuracy",
) -> tuple[str, str]:
    """Compare ``value`` of the rows ``column == first`` and ``column == second``.

    ``one_sided``: holds if ``first − second <= limit`` (a drop); else holds if
    ``|second − first| <= limit``.
    """
    values = part.groupby(column, sort=False)[value].mean()
    missing = [label for label in (first, second) if label not in values.index or not _finite(values[label])]
    if missing:
        return NOT_MEASURED, f"{where}: no {column} = {', '.join(missing)} row"
    a, b = float(values[first]), float(values[second])
    if one_sided:
        gap, ok = a - b, a - b <= limit
        text = f"{first} {a:.2f}, {second} {b:.2f}: drop {gap:.2f} points ({'≤' if ok else '>'} {limit})"
    else:
        gap, ok = b - a, abs(b - a) <= limit
        text = f"{first} {a:.2f}, {second} {b:.2f}: {second} − {first} = {gap:+.2f} points (|·| {'≤' if ok else '>'} {limit})"
    return HOLDS if ok else FAILS, f"{where}: {text}"


def _freezing_check(part: pd.DataFrame, where: str, rules: Rules) -> list[tuple[str, str]]:
    """Rule 2 on one setting of Table 1, with the deepest frozen prefix that stays within the
    limit named in the evidence (feature reuse can hold for conv1-3 and not for conv4)."""
    verdict, text = _gap_check(part, "frozen", "none", "conv1-4", where, limit=rules.freeze_drop_max, one_sided=True)
    values = part.groupby("frozen", sort=False)["accuracy"].mean()
    if verdict == NOT_MEASURED:
        return [(verdict, text)]
    deepest = "none"
    for label in paper.FROZEN_LABELS[1:]:
        if label not in values.index or values["none"] - values[label] > rules.freeze_drop_max:
            break
        deepest = label
    return [
        (
            verdict,
            f"{text}; deepest frozen prefix within {rules.freeze_drop_max} points: {deepest} ({values[deepest]:.2f})",
        )
    ]


def _per_setting(
    frame: pd.DataFrame | None, check: Callable[[pd.DataFrame, str], list[tuple[str, str]]], absent: str
) -> tuple[str, tuple[str, ...]]:
    """Apply ``check`` to each setting of ``frame``; combine the verdicts."""
    if frame is None or frame.empty:
        return NOT_MEASURED, (absent,)
    results = [r for key, part in _settings(frame) for r in check(part, setting_label(*key))]
    return _combine(v for v, _ in results), tuple(text for _, text in results)


def _gap_finding(
    frame: pd.DataFrame | None, column: str, first: str, second: str, *, limit: float, one_sided: bool, absent: str
) -> tuple[str, tuple[str, ...]]:
    """:func:`_gap_check` of accuracies in each setting of ``frame``, combined."""
    return _per_setting(
        frame,
        lambda part, where: [_gap_check(part, column, first, second, where, limit=limit, one_sided=one_sided)],
        absent,
    )


def _maml_rows(frame: pd.DataFrame | None, column: str = "algorithm") -> pd.DataFrame | None:
    return None if frame is None else frame[frame[column] == "maml"]


def _early_check(part: pd.DataFrame, where: str, rules: Rules) -> list[tuple[str, str]]:
    """Rules 1 and 2 at each checkpoint iteration of one setting of Figure 3's CSV."""
    results = []
    for iteration in sorted(set(part["iteration"])):
        at = part[part["iteration"] == iteration]
        label = f"{where}, iteration {int(iteration)}"
        similarity = at[at["kind"] == "similarity"]
        freezing = at[at["kind"] == "freezing"]
        if not similarity.empty:
            results += _similarity_check(similarity, label, rules)
        if not freezing.empty:
            results.append(
                _gap_check(
                    freezing,
                    "layer",
                    "none",
                    "conv1-4",
                    label,
                    limit=rules.freeze_drop_max,
                    one_sided=True,
                    value="value",
                )
            )
    return results


#: (key, source, claim) of each finding, in the order of the paper.
FINDINGS: tuple[tuple[str, str, str], ...] = (
    (
        "adaptation_similarity",
        "Figure 2",
        "Inner-loop adaptation barely changes the conv layers' representations (CCA/CKA before vs "
        "after adaptation far higher than the head's): feature reuse.",
    ),
    ("freezing", "Table 1", "Freezing the body (conv1-4) in the test-time inner loop costs little accuracy."),
    ("anil_vs_maml", "Table 2", "ANIL (inner loop on the head only) matches MAML's accuracy."),
    ("nil_vs_anil", "Table 4", "NIL (no head, no inner loop at test time) matches ANIL's accuracy."),
    ("early_training", "Figure 3", "Feature reuse already dominates early in training (from the first checkpoints)."),
)


def _rule_texts(rules: Rules) -> dict[str, str]:
    similarity = (
        f"every MAML conv layer's mean similarity ≥ {rules.body_similarity_min} and the head's at "
        f"least {rules.head_gap_min} below the lowest conv layer's, for CCA and CKA (each one present)"
    )
    return {
        "adaptation_similarity": f"Before vs after adaptation: {similarity}",
        "freezing": f"Accuracy with conv1-4 frozen ≥ accuracy with none frozen − {rules.freeze_drop_max} points (MAML)",
        "anil_vs_maml": f"|ANIL − MAML| ≤ {rules.close_max} accuracy points",
        "nil_vs_anil": f"|NIL − ANIL| ≤ {rules.close_max} accuracy points",
        "early_training": (
            f"At every checkpoint iteration of the CSV: {similarity}; and conv1-4 frozen within "
            f"{rules.freeze_drop_max} points of none frozen"
        ),
    }


def check_findings(tables: Mapping[str, pd.DataFrame], *, rules: Rules = RULES) -> list[Finding]:
    """Verdicts on the paper's qualitative findings (:data:`FINDINGS`) for the DataFrames of
    :func:`load_tables` (keys are CSV stems; absent keys are not measured; ``ValueError`` for a
    table without the columns of :data:`COLUMNS`). The paper's Tables 1, 2 and 4
    (:func:`meta.study.paper.paper_table`) have those columns and may be passed too."""
    tables = dict(tables)
    for name, frame in tables.items():
        if name in COLUMNS:
            check_columns(frame, name)
    checks = {
        "adaptation_similarity": _per_setting(
            _maml_rows(tables.get("figure2_adaptation_similarity")),
            lambda part, where: _similarity_check(part, where, rules),
            "no MAML rows: figures/figure2_adaptation_similarity.csv absent or without MAML",
        ),
        "freezing": _per_setting(
            _maml_rows(tables.get("table1_freezing")),
            lambda part, where: _freezing_check(part, where, rules),
            "no MAML rows: tables/table1_freezing.csv absent or empty",
        ),
        "anil_vs_maml": _gap_finding(
            tables.get("table2_anil_vs_maml"),
            "algorithm",
            "maml",
            "anil",
            limit=rules.close_max,
            one_sided=False,
            absent="tables/table2_anil_vs_maml.csv absent or empty",
        ),
        "nil_vs_anil": _gap_finding(
            tables.get("table4_nil"),
            "method",
            "anil",
            "nil",
            limit=rules.close_max,
            one_sided=False,
            absent="tables/table4_nil.csv absent or empty",
        ),
        "early_training": _per_setting(
            _maml_rows(tables.get("figure3_early_training")),
            lambda part, where: _early_check(part, where, rules),
            "no MAML rows: figures/figure3_early_training.csv absent or without MAML",
        ),
    }
    rule_texts = _rule_texts(rules)
    return [Finding(key, source, claim, rule_texts[key], *checks[key]) for key, source, claim in FINDINGS]


def findings_frame(findings: Sequence[Finding]) -> pd.DataFrame:
    """The findings as a table: source, claim, verdict, rule, evidence (lines joined by "; ")."""
    return pd.DataFrame(
        [
            {
                "source": f.source,
                "claim": f.claim,
                "verdict": f.verdict,
                "rule": f.rule,
                "evidence": "; ".join(f.evidence),
            }
            for f in findings
        ]
    )


def findings_text(findings: Sequence[Finding]) -> str:
    """Plain-text verdicts, one block per finding."""
    blocks = [
        f"[{f.verdict}] {f.source}: {f.claim}\n  rule: {f.rule}\n" + "\n".join(f"  - {e}" for e in f.evidence)
        for f in findings
    ]
    return "\n".join(blocks)


# ---------------------------------------------------------------------------------------------
# Figures (draw the CSVs' DataFrames; never compute similarity)
# ---------------------------------------------------------------------------------------------


def figure_png(fig: Figure, *, dpi: int = 120) -> bytes:
    """``fig`` rendered as PNG bytes (Agg canvas; no pyplot, no display)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _grid(rows: int, columns: int, *, width: float = 4.2, height: float = 3.3) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(width * columns, height * rows), layout="constrained")
    return fig, fig.subplots(rows, columns, squeeze=False)


def _errors(values: pd.Series) -> np.ndarray:
    """CI half-widths for error bars (unknown ones drawn as 0)."""
    return np.nan_to_num(values.to_numpy(dtype=float), nan=0.0)


def _grouped_bars(
    ax: Any,
    frame: pd.DataFrame,
    *,
    x: str,
    hue: str,
    value: str,
    error: str,
    x_order: Sequence[Any],
    hue_order: Sequence[Any],
) -> None:
    """Bars of ``value`` ± ``error`` at each ``x`` category, one bar per ``hue`` side by side."""
    palette = sns.color_palette("deep", max(len(hue_order), 1))
    width = 0.8 / max(len(hue_order), 1)
    for i, name in enumerate(hue_order):
        part = frame[frame[hue] == name].groupby(x, sort=False)[[value, error]].mean().reindex(x_order)
        positions = np.arange(len(x_order)) + (i - (len(hue_order) - 1) / 2) * width
        ax.bar(
            positions,
            part[value].to_numpy(dtype=float),
            width,
            yerr=_errors(part[error]),
            capsize=3,
            color=palette[i],
            label=str(name).upper(),
        )
    ax.set_xticks(np.arange(len(x_order)), [str(v) for v in x_order])


def _require_rows(frame: pd.DataFrame, name: str) -> None:
    if frame.empty:
        raise ValueError(f"{name}: no rows to draw")


def _measure_panels(
    frame: pd.DataFrame, name: str
) -> tuple[Figure, list[tuple[Any, tuple, str, pd.DataFrame, pd.DataFrame]]]:
    """A grid for a per-layer similarity table: one panel per setting (rows) and measure
    (columns), y from 0 to 1. Returns the figure and, per panel, (axes, setting, measure, the
    panel's rows, the setting's rows)."""
    _require_rows(frame, name)
    settings = _settings(frame)
    measures = _ordered(frame["measure"], _ORDER["measure"])
    fig, axes = _grid(len(settings), len(measures))
    panels = [
        (axes[r, c], key, measure, part[part["measure"] == measure], part)
        for r, (key, part) in enumerate(settings)
        for c, measure in enumerate(measures)
    ]
    for ax, *_ in panels:
        ax.set_ylim(0, 1.08)
    return fig, panels


def figure2_figure(frame: pd.DataFrame, *, rules: Rules = RULES) -> Figure:
    """Figure 2: per-layer similarity before vs after adaptation (bars, ± 95% CI over tasks), one
    panel per measure (columns) and setting (rows), algorithms side by side; the dashed line is
    the conv-layer threshold of rule 1."""
    fig, panels = _measure_panels(frame, "figure2_adaptation_similarity")
    for ax, key, measure, rows, part in panels:
        _grouped_bars(
            ax,
            rows,
            x="layer",
            hue="algorithm",
            value="value",
            error="ci95",
            x_order=_ordered(part["layer"], paper.LAYERS),
            hue_order=_ordered(part["algorithm"], _ORDER["algorithm"]),
        )
        ax.axhline(
            rules.body_similarity_min,
            color="0.4",
            linestyle="--",
            linewidth=1,
            label=f"conv threshold {rules.body_similarity_min}",
        )
        ax.set_title(f"{measure.upper()}, {setting_label(*key)}", fontsize=10)
        ax.set_ylabel("similarity before vs after adaptation" if ax.get_subplotspec().is_first_col() else "")
    panels[0][0].legend(fontsize=8, loc="lower left")
    return fig


def _lines(ax: Any, frame: pd.DataFrame, *, by: str, order: Sequence[Any]) -> None:
    """One line per ``by`` value: ``value`` ± ``ci95`` against ``iteration``."""
    palette = sns.color_palette("deep", max(len(order), 1))
    for i, name in enumerate(order):
        part = frame[frame[by] == name].groupby("iteration")[["value", "ci95"]].mean().sort_index()
        ax.errorbar(
            part.index.to_numpy(),
            part["value"].to_numpy(dtype=float),
            yerr=_errors(part["ci95"]),
            marker="o",
            capsize=3,
            color=palette[i],
            label=str(name),
        )
    ax.set_xticks(sorted(set(frame["iteration"])))
    ax.set_xlabel("training iteration")


def figure3_figure(frame: pd.DataFrame) -> Figure:
    """Figure 3: similarity before vs after adaptation per layer (one panel per measure) and test
    accuracy per frozen set (last panel) against the training iteration of the checkpoint, one
    row of panels per (setting, algorithm); error bars are 95% CIs over tasks."""
    _require_rows(frame, "figure3_early_training")
    similarity, freezing = frame[frame["kind"] == "similarity"], frame[frame["kind"] == "freezing"]
    measures = _ordered(similarity["measure"], _ORDER["measure"])
    panels = [("similarity", m) for m in measures] + ([("freezing", "accuracy")] if not freezing.empty else [])
    groups = [
        (key, algorithm, part[part["algorithm"] == algorithm])
        for key, part in _settings(frame)
        for algorithm in _ordered(part["algorithm"], _ORDER["algorithm"])
    ]
    fig, axes = _grid(len(groups), len(panels))
    for r, (key, algorithm, part) in enumerate(groups):
        for c, (kind, measure) in enumerate(panels):
            ax = axes[r, c]
            rows = part[(part["kind"] == kind) & (part["measure"] == measure)]
            order = _ordered(rows["layer"], paper.LAYERS if kind == "similarity" else paper.FROZEN_LABELS)
            _lines(ax, rows, by="layer", order=order)
            what = (
                f"{measure.upper()} before vs after adaptation"
                if kind == "similarity"
                else "accuracy (%), frozen at test"
            )
            ax.set_title(f"{algorithm.upper()} {setting_label(*key)}\n{what}", fontsize=9)
            if kind == "similarity":
                ax.set_ylim(0, 1.08)
            ax.legend(fontsize=7, title="layer" if kind == "similarity" else "frozen", title_fontsize=7)
    return fig


def accuracy_figure(name: str, tables: Mapping[str, pd.DataFrame]) -> Figure:
    """Our accuracies of an accuracy table (bars, ± 95% CI over tasks), one panel per setting,
    with the paper's number beside each row where there is one (black diamonds; open diamonds:
    a reference from a different data set)."""
    ours = require(tables, name)
    _require_rows(ours, name)
    keys = ACCURACY_KEYS[name]
    settings = _settings(_sorted_rows(ours))
    fig, axes = _grid(1, len(settings), width=max(3.6, 0.9 * len(ours) / max(len(settings), 1) + 2))
    reference = paper.paper_table(name)
    for c, (key, part) in enumerate(settings):
        ax = axes[0, c]
        labels = ["/".join(str(v) for v in values) for values in zip(*(part[k] for k in keys))]
        positions = np.arange(len(part))
        ax.bar(
            positions,
            part["accuracy"].to_numpy(dtype=float),
            0.6,
            yerr=_errors(part["ci95"]),
            capsize=3,
            color=sns.color_palette("deep")[0],
            label="ours",
        )
        candidates, relation = _paper_match(reference, *key)
        for x, row in zip(positions, part.itertuples(index=False)):
            theirs = candidates
            for k in keys:
                theirs = theirs[theirs[k] == getattr(row, k)]
            if not theirs.empty:
                same = relation == "same setting"
                ax.plot(
                    [x],
                    [theirs["accuracy"].iloc[0]],
                    marker="D",
                    color="black",
                    fillstyle="full" if same else "none",
                    linestyle="none",
                    label="paper" if same else "paper, other data set (reference)",
                )
        ax.set_xticks(positions, labels, rotation=30 if len(part) > 3 else 0, fontsize=8)
        ax.set_title(setting_label(*key), fontsize=10)
        ax.set_ylabel("accuracy (%)" if c == 0 else "")
        handles, names = ax.get_legend_handles_labels()
        unique = dict(zip(names, handles))
        ax.legend(unique.values(), unique.keys(), fontsize=7, loc="lower right")
    return fig


def cross_model_figure(frame: pd.DataFrame) -> Figure:
    """Table 3: similarity of two models' representations per layer (bars ± std over pairs), one
    panel per measure and setting, comparisons side by side; dotted lines: the paper's body
    averages."""
    fig, panels = _measure_panels(frame, "table3_cross_model_similarity")
    reference = paper.paper_table("table3_cross_model_similarity")
    for ax, key, measure, rows, part in panels:
        comparisons = _ordered(part["comparison"], _ORDER["comparison"])
        _grouped_bars(
            ax,
            rows,
            x="layer",
            hue="comparison",
            value="value",
            error="std",
            x_order=_ordered(part["layer"], paper.LAYERS),
            hue_order=comparisons,
        )
        palette = sns.color_palette("deep", len(comparisons))
        for i, comparison in enumerate(comparisons):
            theirs = reference[(reference["comparison"] == comparison) & (reference["measure"] == measure)]
            if not theirs.empty:
                ax.axhline(theirs["value"].iloc[0], color=palette[i], linestyle=":", linewidth=1.2)
        ax.set_title(f"{measure.upper()}, {setting_label(*key)}\n(dotted: paper's body average)", fontsize=9)
    panels[0][0].legend(fontsize=7, loc="lower left")
    return fig


#: The figures of the reproduction output: name -> drawing function of its CSV's DataFrame.
FIGURES: dict[str, Callable[[pd.DataFrame], Figure]] = {
    "figure2_adaptation_similarity": figure2_figure,
    "figure3_early_training": figure3_figure,
}


# ---------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------


def provenance_lines(name: str) -> list[str]:
    """Where the paper's ``name`` comes from: citation, claim, setting, meaning of ±, text version."""
    source = paper.PROVENANCE[name]
    note = [f"Note: {source.note}"] if source.note else []
    return [
        f"{source.label} of {paper.CITATION}",
        f"Claim: {source.caption}",
        f"Setting: {source.setting}",
        f"± in the paper: {source.pm}.",
        *note,
        f"Numbers read from: {source.version}.",
    ]


def table_markdown(name: str, ours: pd.DataFrame) -> str:
    """Markdown for ``tables/<name>.md``: every row of our CSV, our numbers beside the paper's,
    and the paper's table with its provenance."""
    tables = {name: ours}
    parts = [
        f"# {TITLES[name]}\n",
        f"Ours: every row of `tables/{name}.csv`. Accuracies in percent; `ci95` is the half-width of a "
        "95% confidence interval over test tasks; `std_seeds` the standard deviation over seeds.\n",
        markdown_table(format_frame(ours)) if not ours.empty else "_No rows: not measured._\n",
        "## Beside the paper\n",
    ]
    beside = comparison_table(name, tables) if not ours.empty else pd.DataFrame()
    parts.append(markdown_table(beside) if not beside.empty else "_Nothing comparable._\n")
    parts.append(f"## The paper's {paper.PROVENANCE[name].label}\n")
    parts.append(markdown_table(paper_display(name)))
    parts.append("\n".join(f"- {line}" for line in provenance_lines(name)) + "\n")
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1100px;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .6em 0 1em; font-size: .88em; }
th, td { border: 1px solid #ccc; padding: .25em .55em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
.verdict { font-weight: bold; white-space: nowrap; }
.holds { color: #1b6e20; } .does-not-hold { color: #b00020; } .not-measured { color: #777; }
.note { color: #555; font-size: .92em; }
img { max-width: 100%; border: 1px solid #ddd; }
nav a { margin-right: .8em; }
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _html_table(frame: pd.DataFrame) -> str:
    """A DataFrame of display strings as an HTML table (every cell escaped)."""
    if frame.empty:
        return '<p class="note">Nothing to show.</p>'
    head = "".join(f"<th>{_esc(c)}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_esc(v)}</td>" for v in row) + "</tr>" for row in frame.itertuples(index=False)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _verdict_span(verdict: str) -> str:
    return f'<span class="verdict {verdict.replace(" ", "-")}">{_esc(verdict)}</span>'


def _findings_html(findings: Sequence[Finding]) -> str:
    rows = "".join(
        f"<tr><td>{_esc(f.source)}</td><td>{_esc(f.claim)}</td><td>{_verdict_span(f.verdict)}</td>"
        f"<td>{_esc(f.rule)}</td><td><ul>{''.join(f'<li>{_esc(e)}</li>' for e in f.evidence)}</ul></td></tr>"
        for f in findings
    )
    return (
        "<table><thead><tr><th>paper</th><th>claim</th><th>verdict</th><th>rule</th><th>our numbers</th>"
        f"</tr></thead><tbody>{rows}</tbody></table>"
    )


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested JSON as (dotted key, JSON value) pairs."""
    if isinstance(value, dict) and value:
        return [
            pair for key, item in value.items() for pair in _flatten(item, f"{prefix}.{key}" if prefix else str(key))
        ]
    return [(prefix or "(value)", json.dumps(value))]


def _settings_html(out_dir: Path, preset: dict[str, Any] | None, tables: Mapping[str, pd.DataFrame]) -> str:
    measured = ", ".join(tables) if tables else "none"
    parts = [f"<p>Folder: <code>{_esc(out_dir.resolve())}</code>. CSVs found: {_esc(measured)}.</p>"]
    if preset is None:
        parts.append('<p class="note">preset.json not found: the settings of this reproduction are unknown.</p>')
    else:
        if preset.get("description"):
            parts.append(f"<p><b>Preset {_esc(preset.get('preset', ''))}</b>: {_esc(preset['description'])}</p>")
        notes = "".join(f"<li>{_esc(note)}</li>" for note in preset.get("notes", ()))
        if notes:
            parts.append(f"<ul>{notes}</ul>")
        pairs = pd.DataFrame(_flatten(preset), columns=["setting", "value"])
        parts.append(
            "<details><summary>Every setting of every run (<code>preset.json</code>)</summary>"
            f"{_html_table(pairs)}</details>"
        )
    return "".join(parts)


def _png_html(png: bytes, alt: str) -> str:
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def _section_html(
    name: str, tables: Mapping[str, pd.DataFrame], findings: Sequence[Finding], figures: Mapping[str, bytes]
) -> str:
    """One table or figure: ours, beside the paper, the paper's numbers and provenance."""
    source = paper.PROVENANCE[name]
    folder = "tables" if name in TABLE_NAMES else "figures"
    parts = [
        f'<section id="{name}"><h2>{_esc(TITLES[name])}</h2>',
        f'<p class="note">Paper ({_esc(source.label)}): {_esc(source.caption)}</p>',
    ]
    related = [f for f in findings if f.source == source.label]
    parts += [f"<p>Finding: {_verdict_span(f.verdict)} ({_esc(f.rule)}).</p>" for f in related]
    ours = tables.get(name)
    if ours is None or ours.empty:
        parts.append(f'<p class="verdict not-measured">Not measured: no {folder}/{name}.csv rows in this folder.</p>')
    else:
        if name in figures:
            parts.append(_png_html(figures[name], TITLES[name]))
        parts.append(f"<h3>Ours</h3>{_html_table(format_frame(ours))}")
        beside = comparison_table(name, tables)
        if not beside.empty:
            parts.append(f"<h3>Beside the paper</h3>{_html_table(beside)}")
    if name in paper.FIGURE_FINDINGS:
        parts.append(f"<h3>What the paper shows</h3><p>{_esc(paper.FIGURE_FINDINGS[name])}</p>")
    parts.append(f"<h3>The paper's numbers</h3>{_html_table(paper_display(name))}")
    parts.append('<ul class="note">' + "".join(f"<li>{_esc(line)}</li>" for line in provenance_lines(name)) + "</ul>")
    return "".join(parts) + "</section>"


def report_html(
    out_dir: str | Path,
    tables: Mapping[str, pd.DataFrame],
    *,
    findings: Sequence[Finding],
    figures: Mapping[str, bytes],
    preset: dict[str, Any] | None,
) -> str:
    """The self-contained report: one HTML string with inline CSS, figures as base64 PNG, no
    reference to any other file or URL (links only to its own sections)."""
    names = (*TABLE_NAMES, *FIGURE_NAMES)
    nav = "".join(f'<a href="#{n}">{_esc(paper.PROVENANCE[n].label)}</a>' for n in names)
    missing = "".join(f"<li><b>{_esc(m['what'])}</b>: {_esc(m['why'])}</li>" for m in paper.MISSING)
    return "".join(
        [
            '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
            "<title>Reproduction of Rapid Learning or Feature Reuse? (Raghu et al., ICLR 2020)</title>",
            f"<style>{_CSS}</style></head><body>",
            "<h1>Rapid Learning or Feature Reuse? Our reproduction beside the paper</h1>",
            f'<p class="note">Paper: {_esc(paper.CITATION)} Paper numbers read from the {_esc(paper.SOURCE_VERSION)}.</p>',
            f'<nav><a href="#findings">Findings</a><a href="#settings">Settings</a>{nav}<a href="#missing">Not found</a></nav>',
            '<section id="findings"><h2>Findings</h2><p>Each of the paper\'s qualitative findings checked on our '
            "numbers under the stated rule, per setting (data set, ways, shots).</p>",
            _findings_html(findings),
            "</section>",
            f'<section id="settings"><h2>Settings</h2>{_settings_html(Path(out_dir), preset, tables)}</section>',
            *(_section_html(name, tables, findings, figures) for name in names),
            '<section id="missing"><h2>Paper numbers not given here</h2><ul>',
            missing,
            "</ul></section>",
            "</body></html>\n",
        ]
    )


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------


def write_paper_outputs(out_dir: str | Path, *, rules: Rules = RULES) -> Path:
    """Write, from the CSVs of the reproduction folder ``out_dir``: ``tables/<name>.md`` for each
    table CSV present, ``figures/<name>.png`` for each figure CSV with rows, and ``report.html``
    (self-contained). Every file is written atomically. Returns the path of ``report.html``."""
    out = Path(out_dir)
    tables = load_tables(out)
    preset = load_preset(out)
    for name in TABLE_NAMES:
        if name in tables:
            atomic_write_text(out / "tables" / f"{name}.md", table_markdown(name, tables[name]))
    figures = {}
    for name, draw in FIGURES.items():
        if name in tables and not tables[name].empty:
            figures[name] = figure_png(draw(tables[name]))
            atomic_write_bytes(out / "figures" / f"{name}.png", figures[name])
    findings = check_findings(tables, rules=rules)
    return atomic_write_text(
        out / "report.html", report_html(out, tables, findings=findings, figures=figures, preset=preset)
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m meta.study.paper_report DIR``: write the tables, figures and report of ``DIR`` and
    print the verdicts."""
    parser = argparse.ArgumentParser(prog="python -m meta.study.paper_report", description=main.__doc__)
    parser.add_argument("out_dir", help="output folder of `python -m meta reproduce`")
    args = parser.parse_args(argv)
    try:
        report = write_paper_outputs(args.out_dir)
    except ValueError as error:
        parser.exit(2, f"error: {error}\n")
    print(findings_text(check_findings(load_tables(args.out_dir))))
    print(f"wrote {report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
