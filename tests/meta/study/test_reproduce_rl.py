"""``python -m meta reproduce`` with the meta-RL study: the ``tiny-rl`` preset end to end (the
documented RL CSVs with their columns, the Markdown table and the PNG), reruns that skip the
finished stage or recompute the CSVs from the runs' files alike, the verdict rule, the plans of
the RL presets, and bad RL studies refused by name."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_reproduce import documented_layout

import meta.run.rl_train
from meta.cli import main as meta_main
from meta.study.executor import JobRunner
from meta.study.findings import FAILS, HOLDS, NOT_MEASURED, check_findings
from meta.study.folder import stage_marker
from meta.study.pipeline import plan_summary, reproduce
from meta.study.plan import ReproductionError, make_plan
from meta.study.presets import PAPER, QUICK, RL, TINY, TINY_RL, get_study_preset
from meta.study.report import studied_findings
from meta.study.rl_presets import RLEnvBudget
from meta.study.rl_report import rl_comparison
from meta.study.rl_study import returns_json, rl_runs
from meta.study.rl_verdicts import ABOVE, BELOW, MATCHES, UNMEASURED, rl_verdict
from meta.study.schema import COLUMNS, RL_NAMES, csv_path, read_table
from meta.study.stages import STAGES, stages_of

REPO = Path(__file__).resolve().parents[3]


def documented_columns(name: str) -> list[str]:
    """The columns docs/formats.md's "Reproduction output" table gives the CSV ``name``."""
    return documented_layout()[str(csv_path(Path(), name))]


@pytest.fixture(scope="module")
def tiny_rl(tmp_path_factory) -> Path:
    """The tiny-rl preset (2D navigation, two seeds), run once in this process."""
    out = tmp_path_factory.mktemp("tiny_rl")
    reproduce(TINY_RL, out, jobs=1, progress=False, echo=lambda _: None)
    return out


def csvs(out: Path) -> dict[str, bytes]:
    return {name: csv_path(out, name).read_bytes() for name in RL_NAMES}


def fail(*args, **kwargs):
    raise AssertionError("a finished stage or run was run again")


# --------------------------------------------------------------------------- end to end


