"""Figures of similarity results (matplotlib + seaborn). Plotting never computes similarity.

Every function takes the DataFrames of :func:`repsim.compare.compare_models` or
:func:`repsim.snapshot_report.report_snapshot` and returns a :class:`matplotlib.figure.Figure` built
without pyplot (no global state, no display needed: figures render with the Agg canvas).
:func:`save_figure` writes PNG files atomically.

Imports: :mod:`repsim.io` only; never :mod:`repsim.measures` (plots compute no measure) nor
:mod:`meta`.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from repsim.io import atomic_write_bytes


def _ordered(values: pd.Series) -> list:
    """Distinct values in order of first appearance."""
    return list(dict.fromkeys(values))


def save_figure(fig: Figure, path: str | Path, *, dpi: int = 150) -> Path:
    """Render ``fig`` as PNG and write it to ``path`` atomically; returns ``path``."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return atomic_write_bytes(path, buffer.getvalue())


def _main_policy(part: pd.DataFrame, kind: str) -> str:
    """The policy of ``kind`` (``"conv"``, ``"seq"``) most matched pairs used (``"none"`` if none)."""
    used = part.loc[part["matched"], kind]
    used = used[used != "none"] if (used != "none").any() else part.loc[part[kind] != "none", kind]
    return str(used.mode().iloc[0]) if len(used) else "none"


def _fallback_cells(part: pd.DataFrame) -> tuple[pd.Series, str]:
    """Which rows used a fallback policy (another ``conv`` or ``seq`` than the matched pairs':
    their datapoints differed, :mod:`repsim.policies`), and a line for the title saying so."""
    main = {kind: _main_policy(part, kind) for kind in ("conv", "seq")}
    other = pd.Series(False, index=part.index)
    fallbacks = []
    for kind, policy in main.items():
        differs = (part[kind] != "none") & (part[kind] != policy)
        other |= differs
        fallbacks += [f"{kind} {v}" for v in sorted(set(part.loc[differs, kind]))]
    asked = ", ".join(f"{kind} {policy}" for kind, policy in main.items() if policy != "none")
    if not fallbacks:
        return other, f" ({asked})" if asked else ""
    return other, f"\n{asked}; * {', '.join(fallbacks)} where the datapoints differ"


def heatmap_figure(df: pd.DataFrame, measure: str, *, names: tuple[str, str] = ("model A", "model B")) -> Figure:
    """Heatmap of ``measure`` for every layer of A (rows) against every layer of B (columns),
    titled with the measure and both models' ``names``; cells whose pair used a fallback policy
    (:mod:`repsim.policies`) are marked ``*``.

    ``df`` must hold all pairs (``compare_models(..., pairs="all")``); NaN cells stay blank.
    """
    part = df[df["measure"] == measure]
    rows, cols = _ordered(part["layer_a"]), _ordered(part["layer_b"])
    if len(part) != len(rows) * len(cols):
        raise ValueError(
            f"the heatmap of {measure!r} needs every layer of A against every layer of B (pairs='all');"
            f" got {len(part)} of {len(rows) * len(cols)} pairs"
        )
    grid = part.pivot(index="layer_a", columns="layer_b", values="value").loc[rows, cols]
    other, note = _fallback_cells(part)
    marked = part.assign(other=other.to_numpy()).pivot(index="layer_a", columns="layer_b", values="other")
    size = max(4.0, 0.6 * len(cols) + 2.5), max(3.5, 0.5 * len(rows) + 1.5)
    fig = Figure(figsize=size, layout="constrained")
    ax = fig.add_subplot()
    finite = grid.to_numpy()[np.isfinite(grid.to_numpy())]
    low, high = float(finite.min(initial=0.0)), float(finite.max(initial=1.0))  # distances may exceed 1
    text = grid.map(lambda v: "" if np.isnan(v) else f"{v:.2f}") + marked.loc[rows, cols].map(
        lambda m: "*" if m else ""
    )
    annotate = grid.size <= 144
    sns.heatmap(
        grid,
        ax=ax,
        vmin=low,
        vmax=high,
        cmap="viridis",
        annot=text if annotate else False,
        fmt="",
        cbar_kws={"label": measure},
    )
    ax.set_facecolor("0.92")
    for i, j in zip(*np.nonzero(grid.isna().to_numpy())):
        ax.text(j + 0.5, i + 0.5, "n/a", ha="center", va="center", color="0.45", fontsize=8)
    ax.set_xlabel(f"{names[1]} (model B) layer")
    ax.set_ylabel(f"{names[0]} (model A) layer")
    missing = " (n/a: see 'reason')" if grid.isna().any().any() else ""
    ax.set_title(f"{measure}: {names[0]} vs {names[1]}{missing}{note}", fontsize=10)
    return fig


