"""``python -m meta reproduce``: the tiny preset end to end (every file of the documented layout,
CSVs consistent with the eval JSONs and the snapshots), reruns that skip finished stages and jobs,
the plans of the real presets, and the errors."""

from __future__ import annotations

import itertools
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from run_outputs import assert_same_csv

import meta.run.train
from meta.cli import main as meta_main
from meta.core.names import BODY_BASELINES
from meta.run.paper_defaults import PAPER_DEFAULTS
from meta.study.aggregate import model_pairs
from meta.study.executor import Job, JobRunner
from meta.study.folder import check_folder, parse_data_roots, preset_record, stage_marker
from meta.study.jobs import load_split_once
from meta.study.pipeline import plan_summary, reproduce
from meta.study.plan import ReproductionError, early_iterations, make_plan
from meta.study.presets import TINY, get_study_preset
from meta.study.schema import COLUMNS, RL_NAMES, csv_path
from meta.study.stages import STAGES
from repsim.snapshot_report import report_snapshot

REPO = Path(__file__).resolve().parents[3]
LAYERS = ("conv1", "conv2", "conv3", "conv4", "head")
FROZEN = ("none", "conv1", "conv1-2", "conv1-3", "conv1-4")


def documented_layout() -> dict[str, list[str]]:
    """``{relative CSV path: columns}`` from docs/formats.md's "Reproduction output" table."""
    text = (REPO / "docs" / "formats.md").read_text()
    section = text[text.index("## Reproduction output") :]
    layout = {}
    for line in section.splitlines():
        match = re.match(r"\| `((?:table|figure)\w+)\.csv` \| (.+) \|$", line)
        if match:
            cells = re.sub(r"\([^)]*\)", "", match.group(2))
            folder = "tables" if match.group(1).startswith("table") else "figures"
            layout[f"{folder}/{match.group(1)}.csv"] = re.findall(r"`([a-z_0-9]+)`", cells)
    return layout


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """The tiny preset (synthetic data, two MAML/ANIL seeds), run once in this process."""
    out = tmp_path_factory.mktemp("tiny")
    reproduce(TINY, out, jobs=1, progress=False, echo=lambda _: None)
    return out


