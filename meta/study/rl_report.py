"""The meta-RL results for reading: Table 2's RL columns, ours beside the paper's with a verdict
per environment (``tables/table2_rl.md``), and the per-layer similarity of the policy before vs
after adaptation (``figures/figure_rl_similarity.png``); the same as blocks of ``report.html``
(:func:`rl_table_blocks`, :func:`rl_similarity_reading`).

The verdict (:func:`rl_verdict`): ANIL matches MAML in an environment when::

    |R_ANIL - R_MAML| <= max(h_MAML, h_ANIL)

with ``R`` the mean return and ``h`` its half-width: for our numbers the 95% interval over test
tasks (``ci95``, mean over seeds), for the paper's its ``±`` (the standard deviation over three
seeds). Otherwise ANIL is above or below MAML. Returns are compared within a code base only:
environments, horizons and reward scales differ between implementations.

Imports: :mod:`meta.study` (paper, report_blocks) and
:mod:`repsim.io`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from meta.study import paper
from meta.study.report_blocks import Table
from repsim.io import markdown_table

#: Our environment names -> the paper's (Table 2).
PAPER_ENVS: dict[str, str] = {
    "2d-navigation": "2D-Navigation",
    "halfcheetah-dir": "HalfCheetah-Direction",
    "halfcheetah-vel": "HalfCheetah-Velocity",
}
#: Our algorithm names -> the paper's (:func:`meta.study.paper.table2_rl`).
PAPER_ALGORITHMS: dict[str, str] = {"maml-trpo": "maml", "anil-trpo": "anil"}
#: The verdicts of :func:`rl_verdict`.
MATCHES, ABOVE, BELOW, UNMEASURED = "ANIL matches MAML", "ANIL above MAML", "ANIL below MAML", "not measured"
#: The rule of :func:`rl_verdict`, in words (beside every verdict).
VERDICT_RULE = (
    "ANIL matches MAML when |ANIL - MAML| <= the larger of their two half-widths (ours: 95% interval over"
    " test tasks; the paper's: its ±, a standard deviation over three seeds); otherwise ANIL is above or below."
)
#: Test-time inner steps compared with the paper's numbers unless told (the inner loop of meta-training).
DEFAULT_STEPS = 1
#: What the figure's error bars are.
ERROR_BARS = (
    "Error bars: 95% interval over the test tasks, 1.96 * std / sqrt(n_tasks) (normal approximation,"
    " population std), averaged over seeds."
)
_MEASURE_LABELS = {"cca": "mean CCA", "cka": "linear CKA"}


def rl_verdict(maml: float, maml_half: float, anil: float, anil_half: float) -> str:
    """:data:`MATCHES` when ``|anil - maml| <= max(maml_half, anil_half)``, else :data:`ABOVE` or
    :data:`BELOW` (ANIL's return higher or lower: returns are higher-is-better); :data:`UNMEASURED`
    when a number is missing (NaN). A missing half-width counts as 0."""
    if not (math.isfinite(maml) and math.isfinite(anil)):
        return UNMEASURED
    margin = max((h for h in (maml_half, anil_half) if math.isfinite(h)), default=0.0)
    if abs(anil - maml) <= margin:
        return MATCHES
    return ABOVE if anil > maml else BELOW


def _cell(mean: float, half: float) -> str:
    """``"-20.31 ± 1.52"`` (no ``±`` part for a NaN half-width; ``-`` for a NaN mean)."""
    if not math.isfinite(mean):
        return "-"
    return f"{mean:.2f}" + (f" ± {half:.2f}" if math.isfinite(half) else "")


def _paper_cells(env: str) -> dict[str, tuple[float, float]]:
    """The paper's ``{maml, anil: (return, ±)}`` of our environment ``env`` (NaN if the paper has none)."""
    frame = paper.table2_rl()
    rows = frame[frame["environment"] == PAPER_ENVS.get(env, "")].set_index("algorithm")
    return {
        a: (float(rows.loc[a, "return"]), float(rows.loc[a, "pm"])) if a in rows.index else (math.nan,) * 2
        for a in ("maml", "anil")
    }


def rl_comparison(table: pd.DataFrame, steps: int = DEFAULT_STEPS) -> pd.DataFrame:
    """One row per environment of ``table2_rl`` (a DataFrame with its columns): our MAML-TRPO and
    ANIL-TRPO returns after ``steps`` test-time inner steps (± ci95) and our verdict, the paper's
    (± std over seeds) and its verdict, the horizon, meta-iterations and seeds; display strings."""
    rows = []
    for env in dict.fromkeys(table["env"]):
        mine = table[(table["env"] == env) & (table["steps"] == steps)].set_index("algorithm")
        ours = {
            PAPER_ALGORITHMS[a]: (float(mine.loc[a, "return"]), float(mine.loc[a, "ci95"]))
            if a in mine.index
            else (math.nan,) * 2
            for a in PAPER_ALGORITHMS
        }
        theirs = _paper_cells(env)
        first = mine.iloc[0] if len(mine) else table[table["env"] == env].iloc[0]
        rows.append(
            {
                "environment": PAPER_ENVS.get(env, env),
                "MAML (ours)": _cell(*ours["maml"]),
                "ANIL (ours)": _cell(*ours["anil"]),
                "verdict (ours)": rl_verdict(*ours["maml"], *ours["anil"]),
                "MAML (paper)": _cell(*theirs["maml"]),
                "ANIL (paper)": _cell(*theirs["anil"]),
                "verdict (paper)": rl_verdict(*theirs["maml"], *theirs["anil"]),
                "horizon": str(int(first["horizon"])),
                "meta-iterations": str(int(first["iterations"])),
                "seeds": str(int(first["n_seeds"])),
            }
        )
    return pd.DataFrame(rows)


def rl_table_caption(steps: int = DEFAULT_STEPS) -> list[str]:
    """The sentences under the RL table: what the numbers are and the verdict's rule."""
    return [
        f"Average return (undiscounted, per episode; higher is better) after {steps} test-time inner step(s) on"
        " fixed test tasks; ours ± the 95% interval over test tasks (mean over seeds), the paper's ± its standard"
        " deviation over three seeds. The paper does not state its number of test-time steps.",
        "Horizon: our episode length in steps (the presets rl and paper-rl: 100 for 2D navigation, 200 for"
        " HalfCheetah, as in the MAML references). Returns are not comparable across code bases, so compare MAML"
        " with ANIL within a column.",
        f"Verdict: {VERDICT_RULE}",
    ]


def rl_table_markdown(table: pd.DataFrame, steps: int = DEFAULT_STEPS) -> str:
    """``tables/table2_rl.md``: the title, :func:`rl_comparison` and its caption."""
    lines = [
        f"# Table 2 (RL): MAML-TRPO vs ANIL-TRPO, ours beside {paper.SHORT_CITATION}",
        "",
        markdown_table(rl_comparison(table, steps)).rstrip("\n"),
        "",
        *[f"- {sentence}" for sentence in rl_table_caption(steps)],
    ]
    return "\n".join(lines) + "\n"


def rl_similarity_figure(frame: pd.DataFrame) -> Figure:
    """``figure_rl_similarity`` drawn: one panel per measure (rows) and environment (columns),
    the layers ``fc1``, ``fc2``, ``head`` on the x axis, MAML-TRPO and ANIL-TRPO side by side,
    ± ci95."""
    envs = list(dict.fromkeys(frame["env"]))
    measures = list(dict.fromkeys(frame["measure"]))
    fig = Figure(figsize=(3.9 * len(envs), 3.0 * len(measures) + 0.6), layout="constrained")
    axes = fig.subplots(len(measures), len(envs), squeeze=False)
    for (i, measure), (j, env) in ((m, e) for m in enumerate(measures) for e in enumerate(envs)):
        _similarity_panel(axes[i, j], frame[(frame["env"] == env) & (frame["measure"] == measure)])
        axes[i, j].set_title(PAPER_ENVS.get(env, env), fontsize=10)
        axes[i, j].set_xlabel("policy layer", fontsize=9)
        axes[i, j].set_ylabel(f"{_MEASURE_LABELS.get(measure, measure)}, before vs after 1 step", fontsize=9)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncols=max(len(labels), 1), fontsize=9)
    fig.supxlabel(ERROR_BARS, x=0.005, ha="left", fontsize=8, color="0.3", wrap=True)
    return fig


