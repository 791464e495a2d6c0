"""The paper's figures drawn from the reproduction's tables (matplotlib, no pyplot): Figure 2
(:func:`figure2_figure`), Figure 3 (:func:`figure3_figure`), each accuracy table beside the
paper's numbers (:func:`accuracy_figure`), Table 3 (:func:`cross_model_figure`), and a figure as
PNG bytes (:func:`figure_png`). :data:`FIGURES` holds the figures of the report, each with the
caption the report prints under it (:class:`FigureSpec`).

Every panel has both axes labelled; legends sit outside the panels (they cover no data); every
figure says in a footnote what its error bars are (:mod:`meta.study.labels`: a 95% confidence
interval over test tasks, or a standard deviation over model pairs) and names its measures
("mean CCA (all coefficients)", "linear CKA").

Drawing only: every value drawn is a value of a CSV's DataFrame (or of the paper's numbers);
nothing here computes a similarity.

Imports: matplotlib, seaborn, :mod:`meta.core.names`, :mod:`meta.study` (schema, comparison,
verdicts, labels, paper); never :mod:`repsim.measures`.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter, NullLocator

from meta.core.names import FROZEN_LABELS, LAYERS
from meta.study import paper
from meta.study.comparison import SAME_SETTING, matching_rows, paper_match
from meta.study.labels import COLUMN_LABELS, interval_text, label, measure_label, seeds_text
from meta.study.schema import ACCURACY_KEYS, ORDER, by_setting, ordered, require, setting_label, sorted_rows
from meta.study.verdicts import RULES, Rules

#: One panel of a per-layer similarity grid: (axes, setting, measure, the panel's rows, the setting's rows).
Panel = tuple[Any, tuple, str, pd.DataFrame, pd.DataFrame]
#: Size of tick labels, axis labels, titles and footnotes (points).
TICKS, LABELS, TITLES, NOTES = 9, 9, 10, 8


def figure_png(fig: Figure, *, dpi: int = 120) -> bytes:
    """``fig`` rendered as PNG bytes (Agg canvas; no pyplot, no display)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------


def _grid(rows: int, columns: int, *, width: float = 3.9, height: float = 3.0) -> tuple[Figure, np.ndarray]:
    """A figure and its ``rows`` x ``columns`` array of axes (always 2-d)."""
    fig = Figure(figsize=(width * columns, height * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.tick_params(labelsize=TICKS)
    return fig, axes


def _label_axes(ax: Any, x: str, y: str, title: str) -> None:
    """Both axis labels and the title of a panel."""
    ax.set_xlabel(x, fontsize=LABELS)
    ax.set_ylabel(y, fontsize=LABELS)
    ax.set_title(title, fontsize=TITLES)


def _footnote(fig: Figure, text: str) -> None:
    """``text`` under every panel, left-aligned and small (what the error bars are)."""
    fig.supxlabel(text, x=0.005, ha="left", fontsize=NOTES, color="0.3", wrap=True)


def _legend_above(fig: Figure, ax: Any, **kwargs: Any) -> None:
    """The legend of ``ax``'s artists (one entry per label) above every panel, outside them."""
    handles, names = ax.get_legend_handles_labels()
    unique = dict(zip(names, handles))
    fig.legend(unique.values(), unique.keys(), loc="outside upper center", ncols=len(unique), fontsize=LABELS, **kwargs)


def _errors(values: pd.Series) -> np.ndarray:
    """Error-bar half-widths (unknown ones, NaN, are not drawn)."""
    return values.to_numpy(dtype=float)


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
            label=label(hue, name),
        )
    ax.set_xticks(np.arange(len(x_order)), [str(v) for v in x_order])


def _algorithm_bars(ax: Any, rows: pd.DataFrame, part: pd.DataFrame) -> None:
    """MAML beside ANIL at each layer: ``value`` ± ``ci95`` of ``rows``, the layers and algorithms
    of ``part`` in their usual order."""
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


def _lines(
    ax: Any,
    frame: pd.DataFrame,
    *,
    by: str,
    order: Sequence[Any],
    palette: Sequence[Any],
    x: str = "iteration",
    log: bool = True,
) -> None:
    """One line per ``by`` value: ``value`` ± ``ci95`` against ``x`` (the training iteration on a
    log scale by default; an inner step on a linear one), a tick at every ``x`` value."""
    for i, name in enumerate(order):
        part = frame[frame[by] == name].groupby(x)[["value", "ci95"]].mean().sort_index()
        ax.errorbar(
            part.index.to_numpy(),
            part["value"].to_numpy(dtype=float),
            yerr=_errors(part["ci95"]),
            marker="o",
            markersize=4,
            capsize=3,
            color=palette[i],
            label=label(by, name),
        )
    values = sorted(set(frame[x]))
    if log:
        ax.set_xscale("log")
        ax.set_xlim(values[0] / 1.4, values[-1] * 1.4)
    else:
        ax.set_xlim(values[0] - 0.5, values[-1] + 0.5)
    ax.set_xticks(values, [str(int(v)) for v in values])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())


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
    fig, axes = _grid(len(settings), len(measures), width=4.2)
    panels = [
        (axes[r, c], key, measure, part[part["measure"] == measure], part)
        for r, (key, part) in enumerate(settings)
        for c, measure in enumerate(measures)
    ]
    for ax, *_ in panels:
        ax.set_ylim(0, 1.05)
    return fig, panels


