"""Meta-RL run folders: seeded runs repeat bit for bit and resume exactly (after a stop, and after
SIGKILL of a real ``python -m meta train``), the folder matches docs/formats.md, a policy learns
2D navigation, and evaluate, snapshot and the similarity analysis read the folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from meta.cli import main
from meta.rl.policy import POLICY_FACTORY
from meta.run.recipe import IncompatibleRunError
from meta.run.rl_config import RL_FIELD_NAMES, RLConfig
from meta.run.rl_evaluate import evaluate_rl_run
from meta.run.rl_similarity import rl_similarity
from meta.run.rl_snapshot import snapshot_rl_run
from meta.run.rl_train import train_rl
from meta.run.state import load_checkpoint, load_tensors
from repsim.snapshot_report import read_manifest, report_snapshot

REPO = Path(__file__).resolve().parents[3]
TIMING = ("seconds", "sampling_s", "inner_s", "trpo_s")


#: A 2D-navigation run of a few hundredths of a second per meta-iteration.
TINY = {
    "iterations": 6,
    "seed": 3,
    "meta_batch_size": 3,
    "trajectories": 4,
    "horizon": 10,
    "hidden": 8,
    "checkpoint_every": 2,
    "test_tasks": 4,
    "progress": False,
}


def tiny(**changes) -> RLConfig:
    return RLConfig(**{**TINY, **changes})


def assert_same_weights(a: Path, b: Path) -> None:
    """The two weight files hold the same tensors, bit for bit."""
    first, second = load_tensors(a)[0], load_tensors(b)[0]
    assert first.keys() == second.keys()
    differing = [key for key in first if not torch.equal(first[key], second[key])]
    assert not differing, f"{differing} differ"


def rows(folder: Path) -> list[dict]:
    """Metrics rows without the wall-clock columns."""
    data = json.loads((folder / "metrics.json").read_text())["rows"]
    return [{k: v for k, v in row.items() if k not in TIMING} for row in data]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted run keeping the policy after meta-iteration 3."""
    return Path(train_rl(tiny(save_at=(3,)), tmp_path_factory.mktemp("rl_reference")).run_dir)


def test_seeded_runs_repeat_bit_for_bit(reference, tmp_path):
    train_rl(tiny(save_at=(3,)), tmp_path)
    assert_same_weights(tmp_path / "final.safetensors", reference / "final.safetensors")
    assert rows(tmp_path) == rows(reference)
    other = tmp_path / "other_seed"
    train_rl(tiny(seed=4), other)
    with pytest.raises(AssertionError):
        assert_same_weights(other / "final.safetensors", reference / "final.safetensors")


def test_stop_and_rerun_matches_the_uninterrupted_run(reference, tmp_path):
    train_rl(tiny(iterations=3), tmp_path)
    assert_same_weights(tmp_path / "final.safetensors", reference / "checkpoints" / "iter_000003.safetensors")
    result = train_rl(tiny(), tmp_path)
    assert result.resumed_from == 3 and result.iterations == 6
    assert_same_weights(tmp_path / "final.safetensors", reference / "final.safetensors")
    assert rows(tmp_path) == rows(reference)


def _command(config: RLConfig, out: Path) -> list[str]:
    args = [sys.executable, "-m", "meta", "train", "--out", str(out), "--no-progress"]
    for name, value in config.as_dict().items():
        if name == "progress" or value in (None, []):
            continue
        flag = f"--{name.replace('_', '-')}"
        if isinstance(value, bool):
            args.append(flag if value else f"--no-{flag[2:]}")
        else:
            args += [flag, ",".join(map(str, value)) if isinstance(value, list) else str(value)]
    return args


