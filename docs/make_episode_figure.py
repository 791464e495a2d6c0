"""Draw docs/episodes.png: two sample 5-way 1-shot episodes with 3 queries per class from the
built-in glyphs set (left) and from Omniglot (``maml`` protocol, test split; right), each as a
support row above its query rows, one column per label.

Run: ``python docs/make_episode_figure.py [--omniglot DIR] [--out docs/episodes.png]``.
A data set that is not available (no Omniglot archives, glyphs not built) is left out with a
note on stdout. The tasks are the first fixed evaluation tasks of each split
(:func:`meta.data.fixed_tasks`), so the figure is the same on every machine.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from meta.data import Episode, FewShotSplit, fixed_tasks, load_split  # noqa: E402

WAYS, SHOTS, QUERIES, EPISODES_PER_SET = 5, 1, 3, 2
LEFT, TOP = 0.1, 0.88  # margins of each episode's panel: row labels, title


def available_splits(omniglot: Path) -> list[FewShotSplit]:
    """The test splits that can be loaded here: glyphs, then Omniglot."""
    splits = []
    for dataset, root in (("glyphs", None), ("omniglot", omniglot)):
        try:
            splits.append(load_split(dataset, "test", root=root))
        except (ImportError, ValueError, OSError) as error:
            print(f"skipping {dataset}: {error}")
    return splits


def draw_episode(figure, episode: Episode, title: str) -> None:
    """Support images on the first row of ``figure`` (a subfigure), queries below, one column
    per label."""
    layout = {"hspace": 0.06, "wspace": 0.06, "left": LEFT, "right": 0.99, "top": TOP, "bottom": 0.02}
    axes = figure.subplots(1 + QUERIES, WAYS, squeeze=False, gridspec_kw=layout)
    rows = [episode.support_x.reshape(WAYS, SHOTS, *episode.support_x.shape[1:])[:, 0]]
    queries = episode.query_x.reshape(WAYS, QUERIES, *episode.query_x.shape[1:])
    rows += [queries[:, q] for q in range(QUERIES)]
    for r, (axes_row, images) in enumerate(zip(axes, rows)):
        for label, ax in enumerate(axes_row):
            ax.imshow(images[label, 0].numpy(), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest", aspect="auto")
            ax.set_xticks([])
            ax.set_yticks([])
            if label == 0:
                ax.set_ylabel("support" if r == 0 else f"query {r}", fontsize=7)
            if r == 0:
                ax.set_title(f"label {label}", fontsize=7, pad=2)
    figure.suptitle(title, fontsize=8, fontweight="bold")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_omniglot = Path(os.environ.get("OMNIGLOT_DIR", REPO.parent / "shared" / "data" / "omniglot"))
    parser.add_argument("--omniglot", type=Path, default=default_omniglot)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "episodes.png")
    args = parser.parse_args()

    splits = available_splits(args.omniglot)
    if not splits:
        raise SystemExit("no data set available to draw")
    cell = 0.75  # inches per image
    block_width, block_height = WAYS * cell / (0.99 - LEFT), (1 + QUERIES) * cell / (TOP - 0.02)
    fig = plt.figure(figsize=(block_width * len(splits), block_height * EPISODES_PER_SET))
    grid = fig.subfigures(EPISODES_PER_SET, len(splits), squeeze=False, wspace=0.04, hspace=0.0)
    for column, split in enumerate(splits):
        tasks = fixed_tasks(split, WAYS, SHOTS, QUERIES, n_tasks=EPISODES_PER_SET)
        for t in range(EPISODES_PER_SET):
            draw_episode(grid[t, column], tasks[t], f"{split.name}, fixed task {t}")
    tmp = args.out.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=80)
    os.replace(tmp, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