def _measures_text(frame: pd.DataFrame) -> str:
    """The measures of ``frame`` by name: ``"mean CCA (all coefficients) and linear CKA"``."""
    names = [measure_label(m) for m in ordered(frame["measure"], ORDER["measure"])]
    return " and ".join(names)


# ---------------------------------------------------------------------------------------------
# The figures
# ---------------------------------------------------------------------------------------------


def figure2_figure(frame: pd.DataFrame, *, rules: Rules = RULES) -> Figure:
    """Figure 2: per-layer similarity before vs after adaptation (bars, ± 95% CI over test
    tasks), one panel per measure (columns) and setting (rows), algorithms side by side; the
    dashed line is the conv-layer threshold of the Figure 2 rule (:class:`meta.study.verdicts.Rules`)."""
    fig, panels = _measure_panels(frame, "figure2_adaptation_similarity")
    for ax, key, measure, rows, part in panels:
        _algorithm_bars(ax, rows, part)
        ax.axhline(rules.body_similarity_min, color="0.4", linestyle="--", linewidth=1, label="rule's conv minimum")
        _label_axes(ax, "layer", f"{measure_label(measure)}\nbefore vs after adaptation", setting_label(*key))
    _legend_above(fig, panels[0][0])
    _footnote(fig, f"Error bars: {interval_text(frame['n_tasks'], frame['n_seeds'])}.")
    return fig


def figure2_caption(frame: pd.DataFrame, *, rules: Rules = RULES) -> str:
    """What Figure 2 shows, its measures and its error bars, for the report."""
    return (
        "Similarity of each layer's representation of a task's query set before vs after the test-time inner "
        f"loop ({_measures_text(frame)}; 1 means unchanged). Bars: mean over test tasks and seeds. Error bars: "
        f"{interval_text(frame['n_tasks'], frame['n_seeds'])}. Dashed line: {rules.body_similarity_min}, "
        "the least the rule allows for a conv layer."
    )


def figure3_figure(frame: pd.DataFrame) -> Figure:
    """Figure 3: similarity before vs after adaptation per layer (one panel per measure) and test
    accuracy per frozen set (last panel) against the training iteration of the checkpoint (log
    scale), one row of panels per (setting, algorithm); error bars are 95% CIs over test tasks."""
    _require_rows(frame, "figure3_early_training")
    similarity, freezing = frame[frame["kind"] == "similarity"], frame[frame["kind"] == "freezing"]
    measures = ordered(similarity["measure"], ORDER["measure"])
    panels = [("similarity", m) for m in measures] + ([("freezing", "accuracy")] if not freezing.empty else [])
    groups = [
        (key, algorithm, part[part["algorithm"] == algorithm])
        for key, part in by_setting(frame)
        for algorithm in ordered(part["algorithm"], ORDER["algorithm"])
    ]
    fig, axes = _grid(len(groups), len(panels), width=3.2, height=2.9)
    layers = ordered(similarity["layer"], LAYERS)
    frozen = ordered(freezing["layer"], FROZEN_LABELS)
    for r, (key, algorithm, part) in enumerate(groups):
        for c, (kind, measure) in enumerate(panels):
            ax = axes[r, c]
            rows = part[(part["kind"] == kind) & (part["measure"] == measure)]
            if kind == "similarity":
                _lines(ax, rows, by="layer", order=layers, palette=sns.color_palette("deep", len(layers)))
                ax.set_ylim(0, 1.05)
                y = f"{measure_label(measure)}\nbefore vs after adaptation"
            else:
                _lines(ax, rows, by="layer", order=frozen, palette=sns.color_palette("viridis", len(frozen)))
                y = "accuracy (%)"
            _label_axes(
                ax, "training iteration (log scale)", y, f"{label('algorithm', algorithm)}, {setting_label(*key)}"
            )
    if measures:
        _legend_above(fig, axes[0, 0], title="layer (similarity panels)", title_fontsize=NOTES)
    if not freezing.empty:
        axes[0, -1].legend(
            title="frozen at test time",
            fontsize=NOTES,
            title_fontsize=NOTES,
            loc="upper left",
            bbox_to_anchor=(1.02, 1),
        )
    _footnote(fig, f"Error bars: {_figure3_intervals(similarity, freezing)}.")
    return fig


