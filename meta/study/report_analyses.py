"""The sections of ``report.html`` for the paper's further analyses and for the architecture
study (:data:`ANALYSIS_SECTIONS`, after the paper's :data:`meta.study.report_sections.SECTIONS`):
learning curves, weight movement, the similarity between the regimes' bodies, each body with
each test procedure, ANIL's speed-up, and, per conv4 variant, the accuracies, the verdict on
feature reuse (:mod:`meta.study.findings_architecture`) and the similarity after each inner step.

Each section turns its CSV's rows into blocks (:mod:`meta.study.report_blocks`): its figure
(:data:`meta.study.figures_analyses.ANALYSIS_FIGURES`, via
:func:`meta.study.report_sections.figure_blocks`) and compact tables (:func:`pivot`).

The meta-RL study's sections (:data:`RL_SECTIONS`) take their blocks from :mod:`meta.study.rl_report`.

Imports: :mod:`meta.study` (report_sections, report_blocks, figures_analyses,
findings_architecture, rl_report, comparison, labels, schema, verdicts).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from meta.core.names import FROZEN_LABELS
from meta.study.comparison import pm_text
from meta.study.figures_analyses import last_step
from meta.study.findings_architecture import architecture_verdicts, rule_text, verdict_frame, verdict_sentence
from meta.study.labels import interval_text, label, measure_label
from meta.study.report_blocks import Block, Bullets, Details, Table, Text
from meta.study.report_sections import Context, Section, figure_blocks, pivot
from meta.study.rl_report import rl_similarity_reading, rl_table_blocks
from meta.study.schema import by_setting, ordered, setting_label
from meta.study.verdicts import RULES

#: The columns of the test-time-procedure table, by the layers a procedure adapts.
PROCEDURES: dict[str, str] = {
    "all layers": "MAML's procedure: every layer adapts",
    "head": "ANIL's procedure: the head adapts",
    "none": "NIL: no head, no inner loop",
}


# ---------------------------------------------------------------------------------------------
# Learning curves
# ---------------------------------------------------------------------------------------------


def _number(value: float, digits: int) -> str:
    """``value`` with ``digits`` decimals, empty when it is not a number."""
    return f"{value:.{digits}f}" if pd.notna(value) else ""


def run_ends(runs: pd.DataFrame) -> dict[str, str]:
    """Where the runs of one algorithm end (means over seeds): last and best validation accuracy,
    last training query loss, and the iteration and wall time of that last training row."""
    val = runs[runs["split"] == "val"].dropna(subset=["accuracy"]).sort_values("iteration")
    train = runs[runs["split"] == "train"].dropna(subset=["loss"]).sort_values("iteration").groupby("seed").tail(1)
    accuracy = val.groupby("seed")["accuracy"]
    return {
        "seeds": str(runs["seed"].nunique()),
        "last validation accuracy (%)": _number(accuracy.last().mean(), 2),
        "best validation accuracy (%)": _number(accuracy.max().mean(), 2),
        "last training query loss": _number(train["loss"].mean(), 3),
        "training iterations": _number(train["iteration"].mean(), 0),
        "training wall time (s)": _number(train["wall_seconds"].mean(), 1),
    }


def curve_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """A row per setting and algorithm: :func:`run_ends` (display text)."""
    rows = [
        {"setting": setting_label(*key), "algorithm": label("algorithm", a), **run_ends(part[part["algorithm"] == a])}
        for key, part in by_setting(frame)
        for a in ordered(part["algorithm"], ("maml", "anil"))
    ]
    return pd.DataFrame(rows)


def _learning_curves_blocks(frame: pd.DataFrame, context: Context) -> list[Block]:
    """The learning curves, then a table of where each algorithm ends."""
    caption = (
        "Per setting and algorithm, the mean over seeds of each run's last and best validation accuracy, its last "
        "logged training query loss, and its training iterations and wall time at that point."
    )
    return [*figure_blocks("figure5_learning_curves", frame, context), Table(curve_summary(frame), caption)]


# ---------------------------------------------------------------------------------------------
# Weight movement
# ---------------------------------------------------------------------------------------------


def movement_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The movement rows at the last inner step, each with its ``relative`` value beside it."""
    last = last_step(frame, ("algorithm", "architecture"))
    keys = ["algorithm", "architecture", "step", "layer", "dataset", "ways", "shots"]
    relative = last[last["quantity"] == "relative"][[*keys, "value"]].rename(columns={"value": "relative"})
    return last[last["quantity"] == "movement"].merge(relative, on=keys, how="left")


def _movement_cell(row: Any) -> str:
    """``"0.221 (3.7%)"``: the movement and, in brackets, the same relative to the meta-learned weights."""
    relative = f" ({100 * row.relative:.1f}%)" if pd.notna(row.relative) else ""
    return f"{row.value:.3f}{relative}"


