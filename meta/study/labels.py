"""How the report names things: the display names of measures, algorithms, training regimes and
model comparisons, and the one sentence that says what an error bar or ``±`` of ours is.

The CSVs keep their short labels (``cca``, ``maml``, ``multitask``); the report, the figures and
the verdicts show these names instead, so that a reader never has to know the CSV vocabulary.
In particular ``cca`` is the mean of all canonical correlations (:func:`repsim.measures.mean_cca`),
not SVCCA or PWCCA, and every header and caption says so.

Imports: nothing of :mod:`meta` (plain data and text).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from numbers import Real
from typing import Any

#: Similarity measures (names of :data:`repsim.measures.MEASURES`) as the report names them.
MEASURE_LABELS: dict[str, str] = {
    "cca": "mean CCA (all coefficients)",
    "mean_cca": "mean CCA (all coefficients)",
    "svcca": "SVCCA",
    "pwcca": "PWCCA",
    "cka": "linear CKA",
    "linear_cka": "linear CKA",
    "debiased_cka": "debiased linear CKA",
    "kernel_cka": "RBF-kernel CKA",
    "procrustes": "Procrustes distance",
    "rsa": "RSA",
    "accuracy": "accuracy (%)",
}
#: Algorithms, test procedures and body-training regimes (Tables 1, 2, 4, 5).
REGIME_LABELS: dict[str, str] = {
    "maml": "MAML",
    "fomaml": "first-order MAML",
    "anil": "ANIL",
    "multiclass": "multiclass pretraining",
    "multitask": "multitask training",
    "random": "random features",
    "nil": "NIL",
}
#: Table 5 tests every body with NIL; its ``nil`` regime is a body trained with NIL.
BODY_LABELS: dict[str, str] = {**REGIME_LABELS, "nil": "NIL training"}
#: Pairs of models compared in Table 3.
COMPARISON_LABELS: dict[str, str] = {"maml-maml": "MAML-MAML", "anil-anil": "ANIL-ANIL", "maml-anil": "MAML-ANIL"}
#: The conv4 variants of the architecture study (``meta.study.presets.ARCHITECTURES``), short.
ARCHITECTURE_LABELS: dict[str, str] = {
    "reference": "reference conv4",
    "glorot-head": "Glorot-uniform head",
    "zero-head": "zero head",
    "miniimagenet-conv4": "miniImageNet conv4",
}
#: The weight-movement quantities (``figure_weight_movement``), as formulas.
QUANTITY_LABELS: dict[str, str] = {
    "movement": "‖θ_adapted − θ_meta‖",
    "relative": "‖θ_adapted − θ_meta‖ / ‖θ_meta‖",
}
#: Display names of the values of each label column.
_BY_COLUMN: dict[str, dict[str, str]] = {
    "measure": MEASURE_LABELS,
    "algorithm": REGIME_LABELS,
    "method": REGIME_LABELS,
    "regime": BODY_LABELS,
    "regime_a": BODY_LABELS,
    "regime_b": BODY_LABELS,
    "body": REGIME_LABELS,
    "test": REGIME_LABELS,
    "comparison": COMPARISON_LABELS,
    "architecture": ARCHITECTURE_LABELS,
    "quantity": QUANTITY_LABELS,
}
#: Headers of the key columns of the report's tables.
COLUMN_LABELS: dict[str, str] = {
    "algorithm": "algorithm",
    "method": "test procedure",
    "regime": "body trained by",
    "test": "tested with",
    "frozen": "frozen at test time",
    "comparison": "models compared",
    "layer": "layer",
    "measure": "measure",
    "iteration": "training iteration",
    "architecture": "conv4 variant",
    "body": "body trained by",
    "procedure": "test procedure",
    "adapted": "adapted at test time",
    "step": "inner step",
    "quantity": "quantity",
}


def label(column: str, value: Any) -> str:
    """The display name of ``value`` in the CSV column ``column`` (the value itself when it has none)."""
    return _BY_COLUMN.get(column, {}).get(str(value), str(value))


def measure_label(measure: str) -> str:
    """``"mean CCA (all coefficients)"`` for ``"cca"``, ``"linear CKA"`` for ``"cka"``, ..."""
    return label("measure", measure)


def join_words(words: Iterable[str]) -> str:
    """``"a"``, ``"a and b"``, ``"a, b and c"``."""
    items = list(words)
    return ", ".join(items[:-1]) + f" and {items[-1]}" if len(items) > 1 else "".join(items)


def _counts(values: Iterable[Any]) -> list[int]:
    """The distinct finite numbers of ``values`` as sorted integers (NaN, None and labels left out)."""
    return sorted({int(v) for v in values if isinstance(v, Real) and math.isfinite(v)})


def count_text(values: Iterable[Any], noun: str) -> str:
    """``"600 test tasks"``, ``"1 seed"``; ``"200-600 test tasks"`` when the counts differ; empty
    when none is known (``noun`` is the singular; an ``s`` is added)."""
    counts = _counts(values)
    if not counts:
        return ""
    plural = noun if counts == [1] else f"{noun}s"
    amount = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    return f"{amount} {plural}"


def seeds_text(n_seeds: Iterable[Any]) -> str:
    """``"1 seed"``, or ``"3 seeds (the mean of the seeds' half-widths)"``; empty when unknown."""
    seeds = _counts(n_seeds)
    if not seeds:
        return ""
    return count_text(seeds, "seed") + (" (the mean of the seeds' half-widths)" if seeds[-1] > 1 else "")


def interval_text(n_tasks: Iterable[Any], n_seeds: Iterable[Any] = ()) -> str:
    """What our ``±`` / error bars are (``meta.study.aggregate``): a 95% confidence interval over
    test tasks, ``1.96 * std / sqrt(n_tasks)`` (a normal approximation, population std); with
    several seeds the mean of the seeds' half-widths (:func:`seeds_text`, when ``n_seeds`` is given)."""
    interval = f"95% confidence interval over {count_text(n_tasks, 'test task') or 'test tasks'} (1.96 standard errors)"
    return "; ".join(part for part in (interval, seeds_text(n_seeds)) if part)