def _figure3_intervals(similarity: pd.DataFrame, freezing: pd.DataFrame) -> str:
    """What Figure 3's error bars are, for its similarity and its accuracy points."""
    parts = [
        f"{what}, {interval_text(rows['n_tasks'])}"
        for rows, what in ((similarity, "similarity"), (freezing, "accuracy"))
        if not rows.empty
    ]
    seeds = seeds_text(pd.concat([similarity["n_seeds"], freezing["n_seeds"]]))
    return "; ".join([*parts, *([seeds] if seeds else [])])


def figure3_caption(frame: pd.DataFrame) -> str:
    """What Figure 3 shows, its measures and its error bars, for the report."""
    similarity, freezing = frame[frame["kind"] == "similarity"], frame[frame["kind"] == "freezing"]
    return (
        "MAML checkpoints during training (x: training iteration, log scale). Left panels: each layer's similarity "
        f"before vs after the test-time inner loop ({_measures_text(similarity)}). Right panel: test accuracy with "
        "the named layers frozen in the test-time inner loop. Error bars: "
        f"{_figure3_intervals(similarity, freezing)}."
    )


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
                label="paper" if same else "paper, another data set (reference)",
            )


def accuracy_figure(name: str, tables: Mapping[str, pd.DataFrame]) -> Figure:
    """Our accuracies of an accuracy table (bars, ± 95% CI over test tasks), one panel per
    setting, with the paper's number beside each row where there is one (black diamonds; open
    diamonds: a reference from a different data set)."""
    ours = require(tables, name)
    _require_rows(ours, name)
    keys = [k for k in ACCURACY_KEYS[name] if ours[k].nunique() > 1] or list(ACCURACY_KEYS[name][:1])
    settings = by_setting(sorted_rows(ours))
    fig, axes = _grid(1, len(settings), width=max(3.6, 0.9 * len(ours) / max(len(settings), 1) + 1.2))
    reference = paper.paper_table(name)
    for c, (key, part) in enumerate(settings):
        ax = axes[0, c]
        labels = [
            textwrap.fill(" / ".join(label(k, v) for k, v in zip(keys, values)), 12)
            for values in zip(*(part[k] for k in keys))
        ]
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
        _paper_points(ax, positions, part, ACCURACY_KEYS[name], *paper_match(reference, *key))
        ax.set_xticks(positions, labels)
        _label_axes(ax, " / ".join(COLUMN_LABELS[k] for k in keys), "accuracy (%)", setting_label(*key))
    _legend_above(fig, next((ax for ax in axes[0] if len(ax.get_legend_handles_labels()[0]) > 1), axes[0, 0]))
    _footnote(fig, f"Error bars: {interval_text(ours['n_tasks'], ours['n_seeds'])}.")
    return fig


def cross_model_figure(frame: pd.DataFrame) -> Figure:
    """Table 3: similarity of two models' representations per layer (bars ± standard deviation
    over model pairs), one panel per measure and setting, comparisons side by side; dotted lines:
    the paper's averages over the body."""
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
        _label_axes(ax, "layer", f"{measure_label(measure)}\nbetween the two models", setting_label(*key))
    _legend_above(fig, panels[0][0])
    spread = "standard deviation over model pairs" if frame["std"].notna().any() else "none (one model pair)"
    _footnote(
        fig, f"Error bars: {spread}. Dotted lines: the paper's averages over the body, in the colour of the pair."
    )
    return fig


@dataclass(frozen=True)
class FigureSpec:
    """A figure of the report: how it is drawn from its CSV's DataFrame, and its caption."""

    draw: Callable[[pd.DataFrame], Figure]
    caption: Callable[[pd.DataFrame], str]


#: The figures of the reproduction output, by CSV stem (``figures/<name>.png``).
FIGURES: dict[str, FigureSpec] = {
    "figure2_adaptation_similarity": FigureSpec(figure2_figure, figure2_caption),
    "figure3_early_training": FigureSpec(figure3_figure, figure3_caption),
}