def _weight_movement_blocks(frame: pd.DataFrame, context: Context) -> list[Block]:
    """The figure, then per setting a table: layer x (variant, algorithm)."""
    blocks = figure_blocks("figure_weight_movement", frame, context)
    for key, part in by_setting(movement_rows(frame)):
        caption = (
            f"{setting_label(*key)}: ‖θ_adapted − θ_meta‖ after the last inner step (step {int(part['step'].max())}), "
            "mean over test tasks; in brackets, the same relative to ‖θ_meta‖."
        )
        blocks.append(Table(pivot(part, "layer", ("architecture", "algorithm"), _movement_cell), caption))
    return blocks


# ---------------------------------------------------------------------------------------------
# Similarity between the regimes' bodies
# ---------------------------------------------------------------------------------------------


def _similarity_cell(row: Any) -> str:
    """``"0.951 ± 0.012"``: a similarity and its 95% half-width over test tasks."""
    return pm_text(row.value, row.ci95, 3)


def _regime_similarity_blocks(frame: pd.DataFrame, context: Context) -> list[Block]:
    """The matrices, then (folded) per setting a table: pair of bodies x (measure, layer)."""
    tables: list[Block] = []
    pairs = frame.assign(
        pair=[f"{label('regime', a)} vs {label('regime', b)}" for a, b in zip(frame["regime_a"], frame["regime_b"])]
    )
    for key, part in by_setting(pairs):
        caption = f"{setting_label(*key)}: similarity between the two bodies, mean ± {interval_text(part['n_tasks'])}."
        table = pivot(part, "pair", ("measure", "layer"), _similarity_cell)
        tables.append(Table(table.rename(columns={"pair": "bodies compared"}), caption))
    return [
        *figure_blocks("figure_regime_similarity", frame, context),
        Details("The numbers of every pair", tuple(tables)),
    ]


# ---------------------------------------------------------------------------------------------
# Test-time procedures
# ---------------------------------------------------------------------------------------------


def _procedure_cell(row: Any) -> str:
    """``"92.10 ± 0.50 (own)"``: the accuracy, ``(own)`` for the body's own procedure."""
    own = " (own)" if str(row.procedure).startswith("own") else ""
    return pm_text(row.accuracy, row.ci95) + own


def _test_time_heads_blocks(frame: pd.DataFrame, context: Context) -> list[Block]:
    """Per setting, body x test procedure."""
    blocks: list[Block] = []
    named = frame.assign(test=[PROCEDURES.get(a, a) for a in frame["adapted"]])
    for key, part in by_setting(named):
        caption = (
            f"{setting_label(*key)}: rows, the algorithm that trained the body; columns, the test procedure. Mean "
            f"accuracy (%) ± {interval_text(part['n_tasks'], part['n_seeds'])}. (own): the body's own procedure. "
            "MAML's body with ANIL's procedure is MAML with conv1-4 frozen at test time (Table 1)."
        )
        table = pivot(part, "body", ("test",), _procedure_cell)
        blocks.append(
            Table(table[["body trained by", *[p for p in PROCEDURES.values() if p in table.columns]]], caption)
        )
    return blocks


# ---------------------------------------------------------------------------------------------
# Speed
# ---------------------------------------------------------------------------------------------


def speed_sentence(frame: pd.DataFrame) -> str:
    """ANIL's speed-ups, ours beside the paper's, in one sentence per setting."""
    parts = []
    for key, part in by_setting(frame):
        each = [f"{r.speedup:.2f}× per {r.quantity} (the paper: {r.paper_speedup:g}×)" for r in part.itertuples()]
        parts.append(f"{setting_label(*key)}: ANIL is {' and '.join(each)} as fast as MAML.")
    return " ".join(parts)


def _speed_blocks(frame: pd.DataFrame, context: Context) -> list[Block]:
    """A sentence with ours beside the paper's, then the timings."""
    table = pd.DataFrame(
        {
            "setting": [setting_label(*k) for k in zip(frame["dataset"], frame["ways"], frame["shots"])],
            "what is timed": frame["quantity"],
            "MAML (s)": [f"{v:.4f}" for v in frame["maml_seconds"]],
            "ANIL (s)": [f"{v:.4f}" for v in frame["anil_seconds"]],
            "ANIL's speed-up: ours": [f"{v:.2f}×" for v in frame["speedup"]],
            "the paper's": [f"{v:g}×" for v in frame["paper_speedup"]],
            "timings each": [str(int(v)) for v in frame["repeats"]],
        }
    )
    caption = (
        "Median seconds of one training iteration and of one test-time adaptation, MAML and ANIL timed alternately "
        "in one process on one thread; the speed-up is MAML's seconds over ANIL's. The paper's numbers are from its "
        "section 4.2 (its own hardware and setting)."
    )
    return [Text(speed_sentence(frame)), Table(table, caption)]


# ---------------------------------------------------------------------------------------------
# The architecture study
# ---------------------------------------------------------------------------------------------


def _study_row(row: Any) -> str:
    """What an accuracy row of the study is, in words: ``"MAML, conv1-4 frozen, 40 steps"``."""
    who = label("algorithm", row.algorithm)
    if row.procedure == "freezing":
        frozen = "nothing frozen" if row.frozen == "none" else f"{row.frozen} frozen"
        return f"{who}, {frozen}, {int(row.steps)} steps"
    return f"{who} body, NIL-tested" if row.procedure == "nil" else f"{who}'s own procedure, {int(row.steps)} steps"


