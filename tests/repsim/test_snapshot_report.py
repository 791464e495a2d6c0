"""Reports on adaptation snapshots: values, confidence intervals, tables, figures, no `meta`."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import safetensors.torch
import torch

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
import toy_models  # noqa: E402

from repsim.compare import UndefinedSimilarityWarning  # noqa: E402
from repsim.snapshot_report import (  # noqa: E402
    PER_TASK_COLUMNS,
    SUMMARY_COLUMNS,
    read_manifest,
    report_snapshot,
    summarize,
)
from repsim.tables import before_after_table, summary_markdown  # noqa: E402
from repsim.weights import load_state_dict  # noqa: E402

#: Student t quantile t_{0.975, 2} (two-sided 95%, 2 degrees of freedom), from tables.
T_975_2 = 4.302652729912


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("snapshot")
    toy_models.write_toy_snapshot(root, tasks=2, steps=2)
    return root


@pytest.fixture(scope="module")
def report(snapshot):
    return report_snapshot(snapshot, measures=("cca", "cka"), trusted=[toy_models.SNAPSHOT_FACTORY], progress=False)


def test_tables_have_the_documented_shape(report):
    per_task, summary = report
    assert list(per_task.columns) == list(PER_TASK_COLUMNS)
    assert list(summary.columns) == list(SUMMARY_COLUMNS)
    # 2 tasks x 3 steps (0, 1, 2) x 3 layers x 2 measures
    assert len(per_task) == 2 * 3 * 3 * 2
    assert len(summary) == 3 * 3 * 2
    assert set(per_task["inputs"]) == {"query"}
    assert list(summary["layer"].unique()) == ["conv1", "conv2", "head"]
    assert (summary["n_tasks"] == 2).all() and (summary["n_undefined"] == 0).all()


def test_step_zero_is_one_and_adaptation_changes_the_layers(report):
    per_task, _ = report
    step0 = per_task[per_task["step"] == 0]
    np.testing.assert_allclose(step0["value"], 1.0, rtol=0, atol=1e-8)
    last = per_task[per_task["step"] == 2]
    assert (last["value"] < 1 - 1e-6).all()


def _direct_activations(model, x):
    """conv1, conv2 and head outputs of the toy ConvNet by a manual forward (batch statistics)."""
    with torch.no_grad():
        c1 = model.conv1(x)
        c2 = model.conv2(c1)
        return {"conv1": c1, "conv2": c2, "head": model.head(c2.flatten(1))}


def test_values_match_a_direct_computation(snapshot, report):
    from repsim.measures import get_measure

    per_task, _ = report
    manifest = read_manifest(snapshot)
    model = toy_models.convnet(**manifest["model"]["kwargs"])
    for task in manifest["tasks"]:
        x = safetensors.torch.load_file(str(snapshot / task["inputs"]))["query_x"]
        model.load_state_dict(load_state_dict(snapshot / "meta.safetensors"))
        before = _direct_activations(model, x)
        for step, path in enumerate(task["steps"], start=1):
            model.load_state_dict(load_state_dict(snapshot / path))
            after = _direct_activations(model, x)
            for layer in before:
                for measure in ("cca", "cka"):
                    expected = float(get_measure(measure)(before[layer], after[layer], conv="channels"))
                    row = per_task[
                        (per_task["task"] == task["id"])
                        & (per_task["step"] == step)
                        & (per_task["layer"] == layer)
                        & (per_task["measure"] == measure)
                    ]
                    assert len(row) == 1
                    assert row["value"].iloc[0] == pytest.approx(expected, abs=1e-10)


def test_summary_t_interval_on_a_constructed_case():
    per_task = pd.DataFrame(
        {
            "task": [0, 1, 2, 3, 0],
            "inputs": ["query"] * 5,
            "step": [1, 1, 1, 1, 2],
            "layer": ["conv1"] * 5,
            "measure": ["cka"] * 5,
            "value": [0.2, 0.4, 0.9, math.nan, 0.5],
        }
    )
    summary = summarize(per_task, confidence=0.95)
    first, single = summary.iloc[0], summary.iloc[1]
    values = np.array([0.2, 0.4, 0.9])
    std = math.sqrt(((values - 0.5) ** 2).sum() / 2)
    assert first["mean"] == pytest.approx(0.5, abs=1e-15)
    assert first["std"] == pytest.approx(std, abs=1e-15)
    assert (first["n_tasks"], first["n_undefined"]) == (3, 1)
    assert first["ci_half_width"] == pytest.approx(T_975_2 * std / math.sqrt(3), rel=1e-10)
    assert first["ci_low"] == pytest.approx(0.5 - first["ci_half_width"], abs=1e-15)
    assert first["ci_high"] == pytest.approx(0.5 + first["ci_half_width"], abs=1e-15)
    assert single["mean"] == 0.5 and single["n_tasks"] == 1 and math.isnan(single["ci_half_width"])
    table = before_after_table(summary)
    assert table.loc[0, "cka"] == "0.5000 ± NaN (n=1)" and table.loc[0, "step"] == 2
    assert "t-interval" in summary_markdown(summary)


def test_support_inputs_with_too_few_datapoints_give_nan_with_reason(snapshot):
    with pytest.warns(UndefinedSimilarityWarning):
        per_task, summary = report_snapshot(
            snapshot, measures=("cca", "cka"), inputs="both", trusted=[toy_models.SNAPSHOT_FACTORY], progress=False
        )
    assert set(per_task["inputs"]) == {"query", "support"}

    def support_head_cca(df):
        return df[(df["inputs"] == "support") & (df["layer"] == "head") & (df["measure"] == "cca")]

    head_cca = support_head_cca(per_task)
    # 3 support images, 3 head neurons: CCA is undefined, reported as NaN with the reason
    assert head_cca["value"].isna().all() and (head_cca["reason"].str.len() > 0).all()
    row = support_head_cca(summary)
    assert (row["n_undefined"] == 2).all() and row["mean"].isna().all()
    assert per_task.loc[per_task["inputs"] == "query", "value"].notna().all()


def test_snapshot_figures_are_written(report, tmp_path):
    from repsim.plots import snapshot_figures

    _, summary = report
    paths = snapshot_figures(summary, tmp_path)
    assert sorted(p.name for p in paths) == ["before_after_query.png", "by_step_query.png"]
    for path in paths:
        assert path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size > 5000


def test_bad_snapshots_are_value_errors(snapshot, tmp_path):
    with pytest.raises(ValueError, match="no manifest.json"):
        report_snapshot(tmp_path, measures="cka", progress=False)
    broken = tmp_path / "broken"
    broken.mkdir()
    manifest = json.loads((snapshot / "manifest.json").read_text())
    manifest["meta_weights"] = "../outside.safetensors"
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="outside the snapshot folder"):
        read_manifest(broken)
    manifest["meta_weights"] = "meta.safetensors"
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="missing from the snapshot"):
        read_manifest(broken)
    manifest["format"] = "something-else"
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="format 'something-else'"):
        read_manifest(broken)


def test_importing_repsim_and_reporting_never_imports_meta(snapshot):
    code = (
        "import sys, importlib.util\n"
        "import repsim, repsim.cli, repsim.plots\n"
        "from repsim.snapshot_report import report_snapshot\n"
        f"report_snapshot({str(snapshot)!r}, measures='cca,cka', trusted=['toy_models:convnet'], progress=False)\n"
        "assert importlib.util.find_spec('meta') is not None, 'meta should be importable here'\n"
        "leaked = sorted(m for m in sys.modules if m == 'meta' or m.startswith('meta.'))\n"
        "assert not leaked, leaked\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(REPO)])}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
