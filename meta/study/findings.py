"""Verdicts on the paper's qualitative findings, from the tables of a reproduction folder.

Findings checked (:data:`FINDINGS`), each ``holds`` / ``does not hold`` / ``not measured`` under an
explicit rule with thresholds from :class:`Rules`, on MAML rows as in the paper:

1. Figure 2: every conv layer's mean similarity before vs after adaptation (CCA and CKA, each
   measure present) is at least ``body_similarity_min`` and the head's is at least
   ``head_gap_min`` below the lowest conv layer's.
2. Table 1: freezing conv1-4 at test time costs at most ``freeze_drop_max`` accuracy points.
3. Table 2: ANIL's accuracy is within ``close_max`` points of MAML's.
4. Table 4: NIL's accuracy is within ``close_max`` points of ANIL's.
5. Figure 3: rules 1 and 2 hold at every training checkpoint in the CSV.

Each is decided per setting (data set, ways, shots); a finding holds when it holds in every
measured setting. :func:`check_findings` gives the verdicts; :func:`findings_frame` and
:func:`findings_text` show them.

Imports: :mod:`meta.core.names`, :mod:`meta.study.schema`; never matplotlib.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from meta.core.names import BODY, FROZEN_LABELS, LAYERS
from meta.study.schema import COLUMNS, SIMILARITY_MEASURES, by_setting, check_columns, finite, setting_label

HOLDS, FAILS, NOT_MEASURED = "holds", "does not hold", "not measured"
#: A verdict and its evidence (one line of numbers).
Check = tuple[str, str]


@dataclass(frozen=True)
class Rules:
    """Thresholds of the verdicts (similarities in [0, 1], accuracies in percentage points).

    Attributes:
        body_similarity_min: every conv layer's mean similarity before vs after adaptation must
            be at least this (the paper: CCA > 0.9 for the body).
        head_gap_min: the head's similarity must be at least this much below the lowest conv
            layer's (the paper: head CCA < 0.5).
        freeze_drop_max: freezing conv1-4 at test time may cost at most this many points (the
            paper's largest drop: 1.5 points, MiniImageNet 5-shot).
        close_max: "close" accuracies differ by at most this many points (the paper's largest
            ANIL−MAML gap: 2.5 points, Omniglot 20-way 1-shot).
    """

    body_similarity_min: float = 0.9
    head_gap_min: float = 0.1
    freeze_drop_max: float = 3.0
    close_max: float = 3.0


RULES = Rules()


@dataclass(frozen=True)
class Finding:
    """A verdict on one of the paper's qualitative findings.

    Attributes:
        key: short name (``adaptation_similarity``, ``freezing``, ``anil_vs_maml``, ``nil_vs_anil``,
            ``early_training``).
        source: where the paper shows it (``Figure 2``, ``Table 1``...).
        claim: the paper's claim.
        rule: the rule applied, thresholds included.
        verdict: :data:`HOLDS`, :data:`FAILS` (``does not hold``) or :data:`NOT_MEASURED`.
        evidence: the numbers used, one line per setting (or why nothing was measured).
    """

    key: str
    source: str
    claim: str
    rule: str
    verdict: str
    evidence: tuple[str, ...]


#: (key, source, claim) of each finding, in the order of the paper.
FINDINGS: tuple[tuple[str, str, str], ...] = (
    (
        "adaptation_similarity",
        "Figure 2",
        "Inner-loop adaptation barely changes the conv layers' representations (CCA/CKA before vs "
        "after adaptation far higher than the head's): feature reuse.",
    ),
    ("freezing", "Table 1", "Freezing the body (conv1-4) in the test-time inner loop costs little accuracy."),
    ("anil_vs_maml", "Table 2", "ANIL (inner loop on the head only) matches MAML's accuracy."),
    ("nil_vs_anil", "Table 4", "NIL (no head, no inner loop at test time) matches ANIL's accuracy."),
    ("early_training", "Figure 3", "Feature reuse already dominates early in training (from the first checkpoints)."),
)


# ---------------------------------------------------------------------------------------------
# The rules, on one setting
# ---------------------------------------------------------------------------------------------


def _combine(verdicts: Iterable[str]) -> str:
    """Holds if every measured part holds; not measured if nothing was measured."""
    measured = [v for v in verdicts if v != NOT_MEASURED]
    if not measured:
        return NOT_MEASURED
    return HOLDS if all(v == HOLDS for v in measured) else FAILS


def _similarity_check(part: pd.DataFrame, where: str, rules: Rules) -> list[Check]:
    """Rule 1 on the similarity rows of one setting (one row per layer and measure): a check per
    measure of :data:`SIMILARITY_MEASURES` present."""
    results = []
    for measure in [m for m in SIMILARITY_MEASURES if m in set(part["measure"])]:
        values = part[part["measure"] == measure].groupby("layer", sort=False)["value"].mean()
        missing = [layer for layer in LAYERS if layer not in values.index or not finite(values[layer])]
        if missing:
            results.append((NOT_MEASURED, f"{where}, {measure.upper()}: no value for {', '.join(missing)}"))
            continue
        body_min, head = float(values[list(BODY)].min()), float(values["head"])
        ok = body_min >= rules.body_similarity_min and head <= body_min - rules.head_gap_min
        layers = ", ".join(f"{layer} {values[layer]:.3f}" for layer in LAYERS)
        results.append(
            (
                HOLDS if ok else FAILS,
                f"{where}, {measure.upper()}: {layers}; lowest conv {body_min:.3f} "
                f"({'≥' if body_min >= rules.body_similarity_min else '<'} {rules.body_similarity_min}), "
                f"head {body_min - head:.3f} below it "
                f"({'≥' if body_min - head >= rules.head_gap_min else '<'} {rules.head_gap_min})",
            )
        )
    if not results:
        results.append((NOT_MEASURED, f"{where}: no CCA or CKA rows"))
    return results


def _gap_check(
    part: pd.DataFrame,
    column: str,
    first: str,
    second: str,
    where: str,
    *,
    limit: float,
    one_sided: bool,
    value: str = "accuracy",
) -> Check:
    """Compare ``value`` of the rows ``column == first`` and ``column == second``.

    ``one_sided``: holds if ``first − second <= limit`` (a drop); else holds if
    ``|second − first| <= limit``.
    """
    values = part.groupby(column, sort=False)[value].mean()
    missing = [label for label in (first, second) if label not in values.index or not finite(values[label])]
    if missing:
        return NOT_MEASURED, f"{where}: no {column} = {', '.join(missing)} row"
    a, b = float(values[first]), float(values[second])
    if one_sided:
        gap, ok = a - b, a - b <= limit
        text = f"{first} {a:.2f}, {second} {b:.2f}: drop {gap:.2f} points ({'≤' if ok else '>'} {limit})"
    else:
        gap, ok = b - a, abs(b - a) <= limit
        text = (
            f"{first} {a:.2f}, {second} {b:.2f}: {second} − {first} = {gap:+.2f} points"
            f" (|·| {'≤' if ok else '>'} {limit})"
        )
    return HOLDS if ok else FAILS, f"{where}: {text}"


def _freezing_check(part: pd.DataFrame, where: str, rules: Rules) -> list[Check]:
    """Rule 2 on one setting of Table 1, with the deepest frozen prefix that stays within the
    limit named in the evidence (feature reuse can hold for conv1-3 and not for conv4)."""
    verdict, text = _gap_check(part, "frozen", "none", "conv1-4", where, limit=rules.freeze_drop_max, one_sided=True)
    values = part.groupby("frozen", sort=False)["accuracy"].mean()
    if verdict == NOT_MEASURED:
        return [(verdict, text)]
    deepest = "none"
    for label in FROZEN_LABELS[1:]:
        if label not in values.index or values["none"] - values[label] > rules.freeze_drop_max:
            break
        deepest = label
    return [
        (
            verdict,
            f"{text}; deepest frozen prefix within {rules.freeze_drop_max} points: {deepest} ({values[deepest]:.2f})",
        )
    ]


def _early_check(part: pd.DataFrame, where: str, rules: Rules) -> list[Check]:
    """Rules 1 and 2 at each checkpoint iteration of one setting of Figure 3's CSV."""
    results = []
    for iteration in sorted(set(part["iteration"])):
        at = part[part["iteration"] == iteration]
        label = f"{where}, iteration {int(iteration)}"
        similarity = at[at["kind"] == "similarity"]
        freezing = at[at["kind"] == "freezing"]
        if not similarity.empty:
            results += _similarity_check(similarity, label, rules)
        if not freezing.empty:
            results.append(
                _gap_check(
                    freezing,
                    "layer",
                    "none",
                    "conv1-4",
                    label,
                    limit=rules.freeze_drop_max,
                    one_sided=True,
                    value="value",
                )
            )
    return results


# ---------------------------------------------------------------------------------------------
# The findings, over settings
# ---------------------------------------------------------------------------------------------


def _per_setting(
    frame: pd.DataFrame | None, check: Callable[[pd.DataFrame, str], list[Check]], absent: str
) -> tuple[str, tuple[str, ...]]:
    """``check`` applied to each setting of ``frame``: the combined verdict and every evidence line."""
    if frame is None or frame.empty:
        return NOT_MEASURED, (absent,)
    results = [r for key, part in by_setting(frame) for r in check(part, setting_label(*key))]
    return _combine(v for v, _ in results), tuple(text for _, text in results)


def _gap_finding(
    frame: pd.DataFrame | None, column: str, first: str, second: str, *, limit: float, absent: str
) -> tuple[str, tuple[str, ...]]:
    """:func:`_gap_check` (two-sided) of accuracies in each setting of ``frame``, combined."""
    return _per_setting(
        frame,
        lambda part, where: [_gap_check(part, column, first, second, where, limit=limit, one_sided=False)],
        absent,
    )


def _maml_rows(frame: pd.DataFrame | None, column: str = "algorithm") -> pd.DataFrame | None:
    """The MAML rows of ``frame`` (None when ``frame`` is)."""
    return None if frame is None else frame[frame[column] == "maml"]


def _rule_texts(rules: Rules) -> dict[str, str]:
    """The rule of each finding (keyed as :data:`FINDINGS`), with the thresholds of ``rules``."""
    similarity = (
        f"every MAML conv layer's mean similarity ≥ {rules.body_similarity_min} and the head's at "
        f"least {rules.head_gap_min} below the lowest conv layer's, for CCA and CKA (each one present)"
    )
    return {
        "adaptation_similarity": f"Before vs after adaptation: {similarity}",
        "freezing": f"Accuracy with conv1-4 frozen ≥ accuracy with none frozen − {rules.freeze_drop_max} points (MAML)",
        "anil_vs_maml": f"|ANIL − MAML| ≤ {rules.close_max} accuracy points",
        "nil_vs_anil": f"|NIL − ANIL| ≤ {rules.close_max} accuracy points",
        "early_training": (
            f"At every checkpoint iteration of the CSV: {similarity}; and conv1-4 frozen within "
            f"{rules.freeze_drop_max} points of none frozen"
        ),
    }


def check_findings(tables: Mapping[str, pd.DataFrame], *, rules: Rules = RULES) -> list[Finding]:
    """Verdicts on the paper's qualitative findings (:data:`FINDINGS`), in order, for the
    DataFrames of :func:`meta.study.schema.load_tables` (keys are CSV stems; absent keys are not
    measured; ``ValueError`` for a table without the columns of
    :data:`meta.study.schema.COLUMNS`). The paper's Tables 1, 2 and 4
    (:func:`meta.study.paper.paper_table`) have those columns and may be passed too."""
    tables = dict(tables)
    for name, frame in tables.items():
        if name in COLUMNS:
            check_columns(frame, name)
    checks = {
        "adaptation_similarity": _per_setting(
            _maml_rows(tables.get("figure2_adaptation_similarity")),
            lambda part, where: _similarity_check(part, where, rules),
            "no MAML rows: figures/figure2_adaptation_similarity.csv absent or without MAML",
        ),
        "freezing": _per_setting(
            _maml_rows(tables.get("table1_freezing")),
            lambda part, where: _freezing_check(part, where, rules),
            "no MAML rows: tables/table1_freezing.csv absent or empty",
        ),
        "anil_vs_maml": _gap_finding(
            tables.get("table2_anil_vs_maml"),
            "algorithm",
            "maml",
            "anil",
            limit=rules.close_max,
            absent="tables/table2_anil_vs_maml.csv absent or empty",
        ),
        "nil_vs_anil": _gap_finding(
            tables.get("table4_nil"),
            "method",
            "anil",
            "nil",
            limit=rules.close_max,
            absent="tables/table4_nil.csv absent or empty",
        ),
        "early_training": _per_setting(
            _maml_rows(tables.get("figure3_early_training")),
            lambda part, where: _early_check(part, where, rules),
            "no MAML rows: figures/figure3_early_training.csv absent or without MAML",
        ),
    }
    rule_texts = _rule_texts(rules)
    return [Finding(key, source, claim, rule_texts[key], *checks[key]) for key, source, claim in FINDINGS]


def findings_frame(findings: Sequence[Finding]) -> pd.DataFrame:
    """The findings as a table: source, claim, verdict, rule, evidence (lines joined by "; ")."""
    return pd.DataFrame(
        [
            {
                "source": f.source,
                "claim": f.claim,
                "verdict": f.verdict,
                "rule": f.rule,
                "evidence": "; ".join(f.evidence),
            }
            for f in findings
        ]
    )


def findings_text(findings: Sequence[Finding]) -> str:
    """The verdicts as plain text, one block per finding (verdict, claim, rule, evidence lines)."""
    blocks = [
        f"[{f.verdict}] {f.source}: {f.claim}\n  rule: {f.rule}\n" + "\n".join(f"  - {e}" for e in f.evidence)
        for f in findings
    ]
    return "\n".join(blocks)
