"""The meta-RL results for reading: Table 2's RL columns, ours beside the paper's with a verdict
per environment (``tables/table2_rl.md``), and the per-layer similarity of the policy before vs
after adaptation (``figures/figure_rl_similarity.png``); the same as blocks of ``report.html``
(:func:`rl_table_blocks`, :func:`rl_similarity_reading`).

The verdict per environment is :func:`meta.study.rl_verdicts.rl_verdict`.

Imports: :mod:`meta.study` (paper, report_blocks, rl_verdicts) and
:mod:`repsim.io`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from meta.study import paper
from meta.study.report_blocks import Table
from meta.study.rl_verdicts import (
    DEFAULT_STEPS,
    PAPER_ENVS,
    VERDICT_RULE,
    cell,
    our_returns,
    paper_returns,
    rl_verdict,
)
from repsim.io import markdown_table

#: What the figure's error bars are.
ERROR_BARS = (
    "Error bars: 95% interval over the test tasks, 1.96 * std / sqrt(n_tasks) (normal approximation,"
    " population std), averaged over seeds."
)
_MEASURE_LABELS = {"cca": "mean CCA", "cka": "linear CKA"}


def rl_comparison(table: pd.DataFrame, steps: int = DEFAULT_STEPS) -> pd.DataFrame:
    """One row per environment of ``table2_rl`` (a DataFrame with its columns): our MAML-TRPO and
    ANIL-TRPO returns after ``steps`` test-time inner steps (± ci95) and our verdict, the paper's
    (± std over seeds) and its verdict, the horizon, meta-iterations and seeds; display strings."""
    rows = []
    for env in dict.fromkeys(table["env"]):
        ours, theirs = our_returns(table, env, steps), paper_returns(env)
        first = table[table["env"] == env].iloc[0]  # horizon, iterations and seeds: the same at every step count
        rows.append(
            {
                "environment": PAPER_ENVS.get(env, env),
                "MAML (ours)": cell(*ours["maml"]),
                "ANIL (ours)": cell(*ours["anil"]),
                "verdict (ours)": rl_verdict(*ours["maml"], *ours["anil"]),
                "MAML (paper)": cell(*theirs["maml"]),
                "ANIL (paper)": cell(*theirs["anil"]),
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