def read(out: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(csv_path(out, name))


def eval_json(out: Path, run: str, procedure: str, weights: str = "final", tasks: int = TINY.eval_tasks) -> dict:
    return json.loads((out / "runs" / run / "eval" / f"test_{weights}_{tasks}tasks_{procedure}.json").read_text())


# --------------------------------------------------------------------------- layout


def test_every_documented_file_is_written_with_its_columns(tiny):
    layout = documented_layout()
    assert set(layout) == {str(csv_path(Path(), name)) for name in COLUMNS}, (
        "docs/formats.md and meta.study.schema disagree"
    )
    rl_only = {str(csv_path(Path(), name)) for name in RL_NAMES}  # tests/meta/study/test_reproduce_rl.py
    assert not any((tiny / path).exists() for path in rl_only)
    for path, columns in layout.items():
        if path in rl_only:
            continue
        frame = pd.read_csv(tiny / path)
        assert list(frame.columns) == columns, path
        assert len(frame) > 0, path
        assert (tiny / path).with_suffix(".md" if path.startswith("tables") else ".png").is_file(), path
    assert (tiny / "report.html").read_text().startswith("<!DOCTYPE html>")
    assert {p.name for p in (tiny / "stages").iterdir()} == {f"{s}.done" for s in STAGES}
    record = json.loads((tiny / "preset.json").read_text())
    assert record["preset"] == "tiny" and record["settings"]["eval_tasks"] == TINY.eval_tasks
    names = {r["name"] for r in record["runs"]}
    assert names == {p.name for p in (tiny / "runs").iterdir()}
    for run in names:
        assert (tiny / "runs" / run / "final.safetensors").is_file()
    snapshots = {p.name for p in (tiny / "snapshots").iterdir()}
    assert snapshots == {
        "maml_synthetic_3w1s_seed0",
        "maml_synthetic_3w1s_seed1",
        "anil_synthetic_3w1s_seed0",
        "anil_synthetic_3w1s_seed1",
        *(f"maml_synthetic_3w1s_seed{s}_iter{i:06d}" for s in (0, 1) for i in (5, 10)),
        *(f"{a}-{v}_synthetic_3w1s_seed0" for a in ("maml", "anil") for v in TINY.architectures),
    }
    for name in snapshots:
        manifest = json.loads((tiny / "snapshots" / name / "manifest.json").read_text())
        assert len(manifest["tasks"]) == TINY.snapshot_tasks


def test_rows_cover_every_setting_label(tiny):
    assert read(tiny, "table1_freezing")["frozen"].tolist() == list(FROZEN)
    assert read(tiny, "table4_nil")["method"].tolist() == ["maml", "anil", "nil"]
    assert read(tiny, "table5_body_regimes")["regime"].tolist() == ["maml", "anil", *BODY_BASELINES]
    fig2 = read(tiny, "figure2_adaptation_similarity")
    assert set(itertools.product(fig2["algorithm"], fig2["layer"], fig2["measure"])) == set(
        itertools.product(("maml", "anil"), LAYERS, ("cca", "cka"))
    )
    fig3 = read(tiny, "figure3_early_training")
    assert sorted(set(fig3["iteration"])) == [5, 10, 20]
    assert set(fig3.loc[fig3["kind"] == "freezing", "layer"]) == set(FROZEN)
    table3 = read(tiny, "table3_cross_model_similarity")
    pairs = table3.groupby("comparison")["n_pairs"].first().to_dict()
    # two seeds: one pair of MAML seeds, one of ANIL seeds, MAML-ANIL across different seeds only
    assert pairs == {"maml-maml": 1, "anil-anil": 1, "maml-anil": 2}


# --------------------------------------------------------------------------- values


def test_accuracy_tables_equal_the_eval_jsons(tiny):
    maml = [eval_json(tiny, f"maml_synthetic_3w1s_seed{s}", "ablation-freezing") for s in (0, 1)]
    anil = [
        eval_json(tiny, f"anil_synthetic_3w1s_seed{s}", "inner-2steps-frozen-conv1+conv2+conv3+conv4") for s in (0, 1)
    ]
    anil_nil = [eval_json(tiny, f"anil_synthetic_3w1s_seed{s}", "nil") for s in (0, 1)]
    table1 = read(tiny, "table1_freezing").set_index("frozen")
    for i, label in enumerate(FROZEN):
        per_seed = [m["rows"][i]["accuracy"] for m in maml]
        assert maml[0]["rows"][i]["frozen"] == label
        assert table1.loc[label, "accuracy"] == pytest.approx(np.mean(per_seed), abs=1e-12)
        assert table1.loc[label, "std_seeds"] == pytest.approx(np.std(per_seed, ddof=1), abs=1e-12)
        assert table1.loc[label, "ci95"] == pytest.approx(np.mean([m["rows"][i]["ci95"] for m in maml]), abs=1e-12)
    table2 = read(tiny, "table2_anil_vs_maml").set_index("algorithm")
    assert table2.loc["maml", "accuracy"] == pytest.approx(table1.loc["none", "accuracy"], abs=1e-12)
    assert table2.loc["anil", "accuracy"] == pytest.approx(np.mean([a["accuracy"] for a in anil]), abs=1e-12)
    assert (table2["n_seeds"] == 2).all() and (table2["n_tasks"] == TINY.eval_tasks).all()
    table4 = read(tiny, "table4_nil").set_index("method")
    assert table4.loc["nil", "accuracy"] == pytest.approx(np.mean([a["accuracy"] for a in anil_nil]), abs=1e-12)
    table5 = read(tiny, "table5_body_regimes").set_index("regime")
    assert table5.loc["anil", "accuracy"] == table4.loc["nil", "accuracy"]
    random = eval_json(tiny, "random_synthetic_3w1s_seed0", "nil")
    assert table5.loc["random", "accuracy"] == pytest.approx(random["accuracy"], abs=1e-12)
    assert np.isnan(table5.loc["random", "std_seeds"]) and table5.loc["random", "n_seeds"] == 1


def test_freezing_points_of_figure3_equal_the_checkpoint_evaluations(tiny):
    fig3 = read(tiny, "figure3_early_training")
    freezing = fig3[fig3["kind"] == "freezing"].set_index(["iteration", "layer"])
    for iteration, weights in ((5, "5"), (10, "10"), (20, "final")):
        runs = [
            eval_json(tiny, f"maml_synthetic_3w1s_seed{s}", "ablation-freezing", weights, TINY.early_eval_tasks)
            for s in (0, 1)
        ]
        for i, label in enumerate(FROZEN):
            expected = np.mean([r["rows"][i]["accuracy"] for r in runs])
            assert freezing.loc[(iteration, label), "value"] == pytest.approx(expected, abs=1e-12)
            assert freezing.loc[(iteration, label), "n_tasks"] == TINY.early_eval_tasks


def test_figure2_is_the_snapshot_similarity_after_the_last_step(tiny):
    fig2 = read(tiny, "figure2_adaptation_similarity").set_index(["algorithm", "layer", "measure"])
    for algorithm in ("maml", "anil"):
        per_seed = []
        for seed in (0, 1):
            _, summary = report_snapshot(tiny / "snapshots" / f"{algorithm}_synthetic_3w1s_seed{seed}", progress=False)
            per_seed.append(summary[summary["step"] == summary["step"].max()].set_index(["layer", "measure"]))
        for layer, measure in itertools.product(LAYERS, ("cca", "cka")):
            means = [s.loc[(layer, measure), "mean"] for s in per_seed]
            row = fig2.loc[(algorithm, layer, measure)]
            assert row["value"] == pytest.approx(np.mean(means), abs=1e-9)
            assert row["std_seeds"] == pytest.approx(np.std(means, ddof=1), abs=1e-9)
            assert row["n_tasks"] == TINY.snapshot_tasks and row["n_seeds"] == 2


def test_anil_body_is_unchanged_by_adaptation(tiny):
    """ANIL adapts only the head: every conv layer's representation after adaptation is the one
    before it, so CCA and CKA are exactly 1 (up to rounding), and the head's is below 1."""
    fig2 = read(tiny, "figure2_adaptation_similarity")
    anil = fig2[fig2["algorithm"] == "anil"].set_index(["layer", "measure"])["value"]
    for layer, measure in itertools.product(LAYERS[:-1], ("cca", "cka")):
        assert anil[(layer, measure)] == pytest.approx(1.0, abs=1e-6)
    assert anil[("head", "cca")] < 1 - 1e-6


def test_table3_is_the_mean_over_tasks_of_compare_models(tiny):
    from meta.run.evaluate import LoadedRun, evaluation_tasks
    from repsim.compare import compare_models

    runs = [LoadedRun.open(tiny / "runs" / f"maml_synthetic_3w1s_seed{s}") for s in (0, 1)]
    models = [r.model("final") for r in runs]
    tasks = evaluation_tasks(
        runs[0].config, load_split_once(runs[0].config, "test"), TINY.similarity_tasks, TINY.analysis_queries
    )
    values = [
        compare_models(*models, tasks[t].query_x, layers_a=list(LAYERS), measures=["cka"], progress=False).set_index(
            "layer_a"
        )["value"]
        for t in range(len(tasks))
    ]
    table3 = read(tiny, "table3_cross_model_similarity").set_index(["comparison", "layer", "measure"])
    for layer in LAYERS:
        assert table3.loc[("maml-maml", layer, "cka"), "value"] == pytest.approx(
            np.mean([v[layer] for v in values]), abs=1e-9
        )


# --------------------------------------------------------------------------- reruns


def fail(*args, **kwargs):
    raise AssertionError("a finished stage was run again")


def test_rerun_skips_every_stage(tiny, tmp_path, monkeypatch):
    out = tmp_path / "copy"
    shutil.copytree(tiny, out)
    before = {p: p.read_bytes() for p in (out / "tables").glob("*.csv")}
    monkeypatch.setattr(meta.run.train, "train", fail)
    monkeypatch.setattr(JobRunner, "run", fail)
    messages: list[str] = []
    reproduce(TINY, out, jobs=1, progress=False, echo=messages.append)
    assert sum("done before, skipped" in m for m in messages) == len(STAGES)
    assert {p: p.read_bytes() for p in (out / "tables").glob("*.csv")} == before


def test_unfinished_stage_reruns_only_missing_jobs(tiny, tmp_path, monkeypatch):
    out = tmp_path / "copy"
    shutil.copytree(tiny, out)
    before = read(out, "table1_freezing")
    for stage in ("evaluate", "snapshots", "adaptation_similarity", "cross_model_similarity", "report"):
        stage_marker(out, stage).unlink()
    evals = out / "runs" / "maml_synthetic_3w1s_seed1" / "eval"
    ablation = evals / f"test_final_{TINY.eval_tasks}tasks_ablation-freezing.json"
    ablation.unlink()
    csv_path(out, "table1_freezing").unlink()
    kept = out / "runs" / "anil_synthetic_3w1s_seed0" / "eval" / f"test_final_{TINY.eval_tasks}tasks_nil.json"
    kept_mtime = kept.stat().st_mtime_ns
    monkeypatch.setattr(meta.run.train, "train", fail)
    reproduce(TINY, out, jobs=1, progress=False, echo=lambda _: None)
    assert ablation.is_file() and kept.stat().st_mtime_ns == kept_mtime
    pd.testing.assert_frame_equal(read(out, "table1_freezing"), before)
    assert all(stage_marker(out, s).is_file() for s in STAGES)


# --------------------------------------------------------------------------- plans


def expected_runs(preset) -> set[str]:
    names = set()
    for s in preset.settings:
        names |= {f"{a}_{s.label}_seed{seed}" for a in ("maml", "anil") for seed in preset.seeds}
        if s.baselines:
            names |= {f"{a}_{s.label}_seed{seed}" for a in BODY_BASELINES for seed in preset.baseline_seeds}
    first = preset.settings[0]
    names |= {f"{a}-{v}_{first.label}_seed{preset.seeds[0]}" for a in ("maml", "anil") for v in preset.architectures}
    return names


@pytest.mark.parametrize("name", ["quick", "omniglot", "paper"])
def test_plans_of_the_presets(name, tmp_path):
    preset = get_study_preset(name)
    plan = make_plan(preset, tmp_path / name, data_roots={"omniglot": "/data/o", "miniimagenet": "/data/m"})
    summary = plan_summary(plan)
    assert list(summary["stages"]) == list(STAGES)
    assert set(summary["runs"]) == expected_runs(preset)
    assert summary["stages"]["train"] == summary["runs"]
    maml = [r for r in plan.runs if r.algorithm == "maml" and r.architecture == "reference"]
    meta_runs = [r for r in plan.runs if r.algorithm in ("maml", "anil")]  # the study's variants too
    assert len(summary["stages"]["snapshots"]) == len(meta_runs) + sum(len(r.config.save_at) for r in maml)
    assert all(not r.config.save_at for r in plan.runs if r.architecture != "reference")
    for run in maml:
        assert run.config.save_at == early_iterations(run.config.iterations, preset.early_fractions)
        assert len(run.config.save_at) == len(preset.early_fractions)
    for run in plan.runs:
        assert run.config.data_root == {"omniglot": "/data/o", "miniimagenet": "/data/m"}.get(run.setting.dataset)
    n_pairs = sum(len(model_pairs(plan, s)) for s in preset.settings)
    n_regimes = 2 + len(BODY_BASELINES)
    n_regime_pairs = sum(n_regimes * (n_regimes - 1) // 2 for s in preset.settings if s.baselines)
    assert len(summary["stages"]["cross_model_similarity"]) == n_pairs + n_regime_pairs
    assert summary["stages"]["speed"] == ["speed"]
    assert not (tmp_path / name).exists()


def test_paper_preset_has_the_papers_settings(tmp_path):
    plan = make_plan(get_study_preset("paper"), tmp_path)
    preset = plan.preset
    assert preset.eval_tasks == 600 and len(preset.seeds) == 3
    assert {(s.dataset, s.ways, s.shots) for s in preset.settings} == set(PAPER_DEFAULTS)
    for run in plan.runs:
        if run.algorithm == "maml":
            paper = PAPER_DEFAULTS[(run.setting.dataset, run.setting.ways, run.setting.shots)]
            assert run.config.iterations == paper.iterations
            assert run.config.meta_batch_size == paper.meta_batch_size
            assert (run.config.inner_steps, run.config.inner_lr) == (paper.train_inner.steps, paper.train_inner.lr)
    assert {r.setting.dataset for r in plan.runs if r.algorithm in BODY_BASELINES} == {"miniimagenet"}


def test_quick_preset_is_glyphs_and_states_its_shortcuts():
    quick = get_study_preset("quick")
    assert {s.dataset for s in quick.settings} == {"glyphs"}
    if quick.eval_tasks < 600 or quick.early_eval_tasks < 600:
        assert any("test tasks" in note for note in quick.notes)


def test_early_iterations():
    assert early_iterations(1000, (0.05, 0.1, 0.25, 0.5)) == (50, 100, 250, 500)
    assert early_iterations(10, (0.01, 0.04, 0.5, 1.0)) == (1, 5)


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "paper"
    assert (
        meta_main(
            [
                "reproduce",
                "--preset",
                "paper",
                "--out",
                str(out),
                "--dry-run",
                "--data-root",
                "omniglot=/nowhere",
                "--jobs",
                "3",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    for number, stage in enumerate(STAGES, start=1):
        assert f"{number}. {stage}" in text
    assert "maml_miniimagenet_5w5s_seed2" in text and "NOT FOUND" in text and "3 parallel jobs" in text
    assert not out.exists()


# --------------------------------------------------------------------------- errors


def test_unknown_preset(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown preset 'huge'.*quick"):
        get_study_preset("huge")
    assert meta_main(["reproduce", "--preset", "huge", "--out", str(tmp_path)]) == 2
    assert "unknown preset 'huge'" in capsys.readouterr().err


def test_folder_of_another_preset_is_refused_unless_forced(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    quick = preset_record(make_plan(get_study_preset("quick"), out))
    (out / "preset.json").write_text(json.dumps(quick))
    (out / "runs" / "old").mkdir(parents=True)
    (out / "mine.txt").write_text("not the pipeline's")
    with pytest.raises(ReproductionError, match="preset 'quick', not 'tiny'.*--force"):
        check_folder(out, preset_record(make_plan(TINY, out)), force=False)
    changed = preset_record(make_plan(get_study_preset("quick").replace(eval_tasks=50), out))
    with pytest.raises(ReproductionError, match="other settings.*eval_tasks"):
        check_folder(out, changed, force=False)
    check_folder(out, quick, force=False)  # the same preset: accepted as it is
    assert (out / "runs" / "old").is_dir()
    check_folder(out, preset_record(make_plan(TINY, out)), force=True)
    assert not (out / "runs").exists() and not (out / "preset.json").exists()
    assert (out / "mine.txt").read_text() == "not the pipeline's"


def test_missing_omniglot_names_data_root(tmp_path, monkeypatch):
    monkeypatch.delenv("OMNIGLOT_DIR", raising=False)
    with pytest.raises(ReproductionError, match="--data-root"):
        reproduce("omniglot", tmp_path / "o", jobs=1, progress=False)
    with pytest.raises(ReproductionError, match="does not exist.*--data-root"):
        reproduce("omniglot", tmp_path / "o", jobs=1, data_roots={"omniglot": str(tmp_path / "none")}, progress=False)
    assert not (tmp_path / "o").exists()


def test_data_root_arguments():
    assert parse_data_roots(["/d"], get_study_preset("omniglot")) == {"omniglot": "/d"}
    assert parse_data_roots(["omniglot=/o", "miniimagenet=/m"], get_study_preset("paper")) == {
        "omniglot": "/o",
        "miniimagenet": "/m",
    }
    with pytest.raises(ValueError, match="DATASET=DIR"):
        parse_data_roots(["/d"], get_study_preset("paper"))


def test_bad_jobs():
    with pytest.raises(ValueError, match="jobs must be an integer >= 1"):
        JobRunner(0)


def test_failing_job_is_named():
    with pytest.raises(ReproductionError, match="stage test, job bad: unknown preset"):
        JobRunner(1, progress=False).run("test", [Job("bad", get_study_preset, {"name": "huge"})])


@pytest.mark.slow
def test_worker_processes_give_the_same_results(tiny, tmp_path):
    """Two worker processes (one torch thread each) write the same tables as one process."""
    out = tmp_path / "parallel"
    reproduce(TINY, out, jobs=2, progress=False, echo=lambda _: None)
    for path in documented_layout():
        if Path(path).stem not in RL_NAMES:  # written by RL presets only
            assert_same_csv(out / path, tiny / path)