def test_a_killed_train_command_resumes_to_the_uninterrupted_weights(tmp_path):
    """SIGKILL ``python -m meta train`` after its first checkpoint, rerun the same command: the final
    weights are bitwise those of an uninterrupted run."""
    config = tiny(iterations=60, checkpoint_every=1, meta_batch_size=4, horizon=20)
    expected = tmp_path / "expected"
    train_rl(config, expected)
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(_command(config, out), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (out / "checkpoint.json").is_file():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "the training subprocess made no checkpoint in 120 s"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    killed_at = load_checkpoint(out / "checkpoint.safetensors")["iteration"]
    assert killed_at < 60, "the run finished before it was killed"
    rerun = subprocess.run(_command(config, out), cwd=REPO, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert f"(started at {killed_at})" in rerun.stdout
    assert_same_weights(out / "final.safetensors", expected / "final.safetensors")
    assert rows(out) == rows(expected)


def test_the_run_folder_records_every_hyperparameter(reference):
    info = json.loads((reference / "config.json").read_text())
    assert info["kind"] == "rl" and info["format"] == "meta-run"
    assert set(info["config"]) == set(RL_FIELD_NAMES)
    assert info["config"]["meta_batch_size"] == 3 and info["config"]["max_kl"] == 0.01
    assert info["model"]["factory"] == POLICY_FACTORY and info["layers"] == ["fc1", "fc2", "head"]
    assert info["meta_rl"]["trpo"] == {
        "max_kl": 0.01,
        "cg_iters": 10,
        "cg_damping": 1e-5,
        "ls_steps": 15,
        "ls_backtrack": 0.8,
    }
    assert info["segments"][0]["threads"] == 1
    header = (reference / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header == [
        "iteration",
        "split",
        "return_before",
        "return_after",
        "loss_before",
        "loss_after",
        "kl",
        "step_fraction",
        "sampling_s",
        "inner_s",
        "trpo_s",
        "seconds",
    ]
    assert [r["iteration"] for r in rows(reference)] == [1, 2, 3, 4, 5, 6]
    assert {p.name for p in reference.iterdir()} >= {
        "checkpoint.safetensors",
        "checkpoint.prev.safetensors",
        "final.safetensors",
    }


def test_an_incompatible_rerun_and_a_classifier_folder_are_refused(reference, tmp_path):
    with pytest.raises(IncompatibleRunError, match="Differences: max_kl: 0.01 -> 0.02"):
        train_rl(tiny(max_kl=0.02), reference)
    (tmp_path / "config.json").write_text(json.dumps({"format": "meta-run", "version": 2, "config": {}}))
    with pytest.raises(IncompatibleRunError, match="few-shot classifier run"):
        train_rl(tiny(), tmp_path)


def test_a_policy_learns_2d_navigation(tmp_path):
    """20 meta-iterations on a small budget (a few seconds): after one inner step the return is
    clearly above the unadapted one (about -4.5 against -9 on 20 test tasks; a policy before
    meta-training gains about 1)."""
    config = tiny(iterations=20, meta_batch_size=10, trajectories=10, horizon=20, hidden=32, seed=0, test_tasks=20)
    train_rl(config, tmp_path)
    returns = [r["return"] for r in evaluate_rl_run(tmp_path, steps=1, progress=False)["returns"]]
    assert returns[1] > returns[0] + 2.5 and returns[1] > -7


def test_evaluate_gives_the_returns_after_each_inner_step(reference):
    result = evaluate_rl_run(reference, progress=False)
    assert [r["steps"] for r in result["returns"]] == [0, 1, 2, 3]
    assert all(set(r) == {"steps", "return", "ci95"} for r in result["returns"])
    assert result["procedure"]["lrs"] == [0.1, 0.05, 0.05] and result["tasks"] == 4
    assert json.loads(Path(result["json"]).read_text())["returns"] == result["returns"]
    again = evaluate_rl_run(reference, progress=False, write=False)
    assert again["returns"] == result["returns"]  # a fixed, seeded set of test tasks
    frozen = evaluate_rl_run(reference, freeze="fc1,fc2", steps=0, progress=False, write=False)
    assert frozen["procedure"]["frozen_layers"] == ["fc1", "fc2"] and len(frozen["returns"]) == 1
    assert frozen["returns"][0] == result["returns"][0]


def test_snapshot_is_read_by_repsim_and_similarity_rows_are_written(reference, tmp_path):
    manifest = snapshot_rl_run(reference, tmp_path / "snap", tasks=2, steps=2, progress=False)
    assert read_manifest(tmp_path / "snap")["layers"] == ["fc1", "fc2", "head"]
    assert manifest["kind"] == "rl" and len(manifest["tasks"][0]["steps"]) == 2
    _, summary = report_snapshot(tmp_path / "snap", trusted=[POLICY_FACTORY], progress=False)
    assert set(summary["layer"]) == {"fc1", "fc2", "head"} and (summary[summary["step"] == 0]["mean"] > 0.999).all()
    table = rl_similarity(reference, tasks=3, out_csv=tmp_path / "sim.csv", progress=False)
    assert {(r["layer"], r["measure"]) for r in table} == {
        (l, m) for l in ("fc1", "fc2", "head") for m in ("cca", "cka")
    }
    assert all(0 <= r["value"] <= 1 + 1e-9 for r in table if r["n_tasks"])
    assert (tmp_path / "sim.csv").read_text().startswith("layer,measure,value,ci95")


def test_the_command_line_trains_evaluates_and_snapshots_rl_runs(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert (
        main(
            [
                "train",
                "--algorithm",
                "anil-trpo",
                "--out",
                out,
                "--iterations",
                "2",
                "--meta-batch-size",
                "2",
                "--trajectories",
                "3",
                "--horizon",
                "5",
                "--hidden",
                "4",
                "--no-progress",
            ]
        )
        == 0
    )
    assert main(["train", "--out", out, "--iterations", "3", "--no-progress"]) == 0
    assert "(started at 2)" in capsys.readouterr().out
    assert main(["evaluate", out, "--tasks", "2", "--steps", "1", "--no-progress"]) == 0
    assert "after 1 inner steps: return" in capsys.readouterr().out
    assert main(["snapshot", out, "--out", str(tmp_path / "snap"), "--tasks", "1", "--no-progress"]) == 0
    assert "adapting head" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--algorithm", "maml-trpo", "--horizon", "0"], "horizon must be an integer >= 1, got 0"),
        (["--algorithm", "maml-trpo", "--ways", "5"], "--ways do not apply to meta-RL runs"),
        (["--algorithm", "maml-trpo", "--freeze-inner", "conv1"], "unknown policy layers \\['conv1'\\]"),
    ],
)
def test_bad_rl_options_are_reported_by_name(tmp_path, capsys, argv, message):
    assert main(["train", "--out", str(tmp_path / "x"), *argv]) == 2
    assert message.replace("\\", "") in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_halfcheetah_trains_on_mujoco(tmp_path):
    pytest.importorskip("mujoco")
    pytest.importorskip("gymnasium")
    config = tiny(env="halfcheetah-vel", iterations=2, meta_batch_size=2, trajectories=2, horizon=5, test_tasks=2)
    train_rl(config, tmp_path)
    info = json.loads((tmp_path / "config.json").read_text())
    assert info["env"]["observation_size"] == 17 and "mujoco" in info["software"]
    assert len(evaluate_rl_run(tmp_path, steps=1, progress=False, write=False)["returns"]) == 2
