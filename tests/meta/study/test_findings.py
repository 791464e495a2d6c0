"""The verdicts on Tables 3 and 5 (meta.study.findings), how checks combine into a verdict and how
they read (meta.study.verdicts), on fake reproductions (tests/fake_reproduction.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from fake_reproduction import FakeSpec, fake_tables

from meta.study.findings import CANNOT_APPLY, FAILS, FINDINGS, HOLDS, NOT_MEASURED, RULES, Rules, check_findings
from meta.study.verdicts import Check, Finding, check_text, combine, evidence_frame, findings_text

OMNIGLOT = FakeSpec(dataset="omniglot", ways=20, shots=1, accuracy=94.25, seed=1)


def _finding(tables: dict[str, pd.DataFrame], key: str, rules: Rules = RULES) -> Finding:
    return {f.key: f for f in check_findings(tables, rules=rules)}[key]


def _with_bodies(accuracies: dict[str, float]) -> dict[str, pd.DataFrame]:
    """A fake reproduction whose Table 5 has exactly ``accuracies`` (regime -> accuracy) and no other rows."""
    tables = fake_tables()
    table = tables["table5_body_regimes"]
    table = table[table["regime"].isin(accuracies)].copy()
    table["accuracy"] = table["regime"].map(accuracies)
    tables["table5_body_regimes"] = table
    return tables


# ---------------------------------------------------------------------------------------------
# Table 3: MAML and ANIL representations
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "verdict"),
    [({}, HOLDS), ({"cross_gap": -0.02}, HOLDS), ({"cross_gap": 0.2}, HOLDS), ({"cross_gap": -0.12}, FAILS)],
)
def test_table3_compares_maml_anil_with_the_references_of_two_seeds(change, verdict):
    finding = _finding(fake_tables((dataclasses.replace(FakeSpec(), **change),)), "cross_model_similarity")
    assert finding.verdict == verdict
    assert [c.numbers["measure"] for c in finding.evidence] == ["mean CCA (all coefficients)", "linear CKA"]
    assert all(
        {"MAML-MAML", "ANIL-ANIL", "MAML-ANIL", "MAML-ANIL − higher reference"} <= set(c.numbers)
        for c in finding.evidence
    )


def test_table3_gap_is_the_body_mean_against_the_higher_reference():
    tables = fake_tables()
    table = tables["table3_cross_model_similarity"]
    body = table[table["layer"] != "head"]
    means = body[body["measure"] == "cca"].groupby("comparison")["value"].mean()
    check = _finding(tables, "cross_model_similarity").evidence[0]
    assert check.numbers["MAML-ANIL"] == f"{means['maml-anil']:.3f}"
    assert (
        check.numbers["MAML-ANIL − higher reference"]
        == f"{means['maml-anil'] - means[['maml-maml', 'anil-anil']].max():+.3f}"
    )


def test_table3_threshold_is_a_rule():
    tables = fake_tables((dataclasses.replace(FakeSpec(), cross_gap=-0.02),))
    assert _finding(tables, "cross_model_similarity", Rules(cross_similarity_gap_max=0.01)).verdict == FAILS


def test_table3_cannot_be_applied_with_one_seed_and_says_why():
    finding = _finding(fake_tables((dataclasses.replace(FakeSpec(), n_seeds=1),)), "cross_model_similarity")
    assert finding.verdict == CANNOT_APPLY
    assert all(c.verdict == CANNOT_APPLY and "MAML-ANIL" in c.numbers for c in finding.evidence)
    assert "no MAML-MAML or ANIL-ANIL pair to compare with" in finding.evidence[0].why
    assert "different seeds" in finding.evidence[0].why


def test_table3_holds_where_it_can_be_applied():
    specs = (dataclasses.replace(FakeSpec(), n_seeds=1), OMNIGLOT)
    finding = _finding(fake_tables(specs), "cross_model_similarity")
    assert [c.verdict for c in finding.evidence] == [CANNOT_APPLY, CANNOT_APPLY, HOLDS, HOLDS]
    assert finding.verdict == HOLDS


def test_table3_without_every_conv_layer_is_not_measured():
    tables = fake_tables()
    table = tables["table3_cross_model_similarity"]
    table.loc[(table["comparison"] == "maml-anil") & (table["layer"] == "conv2"), "value"] = np.nan
    finding = _finding(tables, "cross_model_similarity")
    assert finding.verdict == NOT_MEASURED
    assert finding.evidence[0].why == "no MAML-ANIL value for every conv layer"
    assert _finding({}, "cross_model_similarity").evidence[0].why.endswith("tables/table3_cross_model_similarity.csv")


# ---------------------------------------------------------------------------------------------
# Table 5: how the body was trained
# ---------------------------------------------------------------------------------------------


def test_table5_holds_when_the_paper_orderings_hold():
    finding = _finding(fake_tables(), "body_regimes")
    assert finding.verdict == HOLDS
    assert [c.numbers["ordering"] for c in finding.evidence] == [
        "MAML body above every baseline body",
        "ANIL body above every baseline body",
        "multitask body below every other body",
    ]


def test_table5_says_which_bodies_break_the_orderings():
    # The quick run's Table 5: multitask above random features, the MAML body below multiclass.
    bodies = {"maml": 83.5, "anil": 92.2, "multiclass": 85.3, "multitask": 44.2, "random": 42.5, "nil": 82.0}
    finding = _finding(_with_bodies(bodies), "body_regimes")
    assert finding.verdict == FAILS
    maml, anil, multitask = finding.evidence
    assert (maml.verdict, anil.verdict, multitask.verdict) == (FAILS, HOLDS, FAILS)
    assert maml.numbers["ours"] == "MAML 83.50 ≤ multiclass pretraining 85.30"
    assert anil.numbers["ours"] == "ANIL 92.20 > highest other: multiclass pretraining 85.30"
    assert multitask.numbers["ours"] == "multitask training 44.20 ≥ random features 42.50"


def test_table5_without_baselines_is_not_measured():
    finding = _finding(_with_bodies({"maml": 90.0, "anil": 91.0}), "body_regimes")
    assert finding.verdict == NOT_MEASURED
    assert finding.evidence[0].why == "no MAML body or nothing to compare it with"


def test_table5_checks_each_setting():
    tables = fake_tables((FakeSpec(), OMNIGLOT))
    table = tables["table5_body_regimes"]
    table.loc[(table["dataset"] == "omniglot") & (table["regime"] == "multitask"), "accuracy"] = 99.0
    finding = _finding(tables, "body_regimes")
    assert finding.verdict == FAILS
    assert [(c.where, c.verdict) for c in finding.evidence][3:] == [
        ("omniglot 20-way 1-shot", FAILS),
        ("omniglot 20-way 1-shot", FAILS),
        ("omniglot 20-way 1-shot", FAILS),
    ]


# ---------------------------------------------------------------------------------------------
# Verdicts
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("verdicts", "combined"),
    [
        ([HOLDS, CANNOT_APPLY, NOT_MEASURED], HOLDS),
        ([HOLDS, FAILS, CANNOT_APPLY], FAILS),
        ([CANNOT_APPLY, NOT_MEASURED], CANNOT_APPLY),
        ([NOT_MEASURED], NOT_MEASURED),
        ([], NOT_MEASURED),
    ],
)
def test_checks_combine_into_a_verdict(verdicts, combined):
    assert combine(verdicts) == combined


def test_evidence_reads_as_a_table_and_as_text():
    early = _finding(fake_tables(), "early_training")
    frame = evidence_frame(early)
    assert list(frame["iteration"]) == ["100", "200", "300"] and "why" not in frame.columns
    assert ("mean CCA (all coefficients)", "lowest conv layer") in frame.columns
    assert "mean CCA (all coefficients), lowest conv layer 0.950" in check_text(early.evidence[0])
    assert check_text(Check("every setting", NOT_MEASURED, why="no CSV")) == "every setting: not measured (no CSV)"
    text = findings_text(check_findings(fake_tables()))
    assert text.count("\n  rule: ") == len(FINDINGS) and "-> holds" in text
