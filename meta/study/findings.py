"""Verdicts on the paper's findings, from the tables of a reproduction folder.

Each finding of :data:`FINDINGS` is checked under an explicit rule with thresholds from
:class:`meta.study.verdicts.Rules`, per setting (data set, ways, shots), and gets one of the
verdicts of :mod:`meta.study.verdicts` (``holds``, ``does not hold``, ``cannot be applied``,
``not measured``), in the order of the paper:

1. Table 1 (MAML): freezing conv1-4 in the test-time inner loop costs at most
   ``freeze_drop_max`` accuracy points.
2. Figure 2 (MAML): for each measure, every conv layer's similarity before vs after adaptation
   is at least ``body_similarity_min`` and the head's at least ``head_gap_min`` below the lowest
   conv layer's.
3. Figure 3 (MAML): rules 1 and 2 at every training checkpoint of the CSV.
4. Table 2: ANIL's accuracy is within ``close_max`` points of MAML's.
4b. Table 2 (RL): ANIL-TRPO's return matches MAML-TRPO's in each environment (within the larger
   of their 95% intervals: :mod:`meta.study.rl_verdicts`).
5. Table 3: for each measure, the MAML-ANIL similarity averaged over conv1-4 is at most
   ``cross_similarity_gap_max`` below the MAML-MAML and the ANIL-ANIL references (pairs of
   different seeds); without a reference (one seed) the rule cannot be applied.
6. Table 4: NIL's accuracy is within ``close_max`` points of ANIL's.
7. Table 5 (the orderings the paper states, on mean NIL-tested accuracy): the MAML body and the
   ANIL body each above every baseline body; the multitask body below every other body, random
   features included.

:func:`check_findings` gives the verdicts; each :class:`~meta.study.verdicts.Finding` carries its
checks, one row of numbers each (:func:`meta.study.verdicts.evidence_frame`).

To add a finding: write a function ``(tables, rules) -> list[Check]`` (usually
:func:`_per_setting` over a check of one setting) and a :class:`FindingSpec` in :data:`FINDINGS`.

Imports: :mod:`meta.core.names`, :mod:`meta.study` (schema, labels, verdicts, comparison, rl_verdicts); never
matplotlib.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from meta.core.names import BODY, BODY_BASELINES, FROZEN_LABELS, LAYERS
from meta.study.comparison import body_means
from meta.study.labels import BODY_LABELS, COMPARISON_LABELS, join_words, label, measure_label
from meta.study.rl_verdicts import DEFAULT_STEPS, rl_checks
from meta.study.schema import (
    COLUMNS,
    ORDER,
    SIMILARITY_MEASURES,
    by_setting,
    check_columns,
    finite,
    folder_of,
    ordered,
    setting_label,
)
from meta.study.verdicts import (
    CANNOT_APPLY,
    FAILS,
    HOLDS,
    NOT_MEASURED,
    RULES,
    Check,
    Finding,
    Header,
    Rules,
    combine,
    findings_frame,
    findings_text,
)

__all__ = [
    "CANNOT_APPLY",
    "FAILS",
    "FINDINGS",
    "HOLDS",
    "NOT_MEASURED",
    "RULES",
    "Check",
    "Finding",
    "FindingSpec",
    "Rules",
    "check_findings",
    "findings_frame",
    "findings_text",
]

Tables = Mapping[str, pd.DataFrame]


# ---------------------------------------------------------------------------------------------
# Checks of one setting
# ---------------------------------------------------------------------------------------------


def _means(part: pd.DataFrame, column: str, value: str) -> pd.Series:
    """Mean ``value`` per label of ``column`` (finite values only)."""
    means = part.groupby(column, sort=False)[value].mean()
    return means[[finite(v) for v in means]]


def _points(value: float) -> str:
    return f"{value:.2f}"


def _layer_similarity(part: pd.DataFrame, measure: str, rules: Rules) -> tuple[str, pd.Series, str]:
    """The Figure 2 rule on one measure of one setting: verdict, similarity per layer, and why
    it could not be checked (empty if it could)."""
    values = _means(part[part["measure"] == measure], "layer", "value")
    missing = [layer for layer in LAYERS if layer not in values.index]
    if missing:
        return NOT_MEASURED, values, f"no {measure_label(measure)} value for {join_words(missing)}"
    body_min = float(values[list(BODY)].min())
    ok = body_min >= rules.body_similarity_min and float(values["head"]) <= body_min - rules.head_gap_min
    return (HOLDS if ok else FAILS), values, ""


def _adaptation_checks(part: pd.DataFrame, where: str, rules: Rules) -> list[Check]:
    """Figure 2, one setting: a check per measure (mean CCA, linear CKA) with every layer's value."""
    checks = []
    for measure in [m for m in SIMILARITY_MEASURES if m in set(part["measure"])]:
        verdict, values, why = _layer_similarity(part, measure, rules)
        numbers = {"measure": measure_label(measure), **{layer: f"{v:.3f}" for layer, v in values.items()}}
        if not why:
            body_min = float(values[list(BODY)].min())
            numbers |= {"lowest conv layer": f"{body_min:.3f}", "head below it by": f"{body_min - values['head']:.3f}"}
        checks.append(Check(where, verdict, numbers, why))
    return checks or [Check(where, NOT_MEASURED, why="no mean CCA or linear CKA rows")]