#: What each CSV column holds, for the Markdown tables (the same column in every table).
COLUMN_NOTES: dict[str, str] = {
    "accuracy": "mean test accuracy (%) over the test tasks, then over seeds",
    "ci95": "half-width of the 95% confidence interval over test tasks (1.96 × std / √n_tasks); with several "
    "seeds, the mean of the seeds' half-widths",
    "std_seeds": "standard deviation of the accuracy over seeds (empty with one seed)",
    "n_seeds": "number of seeds",
    "n_tasks": "number of test tasks (per seed)",
    "measure": "cca: mean CCA (the mean of all canonical correlations); cka: linear CKA",
    "comparison": "the two models compared (maml-anil: a MAML and an ANIL model; maml-maml, anil-anil: two "
    "models of one algorithm from different seeds)",
    "frozen": "layers frozen in the test-time inner loop",
    "regime": "how the body was trained",
    "test": "the test procedure (nil: no head, no inner loop; cosine similarity to the support set)",
}
#: What a column holds where it means something else than in :data:`COLUMN_NOTES`, by table.
TABLE_COLUMN_NOTES: dict[str, dict[str, str]] = {
    "table3_cross_model_similarity": {
        "value": "similarity between the representations two models give of the same test inputs, mean over "
        "test tasks, then over model pairs",
        "std": "standard deviation over model pairs (empty with one pair)",
        "n_pairs": "number of model pairs",
    },
    "table_test_time_heads": {
        "body": "the algorithm that trained the body",
        "procedure": "the test procedure: the body's own, the other algorithm's, or NIL",
        "adapted": "the layers the test-time inner loop adapts",
    },
    "table_speed": {
        "maml_seconds": "median seconds of MAML (timed alternately with ANIL, one thread)",
        "anil_seconds": "median seconds of ANIL",
        "speedup": "MAML's seconds over ANIL's (ours)",
        "paper_speedup": "the paper's speed-up (section 4.2)",
        "repeats": "timings per algorithm",
    },
    "table_architecture_accuracy": {
        "architecture": "the conv4 variant (reference: the setting's own conv4)",
        "procedure": "freezing: MAML's freezing table; own: ANIL's own procedure; nil: NIL-testing of the body",
        "steps": "test-time inner steps (0 for NIL)",
    },
}


def column_notes(name: str, columns: Iterable[str]) -> list[tuple[str, str]]:
    """(column, what it holds) for each of ``columns`` of the table ``name`` that has a note."""
    notes = {**COLUMN_NOTES, **TABLE_COLUMN_NOTES.get(name, {})}
    return [(column, notes[column]) for column in columns if column in notes]
