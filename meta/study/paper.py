"""The numbers of "Rapid Learning or Feature Reuse? Towards Understanding the Effectiveness of
MAML" (Raghu, Raghu, Bengio, Vinyals; ICLR 2020; arXiv 1909.09157), as plain data.

Each table is a tidy :class:`pandas.DataFrame` with the columns of the matching CSV of
``python -m meta reproduce`` (docs/formats.md, "Reproduction output"), so that our numbers and the
paper's line up by column. :func:`paper_table` returns a fresh copy; :data:`PROVENANCE` says where
each one comes from; :data:`MISSING` lists what the paper reports that is not here, and why.

Source text. Every number below was transcribed from the text of the paper's ICLR 2020
OpenReview submission (forum ``rkgMkCEtPB``, "Paper under double-blind review"; the same abstract
as arXiv v1 of 19 September 2019), read through the search tools of this project. The
camera-ready version (arXiv v2, February 2020) repeats Tables 2-5 but, according to secondary
sources, has a different Table 1 (see :data:`MISSING`): its numbers could not be checked against
the paper itself and are therefore not given as data.

What ``±`` means. The paper states it only for Table 2 ("mean and standard deviation of
performance over three random initializations", section 4); Table 4 repeats Table 2's MAML and
ANIL rows. For Tables 1 and 5 it is not stated (section 3.2: "results are averaged over three
random seeds"). So the raw half-width is kept in the extra column ``pm``; ``std_seeds`` is filled
only where the paper says ``±`` is a standard deviation over seeds; ``ci95`` is never filled (the
paper reports no 95% confidence intervals), and ``n_tasks`` is unknown.

Figures 2 and 3 have no table: :data:`FIGURE_FINDINGS` states what they show, and
``paper_table("figure2_adaptation_similarity")`` holds the only values the text states (bounds:
conv layers' CCA above 0.9, the head's below 0.5).

Imports: :mod:`meta.core.names` and pandas; nothing else of :mod:`meta`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from meta.core.names import BODY, FROZEN_LABELS

CITATION = (
    "A. Raghu, M. Raghu, S. Bengio, O. Vinyals. Rapid Learning or Feature Reuse? Towards "
    "Understanding the Effectiveness of MAML. ICLR 2020. arXiv:1909.09157."
)
#: The paper, short (after its first mention).
SHORT_CITATION = "Raghu et al. (ICLR 2020)"
#: Which text of the paper the numbers are from (one plain sentence in the report).
SOURCE_VERSION = "the ICLR 2020 submission (OpenReview forum rkgMkCEtPB)"

_NAN = math.nan
_SEEDS = 3  # "averaged over three random seeds" (3.2), "three random initializations" (4)


@dataclass(frozen=True)
class Provenance:
    """Where a table of the paper comes from.

    Attributes:
        name: our CSV stem (``table1_freezing``, ...).
        label: the paper's name for it (``Table 1``, ``Figure 2``).
        caption: the caption's claim, summarised.
        setting: data set(s) and setting as the paper states them.
        pm: what the paper's ``±`` means for this table.
        note: anything a reader comparing numbers should know (empty if nothing).
    """

    name: str
    label: str
    caption: str
    setting: str
    pm: str
    note: str = ""


PROVENANCE: dict[str, Provenance] = {
    p.name: p
    for p in (
        Provenance(
            "table1_freezing",
            "Table 1",
            "Freezing successive layers (no test-time inner-loop adaptation) does not affect "
            "accuracy, supporting feature reuse: even freezing all four conv layers (all but the "
            "head) of a MAML-trained network hardly changes accuracy.",
            "MiniImageNet 5-way 1-shot and 5-shot; MAML training; layers frozen at test time only.",
            "not stated (results averaged over three random seeds, section 3.2)",
            "Its 'none' row (44.5, 61.7) differs from the MAML accuracy of its Table 2 (46.9, 63.1).",
        ),
        Provenance(
            "table2_anil_vs_maml",
            "Table 2",
            "ANIL matches the performance of MAML on few-shot image classification (and RL).",
            "Omniglot 20-way 1-/5-shot, MiniImageNet 5-way 1-/5-shot.",
            "standard deviation over three random initializations (section 4)",
            "The reinforcement-learning part of the table is not compared here.",
        ),
        Provenance(
            "table3_cross_model_similarity",
            "Table 3",
            "MAML and ANIL models learn comparable representations: CCA/CKA similarity averaged "
            "over the network body is the same for MAML-ANIL pairs as for MAML-MAML and ANIL-ANIL "
            "pairs (different random seeds).",
            "data set not stated in the main text (section 4 discusses MiniImageNet-5way-5shot).",
            "none (single values)",
        ),
        Provenance(
            "table4_nil",
            "Table 4",
            "NIL (no head and no inner loop at test time: cosine similarity of penultimate "
            "features to the support set, on an ANIL-trained body) performs as well as MAML and "
            "ANIL.",
            "Omniglot 20-way 1-/5-shot, MiniImageNet 5-way 1-/5-shot.",
            "not stated; the MAML and ANIL rows repeat Table 2 (std over three seeds)",
        ),
        Provenance(
            "table5_body_regimes",
            "Table 5",
            "MAML/ANIL training leads to superior features (all bodies tested with NIL); "
            "multitask training is worse even than random features.",
            "MiniImageNet 5-way 1-shot and 5-shot; every body tested with the NIL head.",
            "not stated",
        ),
        Provenance(
            "figure2_adaptation_similarity",
            "Figure 2",
            "High CCA/CKA similarity between representations before and after inner-loop "
            "adaptation for all layers except the head.",
            "MAML on MiniImageNet (section 3.2); ways/shots not stated in the main text.",
            "no values: only the bounds stated in section 3.2.2",
        ),
        Provenance(
            "figure3_early_training",
            "Figure 3",
            "Inner-loop updates have little effect on learned representations from early on in "
            "learning (from iteration 10000).",
            "MAML on MiniImageNet 5-way 5-shot, checkpoints at 10000, 20000, 30000 iterations "
            "(1-shot in appendix B.5).",
            "no values",
        ),
    )
}

# Table 1 (submission text): rows None, 1, 1,2, 1,2,3, 1,2,3,4; columns 1-shot, 5-shot.
_TABLE1 = {
    1: ((44.5, 0.8), (44.8, 0.7), (44.8, 0.8), (44.7, 0.8), (44.7, 0.8)),
    5: ((61.7, 0.6), (61.7, 0.7), (61.4, 0.7), (60.2, 0.7), (60.2, 0.7)),
}
# Tables 2 and 4: (dataset, ways, shots) -> (MAML, ANIL, NIL) as (accuracy, ±).
_SETTINGS = (("omniglot", 20, 1), ("omniglot", 20, 5), ("miniimagenet", 5, 1), ("miniimagenet", 5, 5))
_TABLE4 = {
    ("omniglot", 20, 1): ((93.7, 0.7), (96.2, 0.5), (96.7, 0.3)),
    ("omniglot", 20, 5): ((96.4, 0.1), (98.0, 0.3), (98.0, 0.04)),
    ("miniimagenet", 5, 1): ((46.9, 0.2), (46.7, 0.4), (48.0, 0.7)),
    ("miniimagenet", 5, 5): ((63.1, 0.4), (61.5, 0.5), (62.2, 0.5)),
}
# Table 3: (comparison, CCA, CKA), averaged over the network body.
_TABLE3 = (("maml-maml", 0.51, 0.83), ("anil-anil", 0.51, 0.86), ("maml-anil", 0.50, 0.83))
# Table 5: regime -> (1-shot, 5-shot) as (accuracy, ±), MiniImageNet 5-way, NIL-tested.
_TABLE5 = {
    "maml": ((48.4, 0.3), (61.5, 0.8)),
    "anil": ((48.0, 0.7), (62.2, 0.5)),
    "multiclass": ((39.7, 0.3), (54.4, 0.5)),
    "multitask": ((26.5, 1.1), (34.2, 3.5)),
    "random": ((32.9, 0.6), (43.2, 0.5)),
    "nil": ((38.3, 0.6), (43.0, 0.2)),
}
# Table 2, RL part: average return (higher is better), mean ± std over three seeds.
_TABLE2_RL = {
    "HalfCheetah-Direction": ((170.4, 21.0), (363.2, 14.8)),
    "HalfCheetah-Velocity": ((-139.0, 18.9), (-120.9, 6.3)),
    "2D-Navigation": ((-20.3, 3.2), (-20.1, 2.3)),
}


def _accuracy_row(accuracy: float, pm: float, *, std_is_pm: bool, n_seeds: float = _SEEDS) -> dict:
    """The accuracy columns shared by Tables 1, 2, 4, 5 (percentages)."""
    return {
        "accuracy": accuracy,
        "pm": pm,
        "ci95": _NAN,
        "std_seeds": pm if std_is_pm else _NAN,
        "n_seeds": n_seeds,
        "n_tasks": _NAN,
    }


def _table1() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "algorithm": "maml",
                "dataset": "miniimagenet",
                "ways": 5,
                "shots": shots,
                "frozen": frozen,
                **_accuracy_row(acc, pm, std_is_pm=False),
            }
            for shots, rows in _TABLE1.items()
            for frozen, (acc, pm) in zip(FROZEN_LABELS, rows)
        ]
    )


def _table2() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"algorithm": algorithm, "dataset": d, "ways": w, "shots": s, **_accuracy_row(acc, pm, std_is_pm=True)}
            for (d, w, s) in _SETTINGS
            for algorithm, (acc, pm) in zip(("maml", "anil"), _TABLE4[(d, w, s)][:2])
        ]
    )


def _table3() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "comparison": comparison,
                "layer": "body",
                "measure": measure,
                "value": value,
                "std": _NAN,
                "n_pairs": _NAN,
                "dataset": None,
                "ways": _NAN,
                "shots": _NAN,
            }
            for comparison, cca, cka in _TABLE3
            for measure, value in (("cca", cca), ("cka", cka))
        ]
    )


def _table4() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "method": method,
                "dataset": d,
                "ways": w,
                "shots": s,
                **_accuracy_row(acc, pm, std_is_pm=method != "nil", n_seeds=_SEEDS if method != "nil" else _NAN),
            }
            for (d, w, s) in _SETTINGS
            for method, (acc, pm) in zip(("maml", "anil", "nil"), _TABLE4[(d, w, s)])
        ]
    )


def _table5() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "regime": regime,
                "test": "nil",
                "dataset": "miniimagenet",
                "ways": 5,
                "shots": shots,
                **_accuracy_row(acc, pm, std_is_pm=False, n_seeds=_NAN),
            }
            for regime, cells in _TABLE5.items()
            for shots, (acc, pm) in zip((1, 5), cells)
        ]
    )


def _figure2() -> pd.DataFrame:
    """The values section 3.2.2 states for Figure 2 (MAML): bounds, not measurements."""
    quote_body = (
        "Representations in the body of the network (the convolutional layers) are highly similar, with CCA "
        "similarity scores of >0.9"
    )
    quote_head = (
        "the head of the network, which does change significantly in the inner loop, has a CCA similarity of "
        "less than 0.5"
    )
    rows = [
        {"algorithm": "maml", "layer": layer, "measure": "cca", "relation": ">", "value": 0.9, "quote": quote_body}
        for layer in BODY
    ]
    rows.append(
        {"algorithm": "maml", "layer": "head", "measure": "cca", "relation": "<", "value": 0.5, "quote": quote_head}
    )
    frame = pd.DataFrame(rows)
    frame["dataset"], frame["ways"], frame["shots"] = "miniimagenet", 5, _NAN
    return frame


def _figure3() -> pd.DataFrame:
    """Figure 3's setting (no values are stated): one row per checkpoint iteration."""
    return pd.DataFrame(
        {
            "algorithm": "maml",
            "iteration": [10000, 20000, 30000],
            "dataset": "miniimagenet",
            "ways": 5,
            "shots": 5,
        }
    )