def _drop(part: pd.DataFrame, column: str, value: str, rules: Rules) -> tuple[str, pd.Series, str]:
    """The Table 1 rule: verdict, mean ``value`` per frozen set, and why it could not be checked."""
    values = _means(part, column, value)
    missing = [f for f in ("none", "conv1-4") if f not in values.index]
    if missing:
        return NOT_MEASURED, values, f"no accuracy with {join_words(missing)} frozen"
    return (HOLDS if values["none"] - values["conv1-4"] <= rules.freeze_drop_max else FAILS), values, ""


def _freezing_checks(part: pd.DataFrame, where: str, rules: Rules) -> list[Check]:
    """Table 1, one setting: the drop from nothing frozen to conv1-4 frozen, and the deepest
    frozen prefix within the limit (feature reuse can hold for conv1-3 and not for conv4)."""
    verdict, values, why = _drop(part, "frozen", "accuracy", rules)
    if why:
        return [Check(where, verdict, why=why)]
    deepest = "none"
    for frozen in FROZEN_LABELS[1:]:
        if frozen not in values.index or values["none"] - values[frozen] > rules.freeze_drop_max:
            break
        deepest = frozen
    numbers = {
        "nothing frozen": _points(values["none"]),
        "conv1-4 frozen": _points(values["conv1-4"]),
        "drop (points)": _points(values["none"] - values["conv1-4"]),
        f"deepest frozen prefix within {rules.freeze_drop_max} points": f"{deepest} ({_points(values[deepest])})",
    }
    return [Check(where, verdict, numbers)]


def _close_checks(column: str, first: str, second: str) -> Callable[[pd.DataFrame, str, Rules], list[Check]]:
    """A check of one setting: the mean accuracy of rows ``column == second`` within
    ``close_max`` points of that of ``column == first``."""

    def check(part: pd.DataFrame, where: str, rules: Rules) -> list[Check]:
        values = _means(part, column, "accuracy")
        names = {v: label(column, v) for v in (first, second)}
        missing = [names[v] for v in (first, second) if v not in values.index]
        if missing:
            return [Check(where, NOT_MEASURED, why=f"no {join_words(missing)} accuracy")]
        gap = values[second] - values[first]
        numbers = {
            names[first]: _points(values[first]),
            names[second]: _points(values[second]),
            f"{names[second]} − {names[first]} (points)": f"{gap:+.2f}",
        }
        return [Check(where, HOLDS if abs(gap) <= rules.close_max else FAILS, numbers)]

    return check


def _early_checks(part: pd.DataFrame, where: str, rules: Rules) -> list[Check]:
    """Figure 3, one setting: a check per checkpoint iteration (the Figure 2 rule for each
    measure and the Table 1 rule)."""
    checks = []
    for iteration in sorted(set(part["iteration"])):
        at = part[part["iteration"] == iteration]
        similarity, freezing = at[at["kind"] == "similarity"], at[at["kind"] == "freezing"]
        numbers: dict[Header, str] = {"iteration": str(int(iteration))}
        verdicts, reasons = [], []
        for measure in [m for m in SIMILARITY_MEASURES if m in set(similarity["measure"])]:
            verdict, values, why = _layer_similarity(similarity, measure, rules)
            verdicts.append(verdict)
            reasons += [why] if why else []
            if not why:
                numbers[(measure_label(measure), "lowest conv layer")] = f"{values[list(BODY)].min():.3f}"
                numbers[(measure_label(measure), "head")] = f"{values['head']:.3f}"
        verdict, values, why = _drop(freezing, "layer", "value", rules)
        verdicts.append(verdict)
        reasons += [why] if why else []
        if not why:
            numbers["accuracy drop with conv1-4 frozen (points)"] = _points(values["none"] - values["conv1-4"])
        checks.append(Check(where, combine(verdicts), numbers, "; ".join(reasons)))
    return checks


