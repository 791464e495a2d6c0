"""The paper's figures drawn from the reproduction's tables (matplotlib, no pyplot): Figure 2
(:func:`figure2_figure`), Figure 3 (:func:`figure3_figure`), each accuracy table beside the
paper's numbers (:func:`accuracy_figure`), Table 3 (:func:`cross_model_figure`), and a figure as
PNG bytes (:func:`figure_png`).

Drawing only: every value drawn is a value of a CSV's DataFrame (or of the paper's numbers);
nothing here computes a similarity.

Imports: matplotlib, seaborn, :mod:`meta.core.names`, :mod:`meta.study.schema`,
:mod:`meta.study.comparison`, :mod:`meta.study.findings`, :mod:`meta.study.paper`; never
:mod:`repsim.measures`.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from meta.core.names import FROZEN_LABELS, LAYERS
from meta.study import paper
from meta.study.comparison import SAME_SETTING, matching_rows, paper_match
from meta.study.findings import RULES, Rules
from meta.study.schema import ACCURACY_KEYS, ORDER, by_setting, ordered, require, setting_label, sorted_rows

#: One panel of a per-layer similarity grid: (axes, setting, measure, the panel's rows, the setting's rows).
Panel = tuple[Any, tuple, str, pd.DataFrame, pd.DataFrame]


def figure_png(fig: Figure, *, dpi: int = 120) -> bytes:
    """``fig`` rendered as PNG bytes (Agg canvas; no pyplot, no display)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------


def _grid(rows: int, columns: int, *, width: float = 4.2, height: float = 3.3) -> tuple[Figure, np.ndarray]:
    """A figure and its ``rows`` x ``columns`` array of axes (always 2-d)."""
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


def _require_rows(frame: pd.DataFrame, name: str) -> None:
    """``ValueError`` when ``frame`` (the table ``name``) has no rows to draw."""
    if frame.empty:
        raise ValueError(f"{name}: no rows to draw")


def _measure_panels(frame: pd.DataFrame, name: str) -> tuple[Figure, list[Panel]]:
    """A grid for a per-layer similarity table: one panel per setting (rows) and measure
    (columns), y from 0 to 1. Returns the figure and its :data:`Panel` s."""
    _require_rows(frame, name)
    settings = by_setting(frame)
    measures = ordered(frame["measure"], ORDER["measure"])
    fig, axes = _grid(len(settings), len(measures))
    panels = [
        (axes[r, c], key, measure, part[part["measure"] == measure], part)
        for r, (key, part) in enumerate(settings)
        for c, measure in enumerate(measures)
    ]
    for ax, *_ in panels:
        ax.set_ylim(0, 1.08)
    return fig, panels


# ---------------------------------------------------------------------------------------------
# The figures
# ---------------------------------------------------------------------------------------------


def figure2_figure(frame: pd.DataFrame, *, rules: Rules = RULES) -> Figure:
    """Figure 2: per-layer similarity before vs after adaptation (bars, ± 95% CI over tasks), one
    panel per measure (columns) and setting (rows), algorithms side by side; the dashed line is
    the conv-layer threshold of rule 1 (:class:`meta.study.findings.Rules`)."""
    fig, panels = _measure_panels(frame, "figure2_adaptation_similarity")
    for ax, key, measure, rows, part in panels:
        _grouped_bars(
            ax,
            rows,
            x="layer",
            hue="algorithm",
            value="value",
            error="ci95",
            x_order=ordered(part["layer"], LAYERS),
            hue_order=ordered(part["algorithm"], ORDER["algorithm"]),
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


def figure3_figure(frame: pd.DataFrame) -> Figure:
    """Figure 3: similarity before vs after adaptation per layer (one panel per measure) and test
    accuracy per frozen set (last panel) against the training iteration of the checkpoint, one
    row of panels per (setting, algorithm); error bars are 95% CIs over tasks."""
    _require_rows(frame, "figure3_early_training")
    similarity, freezing = frame[frame["kind"] == "similarity"], frame[frame["kind"] == "freezing"]
    measures = ordered(similarity["measure"], ORDER["measure"])
    panels = [("similarity", m) for m in measures] + ([("freezing", "accuracy")] if not freezing.empty else [])
    groups = [
        (key, algorithm, part[part["algorithm"] == algorithm])
        for key, part in by_setting(frame)
        for algorithm in ordered(part["algorithm"], ORDER["algorithm"])
    ]
    fig, axes = _grid(len(groups), len(panels))
    for r, (key, algorithm, part) in enumerate(groups):
        for c, (kind, measure) in enumerate(panels):
            ax = axes[r, c]
            rows = part[(part["kind"] == kind) & (part["measure"] == measure)]
            order = ordered(rows["layer"], LAYERS if kind == "similarity" else FROZEN_LABELS)
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


def _paper_points(
    ax: Any, positions: np.ndarray, part: pd.DataFrame, keys: Sequence[str], candidates: pd.DataFrame, relation: str
) -> None:
    """The paper's accuracy beside each of our bars where it has one: black diamonds, open for a
    reference from a different data set (``candidates`` and ``relation``: :func:`paper_match`)."""
    same = relation == SAME_SETTING
    for x, row in zip(positions, part.itertuples(index=False)):
        theirs = matching_rows(candidates, {k: getattr(row, k) for k in keys})
        if not theirs.empty:
            ax.plot(
                [x],
                [theirs["accuracy"].iloc[0]],
                marker="D",
                color="black",
                fillstyle="full" if same else "none",
                linestyle="none",
                label="paper" if same else "paper, other data set (reference)",
            )


def accuracy_figure(name: str, tables: Mapping[str, pd.DataFrame]) -> Figure:
    """Our accuracies of an accuracy table (bars, ± 95% CI over tasks), one panel per setting,
    with the paper's number beside each row where there is one (black diamonds; open diamonds:
    a reference from a different data set)."""
    ours = require(tables, name)
    _require_rows(ours, name)
    keys = ACCURACY_KEYS[name]
    settings = by_setting(sorted_rows(ours))
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
        _paper_points(ax, positions, part, keys, *paper_match(reference, *key))
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
        comparisons = ordered(part["comparison"], ORDER["comparison"])
        _grouped_bars(
            ax,
            rows,
            x="layer",
            hue="comparison",
            value="value",
            error="std",
            x_order=ordered(part["layer"], LAYERS),
            hue_order=comparisons,
        )
        palette = sns.color_palette("deep", len(comparisons))
        for i, comparison in enumerate(comparisons):
            theirs = matching_rows(reference, {"comparison": comparison, "measure": measure})
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