def test_tiny_rl_writes_the_documented_files(tiny_rl):
    for name in RL_NAMES:
        frame = pd.read_csv(csv_path(tiny_rl, name))
        assert list(frame.columns) == list(COLUMNS[name]) == documented_columns(name), name
        assert len(frame) > 0
        read_table(csv_path(tiny_rl, name), name)  # numeric columns parse
    assert (tiny_rl / "tables" / "table2_rl.md").read_text().startswith("# Table 2 (RL)")
    assert (tiny_rl / "figures" / "figure_rl_similarity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {p.name for p in (tiny_rl / "stages").iterdir()} == {"rl.done", "report.done"}
    report = (tiny_rl / "report.html").read_text()  # the meta-RL study's sections only
    assert 'id="table2_rl"' in report and 'id="figure_rl_similarity"' in report and 'id="table1_freezing"' not in report
    names = {f"{a}_2d-navigation_seed{s}" for a in ("maml-trpo", "anil-trpo") for s in (0, 1)}
    assert {p.name for p in (tiny_rl / "runs").iterdir()} == names
    assert {p.name for p in (tiny_rl / "snapshots").iterdir()} == names
    record = json.loads((tiny_rl / "preset.json").read_text())
    assert record["preset"] == "tiny-rl" and list(record["stages"]) == ["rl", "report"]
    assert {r["name"] for r in record["rl_runs"]} == names
    # Settings: the meta-RL training per environment and the meta-RL measurements, not the few-shot ones
    config = record["rl_runs"][0]["config"]
    assert f'<td>meta-iterations</td><td class="num">{config["iterations"]}</td>' in report
    assert "test tasks per return (Table 2 RL)" in report and "test tasks per accuracy" not in report
    # the summary has the meta-RL finding and no few-shot one
    assert report.count('<div class="finding ') == 1 and "ANIL matches MAML in meta-RL too" in report


def test_table_rows_equal_the_runs_evaluations(tiny_rl):
    table = pd.read_csv(csv_path(tiny_rl, "table2_rl"))
    steps = TINY_RL.rl.run.get("test_inner_steps", 3)
    assert sorted(set(table["steps"])) == list(range(steps + 1))
    for algorithm in ("maml-trpo", "anil-trpo"):
        runs = [tiny_rl / "runs" / f"{algorithm}_2d-navigation_seed{s}" for s in (0, 1)]
        evaluations = [json.loads(returns_json(r, TINY_RL.rl.eval_tasks).read_text()) for r in runs]
        for k in range(steps + 1):
            row = table[(table["algorithm"] == algorithm) & (table["steps"] == k)].iloc[0]
            per_seed = [e["returns"][k]["return"] for e in evaluations]
            assert row["return"] == pytest.approx(np.mean(per_seed), abs=1e-12)
            assert row["std_seeds"] == pytest.approx(np.std(per_seed, ddof=1), abs=1e-12)
            assert row["n_seeds"] == 2 and row["n_tasks"] == TINY_RL.rl.eval_tasks
            assert row["horizon"] == 10 and row["iterations"] == 4
    similarity = pd.read_csv(csv_path(tiny_rl, "figure_rl_similarity"))
    assert set(similarity["layer"]) == {"fc1", "fc2", "head"} and set(similarity["measure"]) == {"cca", "cka"}
    anil_body = similarity[(similarity["algorithm"] == "anil-trpo") & similarity["layer"].isin(("fc1", "fc2"))]
    assert np.allclose(anil_body["value"], 1.0, atol=1e-6)  # ANIL's hidden layers do not adapt


def test_rerun_skips_the_finished_stage(tiny_rl, tmp_path, monkeypatch):
    out = tmp_path / "copy"
    shutil.copytree(tiny_rl, out)
    before = csvs(out)
    monkeypatch.setattr(JobRunner, "run", fail)
    messages: list[str] = []
    reproduce(TINY_RL, out, jobs=1, progress=False, echo=messages.append)
    assert sum("done before, skipped" in m for m in messages) == 2  # rl and report
    assert csvs(out) == before


def test_unfinished_stage_resumes_from_the_runs_files(tiny_rl, tmp_path, monkeypatch):
    out = tmp_path / "copy"
    shutil.copytree(tiny_rl, out)
    before = csvs(out)
    stage_marker(out, "rl").unlink()
    for name in RL_NAMES:
        csv_path(out, name).unlink()
    monkeypatch.setattr(meta.run.rl_train.RLTrainer, "step", fail)  # finished runs are not trained again
    reproduce(TINY_RL, out, jobs=1, progress=False, echo=lambda _: None)
    assert csvs(out) == before
    assert stage_marker(out, "rl").is_file()


# --------------------------------------------------------------------------- the verdict


@pytest.mark.parametrize(
    ("maml", "maml_half", "anil", "anil_half", "verdict"),
    [
        (-20.3, 3.2, -20.1, 2.3, MATCHES),  # the paper's 2D navigation
        (170.4, 21.0, 363.2, 14.8, ABOVE),  # the paper's HalfCheetah-Direction
        (-139.0, 18.9, -120.9, 6.3, MATCHES),  # HalfCheetah-Velocity: 18.1 <= 18.9
        (-139.0, 18.0, -120.9, 6.3, ABOVE),  # the same gap, a narrower interval: the verdict flips
        (10.0, 1.0, 8.9, 0.5, BELOW),
        (10.0, 1.0, 9.0, 0.5, MATCHES),  # the larger half-width counts, the boundary included
        (10.0, math.nan, 10.0, math.nan, MATCHES),  # no interval: only equality matches
        (10.0, math.nan, 10.5, math.nan, ABOVE),
        (math.nan, 1.0, 3.0, 1.0, UNMEASURED),
    ],
)
def test_verdict_rule(maml, maml_half, anil, anil_half, verdict):
    assert rl_verdict(maml, maml_half, anil, anil_half) == verdict


def _returns_table(*rows: tuple[str, str, float, float]) -> pd.DataFrame:
    """A ``table2_rl`` frame of returns after one step: ``(env, algorithm, return, ci95)`` rows."""
    return pd.DataFrame(
        [
            {"env": env, "algorithm": a, "steps": 1, "return": r, "ci95": h, "std_seeds": math.nan, "n_seeds": 1}
            | {"n_tasks": 40, "horizon": 100, "iterations": 100}
            for env, a, r, h in rows
        ],
        columns=COLUMNS["table2_rl"],
    )


NAV_BELOW_VEL_MATCHES = (
    ("2d-navigation", "maml-trpo", -10.0, 1.0),
    ("2d-navigation", "anil-trpo", -15.0, 1.5),
    ("halfcheetah-vel", "maml-trpo", -100.0, 5.0),
    ("halfcheetah-vel", "anil-trpo", -98.0, 1.0),
)


def test_comparison_sets_ours_beside_the_papers():
    frame = rl_comparison(_returns_table(*NAV_BELOW_VEL_MATCHES), steps=1).set_index("environment")
    assert frame.loc["2D-Navigation", "verdict (ours)"] == BELOW
    assert frame.loc["2D-Navigation", "verdict (paper)"] == MATCHES
    assert frame.loc["HalfCheetah-Velocity", "verdict (ours)"] == MATCHES
    assert frame.loc["HalfCheetah-Velocity", "MAML (paper)"] == "-139.00 ± 18.90"
    assert frame.loc["2D-Navigation", "MAML (ours)"] == "-10.00 ± 1.00"


def _rl_finding(tables):
    return next(f for f in check_findings(tables) if f.table == "table2_rl")


def test_the_finding_holds_where_anil_matches_maml_in_every_environment():
    """The report's finding on Table 2 (RL): one check per environment, from our verdicts."""
    finding = _rl_finding({"table2_rl": _returns_table(*NAV_BELOW_VEL_MATCHES)})
    assert [(c.where, c.verdict) for c in finding.evidence] == [
        ("2D-Navigation", FAILS),
        ("HalfCheetah-Velocity", HOLDS),
    ]
    assert finding.verdict == FAILS and finding.evidence[0].numbers[("ours", "verdict")] == BELOW
    matching = _returns_table(*NAV_BELOW_VEL_MATCHES[2:], ("2d-navigation", "maml-trpo", -10.0, 1.0))
    matching = pd.concat([matching, _returns_table(("2d-navigation", "anil-trpo", -11.4, 1.5))])
    assert _rl_finding({"table2_rl": matching}).verdict == HOLDS
    missing = _rl_finding({})
    assert missing.verdict == NOT_MEASURED and "table2_rl.csv" in missing.evidence[0].why


def test_a_meta_rl_report_has_verdicts_only_on_the_meta_rl_finding():
    tables = {"table2_rl": _returns_table(*NAV_BELOW_VEL_MATCHES)}
    rl_only = studied_findings(tables, {"settings": {"rl": {"envs": []}, "settings": []}})
    assert [f.table for f in rl_only] == ["table2_rl"]
    assert "table2_rl" not in [f.table for f in studied_findings(tables, {"settings": {"settings": [{}]}})]


# --------------------------------------------------------------------------- plans


def test_rl_presets_plans(tmp_path):
    rl = make_plan(RL, tmp_path / "rl")
    assert [s.name for s in stages_of(rl)] == ["rl", "report"]
    budgets = {b.env: b for b in RL.rl.envs}
    assert budgets["2d-navigation"].iterations == 100
    assert budgets["halfcheetah-dir"].iterations < 500 and budgets["halfcheetah-vel"].iterations < 500
    assert plan_summary(rl)["stages"]["rl"] == plan_summary(rl)["rl_runs"]
    paper_rl = make_plan(get_study_preset("paper-rl"), tmp_path / "paper-rl")
    runs = rl_runs(paper_rl)
    assert {r.config.iterations for r in runs} == {500} and len(runs) == 3 * 2 * 3
    for preset in (QUICK, PAPER, TINY):  # the classification presets keep their stages
        assert [s.name for s in stages_of(make_plan(preset, tmp_path / preset.name))] == list(STAGES)
    both = make_plan(TINY.replace(rl=TINY_RL.rl), tmp_path / "both")
    assert [s.name for s in stages_of(both)] == [*STAGES[:-1], "rl", "report"]
    assert not any(p.exists() for p in tmp_path.iterdir())


def test_dry_run_prints_the_rl_plan(tmp_path, capsys):
    out = tmp_path / "rl"
    assert meta_main(["reproduce", "--preset", "rl", "--out", str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "1. rl" in text and "maml-trpo_halfcheetah-dir_seed0" in text and "CPU-hours" in text
    assert "2d-navigation: 100 meta-iterations" in text
    assert not out.exists()


# --------------------------------------------------------------------------- errors


def test_unknown_env_is_refused_by_name(tmp_path):
    bad = TINY_RL.replace(rl=dataclasses.replace(TINY_RL.rl, envs=(RLEnvBudget("mountain-car", 2),)))
    with pytest.raises(ReproductionError, match="preset 'tiny-rl'.*unknown env 'mountain-car'.*2d-navigation"):
        reproduce(bad, tmp_path / "out", jobs=1, progress=False, echo=lambda _: None)
    assert not (tmp_path / "out").exists()


def test_bad_rl_studies_are_refused(tmp_path):
    study = TINY_RL.rl
    twice = dataclasses.replace(study, envs=(*study.envs, *study.envs))
    with pytest.raises(ReproductionError, match="appears twice"):
        reproduce(TINY_RL.replace(rl=twice), tmp_path / "a", dry_run=True, echo=lambda _: None)
    no_seeds = dataclasses.replace(study, envs=(RLEnvBudget("2d-navigation", 2, seeds=()),))
    with pytest.raises(ReproductionError, match="no seeds"):
        reproduce(TINY_RL.replace(rl=no_seeds), tmp_path / "b", dry_run=True, echo=lambda _: None)
    bad_value = dataclasses.replace(study, run={**study.run, "trajectories": 0})
    with pytest.raises(ReproductionError, match="trajectories"):
        reproduce(TINY_RL.replace(rl=bad_value), tmp_path / "c", dry_run=True, echo=lambda _: None)