_BUILDERS = {
    "table1_freezing": _table1,
    "table2_anil_vs_maml": _table2,
    "table3_cross_model_similarity": _table3,
    "table4_nil": _table4,
    "table5_body_regimes": _table5,
    "figure2_adaptation_similarity": _figure2,
    "figure3_early_training": _figure3,
}
#: Names of the paper's tables and figures, as the stems of our CSVs.
NAMES: tuple[str, ...] = tuple(_BUILDERS)


def paper_table(name: str) -> pd.DataFrame:
    """The paper's numbers for ``name`` (a CSV stem of :data:`NAMES`) as a new DataFrame.

    Accuracies are percentages; ``pm`` is the paper's ``±`` (see :data:`PROVENANCE` for its
    meaning per table). Raises ``ValueError`` for an unknown name.
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown paper table {name!r}; known: {', '.join(NAMES)}")
    return _BUILDERS[name]()


def paper_tables() -> dict[str, pd.DataFrame]:
    """Every table of :data:`NAMES`, keyed by name (new DataFrames)."""
    return {name: paper_table(name) for name in NAMES}


def table2_rl() -> pd.DataFrame:
    """Table 2's reinforcement-learning part (average return, higher is better; ``pm`` is the
    standard deviation over three seeds). No CSV of ours has this shape; kept for reference."""
    return pd.DataFrame(
        [
            {"algorithm": algorithm, "environment": env, "return": ret, "pm": pm, "n_seeds": _SEEDS}
            for env, cells in _TABLE2_RL.items()
            for algorithm, (ret, pm) in zip(("maml", "anil"), cells)
        ]
    )


#: What the figures show, in the paper's words (summarised); no values beyond those of
#: ``paper_table("figure2_adaptation_similarity")`` are stated in the text.
FIGURE_FINDINGS: dict[str, str] = {
    "figure2_adaptation_similarity": (
        "CCA (left) and CKA (right) similarity of each layer's representation before vs after "
        "inner-loop adaptation, for a MAML-trained network: for all layers except the head the "
        "similarity is almost 1 (CCA > 0.9), with a slight dip at conv3/conv4; the head, which "
        "must change to align outputs with the task's classes, has much lower similarity "
        "(CCA < 0.5). Interpretation: the body performs feature reuse."
    ),
    "figure3_early_training": (
        "MAML on MiniImageNet-5way-5shot at 10000, 20000 and 30000 training iterations. Left: "
        "freezing contiguous blocks of layers at test time gives almost identical accuracy. "
        "Right: representations of all layers except the head are highly similar before and "
        "after adaptation. Feature reuse already dominates from early (iteration 10000) in "
        "training."
    ),
}

#: What the paper reports that is not compared here, and why (plain words for the report).
MISSING: tuple[dict[str, str], ...] = (
    {
        "what": "Table 1 of the camera-ready version (arXiv v2)",
        "why": "Table 1 here is the submission's; the camera-ready version is reported to give other numbers "
        "(its 'none' row equal to Table 2's MAML accuracy), which are not used.",
    },
    {
        "what": "Per-layer values of Figures 2 and 3",
        "why": "The paper shows them only as plots. Its text states bounds for Figure 2 (every conv layer's CCA "
        "above 0.9, the head's below 0.5), which are compared here, and no values for Figure 3.",
    },
    {
        "what": "The setting and the per-layer values of Table 3",
        "why": "The main text gives only averages over the network body and does not state the data set.",
    },
    {
        "what": "The appendix's numbers (1-shot early training, learning curves, MAML/ANIL heads against NIL, "
        "similarity between training regimes)",
        "why": "Our measurements of these analyses are in the sections after the paper's; the appendix's own "
        "numbers are not set beside them. Its speed-ups (1.7x per training iteration, 4.1x at test) are.",
    },
    {
        "what": "Confidence intervals and numbers of test tasks",
        "why": "The paper states neither: its ± is a standard deviation over three seeds (Table 2) or not stated.",
    },
)