def _cross_model_checks(part: pd.DataFrame, where: str, rules: Rules) -> list[Check]:
    """Table 3, one setting: per measure, the MAML-ANIL similarity averaged over conv1-4 against
    the MAML-MAML and ANIL-ANIL references."""
    means = body_means(part)
    complete = means[means["n_layers"] == len(BODY)]
    checks = []
    for measure in ordered(part["measure"], ORDER["measure"]):
        values = complete[complete["measure"] == measure].groupby("comparison")["value"].mean()
        numbers = {"measure": measure_label(measure)}
        numbers |= {COMPARISON_LABELS[c]: f"{values[c]:.3f}" for c in ORDER["comparison"] if c in values.index}
        references = [c for c in ("maml-maml", "anil-anil") if c in values.index]
        if "maml-anil" not in values.index:
            checks.append(Check(where, NOT_MEASURED, numbers, "no MAML-ANIL value for every conv layer"))
        elif not references:
            why = (
                "no MAML-MAML or ANIL-ANIL pair to compare with: a reference needs two models of one algorithm "
                "trained from different seeds, and these runs have one seed each"
            )
            checks.append(Check(where, CANNOT_APPLY, numbers, why))
        else:
            gap = values["maml-anil"] - max(values[c] for c in references)
            numbers["MAML-ANIL − higher reference"] = f"{gap:+.3f}"
            checks.append(Check(where, HOLDS if gap >= -rules.cross_similarity_gap_max else FAILS, numbers))
    return checks


def _ordering(values: pd.Series, subject: str, others: Sequence[str], above: bool) -> tuple[str, str]:
    """Whether ``subject``'s accuracy is above (or below) every one of ``others`` present, and
    the numbers that say so."""
    present = [o for o in others if o in values.index]
    if subject not in values.index or not present:
        return NOT_MEASURED, ""
    name = f"{BODY_LABELS[subject]} {_points(values[subject])}"
    beaten = [o for o in present if (values[o] >= values[subject] if above else values[o] <= values[subject])]
    if beaten:
        sign = "≤" if above else "≥"
        return FAILS, f"{name} {sign} " + ", ".join(f"{BODY_LABELS[o]} {_points(values[o])}" for o in beaten)
    closest = (max if above else min)(present, key=lambda o: values[o])
    sign, which = (">", "highest") if above else ("<", "lowest")
    return HOLDS, f"{name} {sign} {which} other: {BODY_LABELS[closest]} {_points(values[closest])}"


def _body_checks(part: pd.DataFrame, where: str, rules: Rules) -> list[Check]:
    """Table 5, one setting: the paper's orderings of the NIL-tested accuracy of each body."""
    values = _means(part, "regime", "accuracy")
    orderings = (
        ("MAML body above every baseline body", "maml", BODY_BASELINES, True),
        ("ANIL body above every baseline body", "anil", BODY_BASELINES, True),
        ("multitask body below every other body", "multitask", [r for r in values.index if r != "multitask"], False),
    )
    checks = []
    for statement, subject, others, above in orderings:
        verdict, text = _ordering(values, subject, others, above)
        why = f"no {BODY_LABELS[subject]} body or nothing to compare it with" if verdict == NOT_MEASURED else ""
        checks.append(Check(where, verdict, {"ordering": statement, "ours": text}, why))
    return checks


# ---------------------------------------------------------------------------------------------
# The findings, over settings
# ---------------------------------------------------------------------------------------------


def _per_setting(
    name: str, check: Callable[[pd.DataFrame, str, Rules], list[Check]], maml_only: bool = False
) -> Callable[[Tables, Rules], list[Check]]:
    """The checks of ``check`` on each setting of the table ``name`` (its MAML rows only if
    ``maml_only``), or one not-measured check saying why there is nothing to check."""

    def checks(tables: Tables, rules: Rules) -> list[Check]:
        frame = tables.get(name)
        if frame is not None and maml_only:
            frame = frame[frame["algorithm"] == "maml"]
        if frame is None or frame.empty:
            file = f"{folder_of(name)}/{name}.csv"
            why = f"this folder has no {file}" if name not in tables else f"{file} has no {'MAML ' * maml_only}rows"
            return [Check("every setting", NOT_MEASURED, why=why)]
        return [c for key, part in by_setting(frame) for c in check(part, setting_label(*key), rules)]

    return checks


@dataclass(frozen=True)
class FindingSpec:
    """One finding of the paper and how it is checked.

    Attributes:
        key, table, source, claim: as :class:`~meta.study.verdicts.Finding`.
        rule: the rule in words, with the thresholds of the given :class:`Rules`.
        checks: the checks of the rule on the tables of a reproduction folder.
    """

    key: str
    table: str
    source: str
    claim: str
    rule: Callable[[Rules], str]
    checks: Callable[[Tables, Rules], list[Check]]


def _similarity_rule(r: Rules) -> str:
    return (
        f"for each measure (mean CCA over all coefficients, linear CKA), every conv layer's similarity before vs "
        f"after adaptation ≥ {r.body_similarity_min} and the head's at least {r.head_gap_min} below the lowest "
        "conv layer's"
    )


