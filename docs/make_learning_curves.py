"""Draw validation accuracy against training time for one or more run folders.

    python docs/make_learning_curves.py RUN_DIR [RUN_DIR ...] --out docs/omniglot_learning_curves.png

Training time is the sum of the wall time of the training iterations (``metrics.csv``'s
``seconds`` column, a mean over each logged window, times the window's iterations): validation,
checkpointing and data loading are not counted. Each run's label is its algorithm from
``config.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from repsim.io import atomic_open


def learning_curve(run_dir: Path) -> pd.DataFrame:
    """Validation rows of ``run_dir/metrics.csv`` with ``minutes``: cumulative training time at
    that iteration. Columns: ``iteration``, ``minutes``, ``accuracy`` (%), ``ci95`` (%)."""
    metrics = pd.read_csv(run_dir / "metrics.csv")
    train = metrics[metrics["split"] == "train"].sort_values("iteration")
    window = train["iteration"].diff().fillna(train["iteration"].iloc[0])
    elapsed = pd.Series((train["seconds"] * window).cumsum().to_numpy() / 60, index=train["iteration"].to_numpy())
    val = metrics[metrics["split"] == "val"].sort_values("iteration")
    return pd.DataFrame(
        {
            "iteration": val["iteration"].to_numpy(),
            "minutes": elapsed.reindex(val["iteration"].to_numpy(), method="ffill").to_numpy(),
            "accuracy": 100 * val["accuracy"].to_numpy(),
            "ci95": 100 * val["ci95"].to_numpy(),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    for run in args.runs:
        curve = learning_curve(run)
        config = json.loads((run / "config.json").read_text())["config"]
        label = f"{config['algorithm'].upper()} ({config['dataset']} {config['ways']}-way {config['shots']}-shot)"
        ax.errorbar(curve["minutes"], curve["accuracy"], yerr=curve["ci95"], marker="o", ms=3, capsize=2, label=label)
    ax.axhline(90, color="grey", lw=0.8, ls="--")
    ax.set(xlabel="training time on one core (minutes)", ylabel="validation accuracy (%)", ylim=(40, 100))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with atomic_open(args.out) as stream:
        fig.savefig(stream, format="png")


if __name__ == "__main__":
    main()