def per_layer_figure(df: pd.DataFrame, *, names: tuple[str, str] = ("model A", "model B")) -> Figure:
    """Similarity of each matched layer pair (x, in forward order), one line per measure,
    titled with both models' ``names``."""
    part = df[df["matched"]]
    if part.empty:
        raise ValueError("no matched layer pairs to plot")
    labels = [a if a == b else f"{a} / {b}" for a, b in zip(part["layer_a"], part["layer_b"])]
    part = part.assign(pair=labels)
    order = _ordered(part["pair"])
    fig = Figure(figsize=(max(5.0, 0.8 * len(order) + 2), 3.8), layout="constrained")
    ax = fig.add_subplot()
    for colour, (measure, rows) in zip(
        sns.color_palette(n_colors=part["measure"].nunique()), part.groupby("measure", sort=False)
    ):
        x = [order.index(p) for p in rows["pair"]]
        ax.plot(x, rows["value"], marker="o", color=colour, label=measure)
    ax.set_xticks(range(len(order)), order, rotation=30, ha="right")
    ax.set_ylabel("similarity")
    ax.set_xlabel("layer")
    ax.set_title(f"matched layers: {names[0]} vs {names[1]}", fontsize=10)
    ax.legend(title="measure")
    ax.grid(alpha=0.3)
    return fig


def before_after_figure(summary: pd.DataFrame, *, inputs: str = "query") -> Figure:
    """Bars: per layer, mean similarity before vs after adaptation (the last inner step) over
    tasks, one bar per measure, with the summary's confidence interval as error bars."""
    part = summary[summary["inputs"] == inputs]
    if part.empty:
        raise ValueError(f"the summary has no rows for inputs={inputs!r}")
    last = int(part["step"].max())
    part = part[part["step"] == last]
    layers, measures = _ordered(part["layer"]), _ordered(part["measure"])
    width = 0.8 / len(measures)
    fig = Figure(figsize=(max(5.0, 0.9 * len(layers) + 2), 3.8), layout="constrained")
    ax = fig.add_subplot()
    for i, (colour, measure) in enumerate(zip(sns.color_palette(n_colors=len(measures)), measures)):
        rows = part[part["measure"] == measure].set_index("layer").loc[layers]
        x = np.arange(len(layers)) + (i - (len(measures) - 1) / 2) * width
        errors = rows["ci_half_width"].fillna(0)
        ax.bar(x, rows["mean"], width, yerr=errors, capsize=3, color=colour, label=measure)
        for xi in x[rows["mean"].isna().to_numpy()]:
            ax.text(xi, 0.02, "undefined", rotation=90, ha="center", va="bottom", fontsize=8)
    level = f"{round(float(part['confidence'].iloc[0]) * 100)}%"
    ax.set_xticks(range(len(layers)), layers)
    ax.set_ylabel(f"similarity before vs after (mean, {level} CI)")
    ax.set_title(f"{inputs} inputs: meta-learned vs adapted (step {last})")
    ax.legend(title="measure")
    ax.grid(axis="y", alpha=0.3)
    return fig


def steps_figure(summary: pd.DataFrame, *, inputs: str = "query") -> Figure:
    """Lines: mean similarity to the meta-learned representation vs inner step, one panel per
    measure, one line per layer, the confidence interval shaded."""
    part = summary[summary["inputs"] == inputs]
    if part.empty:
        raise ValueError(f"the summary has no rows for inputs={inputs!r}")
    measures, layers = _ordered(part["measure"]), _ordered(part["layer"])
    fig = Figure(figsize=(4.2 * len(measures), 3.6), layout="constrained")
    axes = fig.subplots(1, len(measures), squeeze=False, sharey=True)[0]
    colours = dict(zip(layers, sns.color_palette(n_colors=len(layers))))
    for ax, measure in zip(axes, measures):
        for layer in layers:
            rows = part[(part["measure"] == measure) & (part["layer"] == layer)].sort_values("step")
            ax.plot(rows["step"], rows["mean"], marker=".", color=colours[layer], label=layer)
            ax.fill_between(rows["step"], rows["ci_low"], rows["ci_high"], color=colours[layer], alpha=0.2)
        ax.set_title(measure)
        ax.set_xlabel("inner step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("similarity to meta-learned")
    axes[-1].legend(title="layer")
    return fig


def compare_figures(
    df: pd.DataFrame, out_dir: str | Path, *, names: tuple[str, str] = ("model A", "model B")
) -> list[Path]:
    """Write ``per_layer.png`` and, when ``df`` holds every pair, ``heatmap_<measure>.png`` per
    measure into ``out_dir``, titled with both models' ``names``; returns the written paths."""
    out = Path(out_dir)
    written = [save_figure(per_layer_figure(df, names=names), out / "per_layer.png")]
    complete = len(df) == df["layer_a"].nunique() * df["layer_b"].nunique() * df["measure"].nunique()
    if complete:
        for m in _ordered(df["measure"]):
            written.append(save_figure(heatmap_figure(df, m, names=names), out / f"heatmap_{m}.png"))
    return written


def snapshot_figures(summary: pd.DataFrame, out_dir: str | Path, *, inputs: Sequence[str] | None = None) -> list[Path]:
    """Write ``before_after_<inputs>.png`` and ``by_step_<inputs>.png`` for each input set."""
    out = Path(out_dir)
    written = []
    for which in inputs or _ordered(summary["inputs"]):
        bars, lines = before_after_figure(summary, inputs=which), steps_figure(summary, inputs=which)
        written.append(save_figure(bars, out / f"before_after_{which}.png"))
        written.append(save_figure(lines, out / f"by_step_{which}.png"))
    return written