def _row_order(frame: pd.DataFrame) -> list[str]:
    """The accuracy rows of the study in reading order: MAML's freezing table per step count, then the rest."""
    freezing = frame[frame["procedure"] == "freezing"]
    steps = sorted({int(s) for s in freezing["steps"]})
    ordered_rows = [
        _study_row(pd.Series({"algorithm": "maml", "procedure": "freezing", "frozen": f, "steps": s}))
        for s in steps
        for f in FROZEN_LABELS
    ]
    return list(dict.fromkeys([*ordered_rows, *frame["row"]]))


def _architecture_accuracy_blocks(frame: pd.DataFrame, context: Context) -> list[Block]:
    """The verdict per variant (sentences and a table with the rule's numbers), then every accuracy."""
    verdicts = architecture_verdicts(context.tables)
    rule = rule_text(RULES)
    blocks: list[Block] = [
        Text(f"Rule: {rule[0].upper()}{rule[1:]}.", "note"),
        Bullets(tuple(verdict_sentence(v) for v in verdicts)),
        Table(verdict_frame(verdicts), "The verdict on each conv4 variant, with the numbers the rule used."),
    ]
    rows = frame.assign(row=[_study_row(r) for r in frame.itertuples(index=False)])
    for key, part in by_setting(rows):
        caption = (
            f"{setting_label(*key)}: test accuracy (%) of each conv4 variant (columns), mean ± "
            f"{interval_text(part['n_tasks'], part['n_seeds'])}."
        )
        table = pivot(part, "row", ("architecture",), lambda r: pm_text(r.accuracy, r.ci95), _row_order(part))
        blocks.append(Table(table.rename(columns={"row": "trained and tested"}), caption))
    return blocks


def _architecture_similarity_blocks(frame: pd.DataFrame, context: Context) -> list[Block]:
    """The figure, then (folded) each layer's similarity after the last inner step per variant."""
    tables: list[Block] = []
    last = last_step(frame, ("algorithm", "architecture"))
    for key, part in by_setting(last):
        for measure in ordered(part["measure"], ("cca", "cka")):
            rows = part[part["measure"] == measure]
            caption = (
                f"{setting_label(*key)}: {measure_label(measure)} before vs after the last inner step, mean ± "
                f"{interval_text(rows['n_tasks'], rows['n_seeds'])}."
            )
            tables.append(Table(pivot(rows, "layer", ("architecture", "algorithm"), _similarity_cell), caption))
    return [
        *figure_blocks("figure_architecture_similarity", frame, context),
        Text(
            "The verdict on each variant, with its rule and the numbers it used, is in the section",
            "note",
            ("The architecture study: when does feature reuse hold?", "#table_architecture_accuracy"),
        ),
        Details("The numbers after the last inner step", tuple(tables)),
    ]


#: The report's sections on the further analyses, after the paper's.
ANALYSIS_SECTIONS: tuple[Section, ...] = (
    Section("figure5_learning_curves", "Learning curves", "Learning curves of MAML and ANIL", _learning_curves_blocks),
    Section(
        "figure_weight_movement",
        "Weight movement",
        "How far the inner loop moves each layer's weights",
        _weight_movement_blocks,
    ),
    Section(
        "figure_regime_similarity",
        "Body similarity",
        "Similarity between the bodies of the training regimes (the paper's appendix D.2)",
        _regime_similarity_blocks,
    ),
    Section(
        "table_test_time_heads",
        "Test procedures",
        "Each body with its own, the other algorithm's and NIL's test procedure (the paper's appendix D.1)",
        _test_time_heads_blocks,
    ),
    Section("table_speed", "Speed", "ANIL's speed-up over MAML", _speed_blocks),
    Section(
        "table_architecture_accuracy",
        "Architectures",
        "The architecture study: when does feature reuse hold?",
        _architecture_accuracy_blocks,
    ),
    Section(
        "figure_architecture_similarity",
        "Architecture similarity",
        "The architecture study: each layer's similarity after each inner step",
        _architecture_similarity_blocks,
    ),
)


def _rl_similarity_blocks(frame: pd.DataFrame, context: Context) -> list[Block]:
    """The RL similarity figure (drawn with the report's other figures) and its reading."""
    return [*figure_blocks("figure_rl_similarity", frame, context), Text(rl_similarity_reading(frame))]


#: The meta-RL study's sections (presets with ``rl``): the paper's Table 2 RL columns beside ours,
#: with a verdict per environment, and the policy's layers before vs after adaptation.
RL_SECTIONS: tuple[Section, ...] = (
    Section("table2_rl", "Table 2 (RL)", "Table 2 (RL): MAML-TRPO vs ANIL-TRPO", rl_table_blocks),
    Section(
        "figure_rl_similarity",
        "RL similarity",
        "The policy's layers before vs after adaptation (meta-RL)",
        _rl_similarity_blocks,
    ),
)