#: The paper's findings, in the paper's order.
FINDINGS: tuple[FindingSpec, ...] = (
    FindingSpec(
        "freezing",
        "table1_freezing",
        "Table 1",
        "Freezing the body (conv1-4) in the test-time inner loop costs little accuracy.",
        lambda r: (
            f"MAML's accuracy with conv1-4 frozen at test time at most {r.freeze_drop_max} points below "
            "its accuracy with nothing frozen"
        ),
        _per_setting("table1_freezing", _freezing_checks, maml_only=True),
    ),
    FindingSpec(
        "adaptation_similarity",
        "figure2_adaptation_similarity",
        "Figure 2",
        "Inner-loop adaptation barely changes the conv layers' representations, far less than the head's: "
        "feature reuse.",
        lambda r: f"MAML, {_similarity_rule(r)}",
        _per_setting("figure2_adaptation_similarity", _adaptation_checks, maml_only=True),
    ),
    FindingSpec(
        "early_training",
        "figure3_early_training",
        "Figure 3",
        "Feature reuse already dominates early in training (from the first checkpoints).",
        lambda r: (
            f"MAML, at every checkpoint: {_similarity_rule(r)}; and conv1-4 frozen at test time within "
            f"{r.freeze_drop_max} points of nothing frozen"
        ),
        _per_setting("figure3_early_training", _early_checks, maml_only=True),
    ),
    FindingSpec(
        "anil_vs_maml",
        "table2_anil_vs_maml",
        "Table 2",
        "ANIL (inner loop on the head only) matches MAML's accuracy.",
        lambda r: f"|ANIL − MAML| ≤ {r.close_max} accuracy points",
        _per_setting("table2_anil_vs_maml", _close_checks("algorithm", "maml", "anil")),
    ),
    FindingSpec(
        "anil_vs_maml_rl",
        "table2_rl",
        "Table 2 (RL)",
        "ANIL matches MAML in meta-RL too (MAML-TRPO and ANIL-TRPO on 2D navigation and HalfCheetah).",
        lambda r: (
            f"in each environment, ANIL's return after {DEFAULT_STEPS} test-time inner step(s) within the larger "
            "of the two 95% intervals over test tasks of MAML's"
        ),
        rl_checks,
    ),
    FindingSpec(
        "cross_model_similarity",
        "table3_cross_model_similarity",
        "Table 3",
        "MAML and ANIL learn similar representations: the similarity between a MAML and an ANIL model is "
        "about that between two MAML or two ANIL models.",
        lambda r: (
            "for each measure, the similarity averaged over conv1-4 of MAML-ANIL pairs at most "
            f"{r.cross_similarity_gap_max} below that of MAML-MAML and of ANIL-ANIL pairs (different seeds); it cannot "
            "be applied without such a pair"
        ),
        _per_setting("table3_cross_model_similarity", _cross_model_checks),
    ),
    FindingSpec(
        "nil_vs_anil",
        "table4_nil",
        "Table 4",
        "NIL (no head, no inner loop at test time) matches ANIL's accuracy.",
        lambda r: f"|NIL − ANIL| ≤ {r.close_max} accuracy points",
        _per_setting("table4_nil", _close_checks("method", "anil", "nil")),
    ),
    FindingSpec(
        "body_regimes",
        "table5_body_regimes",
        "Table 5",
        "MAML and ANIL training give the best bodies (all tested with NIL); multitask training gives the worst, "
        "worse even than random features.",
        lambda r: (
            "on mean NIL-tested accuracy: the MAML body and the ANIL body each above every baseline body "
            "(multiclass pretraining, multitask training, random features, NIL training), and the multitask body below "
            "every other body, random features included"
        ),
        _per_setting("table5_body_regimes", _body_checks),
    ),
)


def check_findings(tables: Tables, *, rules: Rules = RULES) -> list[Finding]:
    """Verdicts on the paper's findings (:data:`FINDINGS`), in order, for the DataFrames of
    :func:`meta.study.schema.load_tables` (keys are CSV stems; absent keys are not measured;
    ``ValueError`` for a table without the columns of :data:`meta.study.schema.COLUMNS`). The
    paper's Tables 1, 2, 4 and 5 (:func:`meta.study.paper.paper_table`) have those columns and may
    be passed too."""
    for name, frame in tables.items():
        if name in COLUMNS:
            check_columns(frame, name)
    findings = []
    for spec in FINDINGS:
        checks = tuple(spec.checks(tables, rules))
        verdict = combine(c.verdict for c in checks)
        findings.append(Finding(spec.key, spec.table, spec.source, spec.claim, spec.rule(rules), verdict, checks))
    return findings
