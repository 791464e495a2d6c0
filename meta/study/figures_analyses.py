"""Figures of the paper's further analyses and of the architecture study, drawn from their CSVs
(docs/formats.md, "Reproduction output"): the learning curves (:func:`learning_curves_figure`),
how far adaptation moves each layer's weights (:func:`weight_movement_figure`), the similarity
between the bodies of the training regimes (:func:`regime_similarity_figure`) and, per conv4
variant, each layer's similarity before vs after every inner step
(:func:`architecture_similarity_figure`). :data:`ANALYSIS_FIGURES` holds them with their
captions; :data:`REPORT_FIGURES` is every figure the report draws (the paper's first).

The same conventions as :mod:`meta.study.figures` (whose building blocks these reuse): labelled
axes, legends above the panels, a footnote and a caption saying what the error bars are. Drawing
only: every value drawn is a value of a CSV's DataFrame.

Imports: matplotlib, seaborn, :mod:`meta.core.names`, :mod:`meta.study` (figures, labels, schema).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from meta.core.names import BODY, LAYERS
from meta.study.figures import (
    FIGURES,
    NOTES,
    FigureSpec,
    _algorithm_bars,
    _footnote,
    _grid,
    _label_axes,
    _legend_above,
    _lines,
    _measures_text,
    _require_rows,
)
from meta.study.labels import (
    ARCHITECTURE_LABELS,
    QUANTITY_LABELS,
    count_text,
    interval_text,
    label,
    measure_label,
)
from meta.study.rl_report import rl_similarity_caption, rl_similarity_figure
from meta.study.schema import BODY_REGIMES, ORDER, by_setting, ordered, setting_label

#: Short names of the training regimes on the axes of the regime-similarity matrices.
REGIME_TICKS: dict[str, str] = {
    "maml": "MAML",
    "anil": "ANIL",
    "multiclass": "multiclass",
    "multitask": "multitask",
    "random": "random",
    "nil": "NIL",
}
#: The four panels of a row of learning curves: (split, value column, x column, y label, x label).
CURVE_PANELS: tuple[tuple[str, str, str, str, str], ...] = (
    ("val", "accuracy", "iteration", "validation accuracy (%)", "training iteration"),
    ("train", "loss", "iteration", "training query loss", "training iteration"),
    ("val", "accuracy", "wall_seconds", "validation accuracy (%)", "training wall time (s)"),
    ("train", "loss", "wall_seconds", "training query loss", "training wall time (s)"),
)


def architecture_order(frame: pd.DataFrame) -> list[str]:
    """The conv4 variants of ``frame``: the reference first, then the study's in its order."""
    return ordered(frame["architecture"], tuple(ARCHITECTURE_LABELS))


