"""What a verdict is: the thresholds of the rules (:class:`Rules`), one check of a rule on one
setting (:class:`Check`), a finding with its verdict and evidence (:class:`Finding`), how checks
combine into a verdict (:func:`combine`), and the findings as a table or as text.

The rules themselves, one per finding of the paper, are in :mod:`meta.study.findings`.

A verdict is one of :data:`HOLDS`, :data:`FAILS` (``does not hold``), :data:`CANNOT_APPLY`
(``cannot be applied``: the numbers are there but the rule needs a reference they do not have,
e.g. Table 3 with one seed) and :data:`NOT_MEASURED`. A finding holds when every check that could
be made holds; it does not hold when one of them does not.

Imports: pandas; nothing of :mod:`meta`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd

HOLDS, FAILS, CANNOT_APPLY, NOT_MEASURED = "holds", "does not hold", "cannot be applied", "not measured"
#: A column header of a check's numbers: a name, or (group, name) for a two-row header.
Header = str | tuple[str, str]


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
        cross_similarity_gap_max: MAML-ANIL similarity (averaged over the body) may be at most
            this much below the MAML-MAML and ANIL-ANIL references (the paper's largest gap:
            0.03, linear CKA 0.83 against ANIL-ANIL's 0.86).
        reuse_drop_max: the architecture study (:mod:`meta.study.report_analyses`): a conv4 variant
            reuses its features when freezing conv1-4 at test time (the better of the run's inner
            steps and the longer head-only loop) costs MAML at most this many points...
        reuse_conv4_min: ...and MAML's conv4 similarity (mean CCA; linear CKA without it) before
            vs after the last test-time inner step is at least this; otherwise the body adapts.
    """

    body_similarity_min: float = 0.9
    head_gap_min: float = 0.1
    freeze_drop_max: float = 3.0
    close_max: float = 3.0
    cross_similarity_gap_max: float = 0.05
    reuse_drop_max: float = 3.0
    reuse_conv4_min: float = 0.9


RULES = Rules()


@dataclass(frozen=True)
class Check:
    """One check of a finding's rule, on one setting (and measure, checkpoint or ordering).

    Attributes:
        where: the setting, e.g. ``"glyphs 5-way 1-shot"``.
        verdict: :data:`HOLDS`, :data:`FAILS`, :data:`CANNOT_APPLY` or :data:`NOT_MEASURED`.
        numbers: the numbers the rule used, as display text by column header (:data:`Header`), in order.
        why: for a check that could not be made, the reason in plain words (empty otherwise).
    """

    where: str
    verdict: str
    numbers: Mapping[Header, str] = field(default_factory=dict)
    why: str = ""


@dataclass(frozen=True)
class Finding:
    """A verdict on one of the paper's findings.

    Attributes:
        key: short name (``freezing``, ``adaptation_similarity``, ``body_regimes``...).
        table: the CSV stem of the table or figure it is checked on (its section of the report).
        source: where the paper shows it (``Table 1``, ``Figure 2``...).
        claim: the paper's claim.
        rule: the rule applied, thresholds included.
        verdict: the combined verdict of ``evidence`` (:func:`combine`).
        evidence: the checks, one per setting (and measure, checkpoint or ordering).
    """

    key: str
    table: str
    source: str
    claim: str
    rule: str
    verdict: str
    evidence: tuple[Check, ...]


def combine(verdicts: Iterable[str]) -> str:
    """Holds if every check that could be made holds, does not hold if one does not; else
    cannot be applied (if a check could not be) or not measured."""
    seen = list(verdicts)
    made = [v for v in seen if v in (HOLDS, FAILS)]
    if made:
        return HOLDS if all(v == HOLDS for v in made) else FAILS
    return CANNOT_APPLY if CANNOT_APPLY in seen else NOT_MEASURED


def evidence_frame(finding: Finding) -> pd.DataFrame:
    """The checks of ``finding`` as a table: ``setting``, the numbers' columns, ``verdict`` and,
    where a check could not be made, ``why``."""
    rows = [{"setting": c.where, **c.numbers, "verdict": c.verdict, "why": c.why} for c in finding.evidence]
    frame = pd.DataFrame(rows).fillna("")
    return frame.drop(columns="why") if not frame["why"].any() else frame


def findings_frame(findings: Sequence[Finding]) -> pd.DataFrame:
    """The findings as a table: source, claim, verdict, rule, evidence (one line per check, joined by "; ")."""
    return pd.DataFrame(
        [
            {
                "source": f.source,
                "claim": f.claim,
                "verdict": f.verdict,
                "rule": f.rule,
                "evidence": "; ".join(check_text(c) for c in f.evidence),
            }
            for f in findings
        ]
    )


def check_text(check: Check) -> str:
    """One check as a line: ``"glyphs 5-way 1-shot: MAML 90.17, ANIL 90.51, ... -> holds"``."""
    numbers = ", ".join(
        f"{', '.join(column) if isinstance(column, tuple) else column} {value}"
        for column, value in check.numbers.items()
        if value != ""
    )
    why = f" ({check.why})" if check.why else ""
    return f"{check.where}: {numbers} -> {check.verdict}{why}" if numbers else f"{check.where}: {check.verdict}{why}"


def findings_text(findings: Sequence[Finding]) -> str:
    """The verdicts as plain text, one block per finding (verdict, claim, rule, a line per check)."""
    return "\n".join(
        f"[{f.verdict}] {f.source}: {f.claim}\n  rule: {f.rule}\n"
        + "\n".join(f"  - {check_text(c)}" for c in f.evidence)
        for f in findings
    )
