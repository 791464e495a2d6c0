"""``python -m meta``: train -> evaluate -> snapshot end to end, config precedence, paper
defaults, resuming from the command line and clear refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from meta.cli import build_parser, main
from meta.run.config import RunConfig, config_from_args, resolve

REPO = Path(__file__).resolve().parents[2]

TINY = [
    "--dataset",
    "synthetic",
    "--ways",
    "3",
    "--shots",
    "1",
    "--queries",
    "5",
    "--filters",
    "4",
    "--meta-batch-size",
    "2",
    "--inner-steps",
    "1",
    "--test-inner-steps",
    "2",
    "--val-every",
    "2",
    "--val-tasks",
    "3",
    "--checkpoint-every",
    "2",
    "--log-every",
    "1",
    "--no-progress",
]


def run_meta(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "meta", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=300,
    )


@pytest.mark.slow
def test_train_evaluate_snapshot_end_to_end(tmp_path):
    run, snap = tmp_path / "run", tmp_path / "snap"
    done = run_meta(
        "train", "--algorithm", "maml", "--iterations", "4", "--seed", "0", "--out", str(run), "--save-at", "2", *TINY
    )
    assert done.returncode == 0, done.stderr
    assert "iteration 4" in done.stdout
    assert (run / "checkpoints" / "iter_000002.safetensors").is_file() and (run / "final.safetensors").is_file()
    done = run_meta("evaluate", str(run), "--tasks", "10", "--no-progress")
    assert done.returncode == 0, done.stderr
    result = json.loads((run / "eval" / "test_final_10tasks_inner-2steps.json").read_text())
    assert {"accuracy", "ci95", "std", "tasks", "per_task", "procedure", "task_set"} <= set(result)
    assert f"{result['accuracy']:.2f} +- {result['ci95']:.2f}%" in done.stdout
    done = run_meta("snapshot", str(run), "--tasks", "2", "--steps", "3", "--out", str(snap), "--no-progress")
    assert done.returncode == 0, done.stderr
    manifest = json.loads((snap / "manifest.json").read_text())
    assert len(manifest["tasks"]) == 2 and len(manifest["tasks"][0]["steps"]) == 3


def parse_train(argv: list[str], base: RunConfig | None = None) -> RunConfig:
    args = build_parser().parse_args(["train", "--out", "unused", *argv])
    return config_from_args(args, base)


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_command_line_overrides_file_overrides_defaults(tmp_path, suffix):
    path = tmp_path / f"settings{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps({"inner_lr": 0.2, "inner-steps": 3, "freeze_inner": ["conv1", "conv2"], "ways": 20}))
    else:
        path.write_text('inner_lr = 0.2\ninner-steps = 3\nfreeze_inner = "conv1,conv2"\nways = 20\n')
    config = parse_train(["--config", str(path), "--inner-lr", "0.05", "--save-at", "1000,5000"])
    assert config.inner_lr == 0.05  # command line over file
    assert (
        config.inner_steps == 3 and config.freeze_inner == ("conv1", "conv2") and config.ways == 20
    )  # file over defaults
    assert config.save_at == (1000, 5000) and config.meta_batch_size is None  # default, filled by the preset
    resolved, _ = resolve(config.replace(dataset="omniglot"))
    assert resolved.meta_batch_size == 16 and resolved.inner_lr == 0.05


def test_paper_defaults():
    omniglot, _ = resolve(RunConfig(dataset="omniglot", ways=20, shots=1))
    assert (omniglot.inner_lr, omniglot.inner_steps, omniglot.meta_batch_size, omniglot.queries) == (0.1, 5, 16, 1)
    for shots, meta_batch in ((1, 4), (5, 2)):
        mini, _ = resolve(RunConfig(dataset="miniimagenet", ways=5, shots=shots))
        assert (mini.inner_lr, mini.inner_steps, mini.test_inner_steps) == (0.01, 5, 10)
        assert mini.meta_batch_size == meta_batch and mini.variant == "miniimagenet" and mini.meta_lr == 1e-3


def test_execution_path_defaults_by_variant_and_yields_to_the_command_line():
    """hybrid for Omniglot-shaped conv4, loop for miniImageNet's (measured, benchmarks/README.md);
    an explicit --path wins, and the resolved path is what config.json records."""
    assert resolve(RunConfig(dataset="glyphs"))[0].path == "hybrid"
    assert resolve(RunConfig(dataset="miniimagenet"))[0].path == "loop"
    assert resolve(RunConfig(dataset="glyphs", variant="miniimagenet"))[0].path == "loop"
    assert resolve(parse_train(["--dataset", "miniimagenet", "--path", "hybrid"]))[0].path == "hybrid"
    assert resolve(parse_train(["--dataset", "glyphs", "--path", "compiled"]))[0].path == "compiled"


def test_bad_settings_are_refused(tmp_path, capsys):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"inner_lrr": 0.2}))
    with pytest.raises(ValueError, match="unknown configuration key 'inner_lrr'"):
        parse_train(["--config", str(path)])
    with pytest.raises(ValueError, match="freeze_inner: unknown layers"):
        parse_train(["--freeze-inner", "conv7"])
    assert (
        main(
            [
                "train",
                "--out",
                str(tmp_path / "r"),
                "--iterations",
                "2",
                "--algorithm",
                "anil",
                "--freeze-inner",
                "conv1",
                *TINY,
            ]
        )
        == 2
    )
    assert "anil already adapts only the head" in capsys.readouterr().err


def test_rerun_from_the_command_line_resumes_or_refuses(tmp_path, capsys):
    run = str(tmp_path / "run")
    assert main(["train", "--iterations", "2", "--out", run, *TINY]) == 0
    assert main(["train", "--out", run, "--iterations", "3"]) == 0  # the stored config is the base
    assert "iteration 3 (started at 2)" in capsys.readouterr().out
    assert main(["train", "--out", run, "--iterations", "4", "--shots", "2"]) == 2
    err = capsys.readouterr().err
    assert "different configuration" in err and "shots: 1 -> 2" in err


def test_evaluate_several_seeds_from_the_command_line(tmp_path, capsys):
    runs = [str(tmp_path / f"seed{s}") for s in (0, 1)]
    for seed, run in enumerate(runs):
        assert main(["train", "--iterations", "1", "--seed", str(seed), "--out", run, *TINY]) == 0
    capsys.readouterr()
    assert main(["evaluate", runs[0], "--seeds-from", runs[1], "--tasks", "4", "--nil", "--no-progress"]) == 0
    out = capsys.readouterr().out
    combined = json.loads(Path(runs[0], "eval", "test_final_4tasks_nil_2runs.json").read_text())
    assert [r["seed"] for r in combined["runs"]] == [0, 1] and "over 2 seeds" in out
    for run in runs:
        assert Path(run, "eval", "test_final_4tasks_nil.json").is_file()