def last_step(frame: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """The rows of ``frame`` at the last inner ``step`` of each group of ``keys`` (and setting)."""
    groups = [*keys, "dataset", "ways", "shots"]
    last = frame.groupby(groups, sort=False)["step"].transform("max")
    return frame[frame["step"] == last]


# ---------------------------------------------------------------------------------------------
# Learning curves
# ---------------------------------------------------------------------------------------------


def _seeds_per_algorithm(frame: pd.DataFrame) -> str:
    """``"2 seeds"``: how many training runs each algorithm has (the most of any setting)."""
    counts = frame.groupby(["dataset", "ways", "shots", "algorithm"])["seed"].nunique()
    return count_text(counts, "seed") or "one seed"


def learning_curves_figure(frame: pd.DataFrame) -> Figure:
    """Validation accuracy and training query loss against the training iteration and against
    the training wall time, one row of four panels per setting, MAML and ANIL in one panel (one
    thin line per seed, coloured by algorithm)."""
    _require_rows(frame, "figure5_learning_curves")
    settings = by_setting(frame)
    fig, axes = _grid(len(settings), len(CURVE_PANELS), width=3.3, height=2.7)
    algorithms = ordered(frame["algorithm"], ORDER["algorithm"])
    palette = dict(zip(algorithms, sns.color_palette("deep", len(algorithms))))
    for r, (key, part) in enumerate(settings):
        for c, (split, value, x, y_label, x_label) in enumerate(CURVE_PANELS):
            ax = axes[r, c]
            rows = part[(part["split"] == split) & part[value].notna()]
            for (algorithm, _), run in rows.groupby(["algorithm", "seed"], sort=False):
                run = run.sort_values(x)
                ax.plot(
                    run[x],
                    run[value],
                    color=palette[algorithm],
                    linewidth=1.2,
                    alpha=0.85,
                    label=label("algorithm", algorithm),
                )
            ax.xaxis.set_major_locator(MaxNLocator(4))
            _label_axes(ax, x_label, y_label, setting_label(*key))
    _legend_above(fig, axes[0, 0])
    _footnote(fig, f"Error bars: none; one line per training run ({_seeds_per_algorithm(frame)} per algorithm).")
    return fig


def learning_curves_caption(frame: pd.DataFrame) -> str:
    """What the learning curves show and that they have no error bars, for the report."""
    return (
        "Learning curves of MAML and ANIL: validation accuracy on the fixed validation tasks and the training "
        "query loss (mean of each logged window), against the training iteration (left) and against the training "
        "wall time (right: the logged seconds per iteration summed). Error bars: none; one line per training run "
        f"({_seeds_per_algorithm(frame)} per algorithm)."
    )


# ---------------------------------------------------------------------------------------------
# Weight movement
# ---------------------------------------------------------------------------------------------


def _architecture_groups(frame: pd.DataFrame) -> list[tuple[tuple, str, pd.DataFrame]]:
    """(setting, variant, rows) for each setting and conv4 variant of ``frame``, in order."""
    return [
        (key, architecture, part[part["architecture"] == architecture])
        for key, part in by_setting(frame)
        for architecture in architecture_order(part)
    ]


def _steps_text(frame: pd.DataFrame) -> str:
    """``"step 5"`` or ``"steps 3-10"``: the last inner steps drawn."""
    steps = sorted({int(s) for s in frame["step"]})
    return f"step {steps[0]}" if len(steps) == 1 else f"steps {steps[0]}-{steps[-1]}"


def weight_movement_figure(frame: pd.DataFrame) -> Figure:
    """Per layer, the mean over test tasks of ``||theta_adapted - theta_meta||`` (left) and of
    the same over ``||theta_meta||`` (right) after the last inner step, MAML and ANIL side by
    side (bars ± 95% CI over test tasks); one row of panels per setting and conv4 variant."""
    _require_rows(frame, "figure_weight_movement")
    frame = last_step(frame, ("algorithm", "architecture"))
    groups = _architecture_groups(frame)
    quantities = ordered(frame["quantity"], tuple(QUANTITY_LABELS))
    fig, axes = _grid(len(groups), len(quantities), width=4.2, height=2.8)
    for r, (key, architecture, part) in enumerate(groups):
        for c, quantity in enumerate(quantities):
            ax = axes[r, c]
            _algorithm_bars(ax, part[part["quantity"] == quantity], part)
            title = f"{label('architecture', architecture)}, {setting_label(*key)}"
            _label_axes(ax, "layer", f"{label('quantity', quantity)}\nafter the last inner step", title)
    _legend_above(fig, axes[0, 0])
    _footnote(fig, f"Error bars: {interval_text(frame['n_tasks'], frame['n_seeds'])}.")
    return fig


def weight_movement_caption(frame: pd.DataFrame) -> str:
    """What the weight-movement figure shows and its error bars, for the report."""
    last = last_step(frame, ("algorithm", "architecture"))
    return (
        "How far the test-time inner loop moves each layer's weights from the meta-learned ones, after the last "
        f"inner step ({_steps_text(last)}): the L2 norm ‖θ_adapted − θ_meta‖ and the same divided by ‖θ_meta‖, mean "
        "over test tasks. ANIL adapts the head only, so its conv layers do not move. Error bars: "
        f"{interval_text(last['n_tasks'], last['n_seeds'])}."
    )


# ---------------------------------------------------------------------------------------------
# Similarity between the bodies of the training regimes
# ---------------------------------------------------------------------------------------------


def regime_matrix(rows: pd.DataFrame, regimes: Sequence[str]) -> np.ndarray:
    """The symmetric ``(len(regimes), len(regimes))`` matrix of ``value`` of each pair of
    regimes (one layer and measure); NaN on the diagonal and where a pair was not measured."""
    index = {regime: i for i, regime in enumerate(regimes)}
    matrix = np.full((len(regimes), len(regimes)), np.nan)
    for row in rows.itertuples(index=False):
        i, j = index[row.regime_a], index[row.regime_b]
        matrix[i, j] = matrix[j, i] = row.value
    return matrix


def _heatmap(ax: Any, matrix: np.ndarray, regimes: Sequence[str]) -> Any:
    """``matrix`` as a heatmap from 0 to 1 with its values written in the cells; returns the image."""
    cmap = sns.color_palette("viridis", as_cmap=True).with_extremes(bad="0.92")
    image = ax.imshow(np.ma.masked_invalid(matrix), vmin=0, vmax=1, cmap=cmap)
    for (i, j), value in np.ndenumerate(matrix):
        if np.isfinite(value):
            ax.text(
                j, i, f"{value:.2f}", ha="center", va="center", fontsize=6.5, color="black" if value > 0.6 else "white"
            )
    ticks = [REGIME_TICKS.get(r, r) for r in regimes]
    ax.set_xticks(range(len(regimes)), ticks, rotation=90)
    ax.set_yticks(range(len(regimes)), ticks)
    return image


def regime_similarity_figure(frame: pd.DataFrame) -> Figure:
    """For each setting and measure (rows) and each conv layer (columns), the matrix of the
    similarity between the bodies trained by each pair of regimes (first seed; the diagonal is
    left blank)."""
    _require_rows(frame, "figure_regime_similarity")
    regimes = ordered(pd.concat([frame["regime_a"], frame["regime_b"]]), BODY_REGIMES)
    layers = ordered(frame["layer"], BODY)
    rows = [
        (key, m, part[part["measure"] == m])
        for key, part in by_setting(frame)
        for m in ordered(part["measure"], ORDER["measure"])
    ]
    fig, axes = _grid(len(rows), len(layers), width=3.3, height=3.2)
    image = None
    for r, (key, measure, part) in enumerate(rows):
        for c, layer in enumerate(layers):
            image = _heatmap(axes[r, c], regime_matrix(part[part["layer"] == layer], regimes), regimes)
            _label_axes(
                axes[r, c],
                "body trained by",
                f"{measure_label(measure)}\nbody trained by",
                f"{layer}\n{setting_label(*key)}",
            )
    fig.colorbar(image, ax=axes, shrink=0.7, label="similarity between the two bodies")
    _footnote(
        fig,
        f"Error bars: none drawn; each cell is a mean over {count_text(frame['n_tasks'], 'test task')}, "
        "its 95% confidence interval is in the table.",
    )
    return fig


def regime_similarity_caption(frame: pd.DataFrame) -> str:
    """What the regime-similarity matrices show and where their intervals are, for the report."""
    widest = frame["ci95"].max()
    bound = f" (at most ± {widest:.3f})" if np.isfinite(widest) else ""
    return (
        "Similarity between the bodies trained by each pair of regimes (first seed), per conv layer "
        f"({_measures_text(frame)}), on the query sets of the test tasks: rows and columns name how each body was "
        f"trained (MAML, ANIL, multiclass pretraining, multitask training, random features, NIL training). Error "
        f"bars: none drawn; each cell is a mean over {count_text(frame['n_tasks'], 'test task')}, and its 95% "
        f"confidence interval over test tasks{bound} is in the table below."
    )


# ---------------------------------------------------------------------------------------------
# The architecture study: similarity before vs after each inner step
# ---------------------------------------------------------------------------------------------


def architecture_similarity_figure(frame: pd.DataFrame) -> Figure:
    """Per conv4 variant (rows) and algorithm and measure (columns): each layer's similarity
    before adaptation vs after each inner step (lines ± 95% CI over test tasks)."""
    _require_rows(frame, "figure_architecture_similarity")
    groups = _architecture_groups(frame)
    columns = [
        (a, m)
        for a in ordered(frame["algorithm"], ORDER["algorithm"])
        for m in ordered(frame["measure"], ORDER["measure"])
    ]
    layers = ordered(frame["layer"], LAYERS)
    palette = sns.color_palette("deep", len(layers))
    fig, axes = _grid(len(groups), len(columns), width=3.2, height=2.6)
    several = len({key for key, _, _ in groups}) > 1
    for r, (key, architecture, part) in enumerate(groups):
        for c, (algorithm, measure) in enumerate(columns):
            ax = axes[r, c]
            rows = part[(part["algorithm"] == algorithm) & (part["measure"] == measure)]
            if not rows.empty:
                _lines(ax, rows, by="layer", order=layers, palette=palette, x="step", log=False)
            ax.set_ylim(0, 1.05)
            where = f", {setting_label(*key)}" if several else ""
            title = textwrap.fill(f"{label('algorithm', algorithm)}, {label('architecture', architecture)}{where}", 34)
            _label_axes(ax, "inner step", f"{measure_label(measure)}\nbefore vs after the step", title)
    _legend_above(fig, axes[0, 0], title="layer", title_fontsize=NOTES)
    _footnote(fig, f"Error bars: {interval_text(frame['n_tasks'], frame['n_seeds'])}.")
    return fig


def architecture_similarity_caption(frame: pd.DataFrame) -> str:
    """What the architecture-similarity figure shows and its error bars, for the report."""
    return (
        "The architecture study: for each conv4 variant (rows), each layer's similarity before the test-time inner "
        f"loop vs after each of its steps ({_measures_text(frame)}; 1 means unchanged), MAML and ANIL. Error bars: "
        f"{interval_text(frame['n_tasks'], frame['n_seeds'])}."
    )


#: The figures of the further analyses, by CSV stem (``figures/<name>.png``).
ANALYSIS_FIGURES: dict[str, FigureSpec] = {
    "figure5_learning_curves": FigureSpec(learning_curves_figure, learning_curves_caption),
    "figure_weight_movement": FigureSpec(weight_movement_figure, weight_movement_caption),
    "figure_regime_similarity": FigureSpec(regime_similarity_figure, regime_similarity_caption),
    "figure_architecture_similarity": FigureSpec(architecture_similarity_figure, architecture_similarity_caption),
}
#: Every figure the report draws: the paper's (:data:`meta.study.figures.FIGURES`), these, and the
#: meta-RL study's (:mod:`meta.study.rl_report`).
REPORT_FIGURES: dict[str, FigureSpec] = {
    **FIGURES,
    **ANALYSIS_FIGURES,
    "figure_rl_similarity": FigureSpec(rl_similarity_figure, rl_similarity_caption),
}