def _similarity_panel(ax: Any, part: pd.DataFrame) -> None:
    """Bars of one environment and measure: per layer, one bar per algorithm ± ci95."""
    layers = list(dict.fromkeys(part["layer"]))
    algorithms = list(dict.fromkeys(part["algorithm"]))
    width = 0.8 / max(len(algorithms), 1)
    for i, algorithm in enumerate(algorithms):
        rows = part[part["algorithm"] == algorithm].set_index("layer").reindex(layers)
        positions = np.arange(len(layers)) + (i - (len(algorithms) - 1) / 2) * width
        values, errors = rows["value"].to_numpy(dtype=float), rows["ci95"].to_numpy(dtype=float)
        ax.bar(positions, values, width, yerr=errors, capsize=3, label=algorithm.upper())
    ax.set_xticks(np.arange(len(layers)), layers)
    ax.set_ylim(0, 1.05)
    ax.tick_params(labelsize=9)


def rl_similarity_caption(frame: pd.DataFrame | None = None) -> str:
    """The figure's caption: what is drawn and what the error bars are (``frame`` is not needed;
    the argument makes this a caption of :class:`meta.study.figures.FigureSpec`)."""
    return (
        "Similarity of each policy layer's activations before vs after one test-time inner step, on the states the"
        " adapted policy visits on each test task (mean CCA and linear CKA; 1 = unchanged). Feature reuse predicts"
        " the hidden layers fc1 and fc2 close to 1; the head is the action mean (one unit per action dimension), and"
        " both measures are blind to an invertible linear change of so few units, so a head near 1 does not mean it"
        f" did not adapt. {ERROR_BARS}"
    )


# ---------------------------------------------------------------------------------------------
# Blocks of report.html (meta.study.report_sections.Section(name, label, title, blocks))
# ---------------------------------------------------------------------------------------------


def rl_table_blocks(frame: pd.DataFrame, context: Any = None, *, steps: int = DEFAULT_STEPS) -> Sequence[Any]:
    """The RL table's section content: :func:`rl_comparison` with its caption."""
    comparison = rl_comparison(frame, steps)
    return [Table(comparison, " ".join(rl_table_caption(steps)))]


def rl_similarity_reading(frame: pd.DataFrame) -> str:
    """The feature-reuse reading of the RL similarity in a sentence: the mean of ``value`` over
    environments, algorithms and measures, for the hidden layers (fc1, fc2) and for the head."""
    hidden = frame.loc[frame["layer"].isin(("fc1", "fc2")), "value"].mean()
    head = frame.loc[frame["layer"] == "head", "value"].mean()
    return f"Mean similarity over environments, algorithms and measures: hidden layers {hidden:.3f}, head {head:.3f}."
