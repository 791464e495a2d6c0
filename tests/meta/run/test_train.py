"""Training runs: resuming (after a stop, after SIGKILL) ends bitwise where an uninterrupted run
ends; checkpoints are atomic; incompatible reruns are refused; every regime trains; MAML learns."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from meta.data.synthetic import synthetic_split
from meta.run.config import RunConfig
from meta.run.evaluate import evaluate_run
from meta.run.state import (
    CheckpointError,
    capture_rng,
    load_checkpoint,
    load_tensors,
    pack,
    restore_rng,
    save_checkpoint,
    unpack,
)
from meta.run.train import IncompatibleRunError, train

REPO = Path(__file__).resolve().parents[3]


def tiny_config(**changes) -> RunConfig:
    """A run that takes a fraction of a second per ten iterations (3-way 1-shot, 4 filters)."""
    base = RunConfig(
        algorithm="maml",
        dataset="synthetic",
        ways=3,
        shots=1,
        queries=5,
        test_queries=5,
        iterations=8,
        seed=3,
        filters=4,
        meta_batch_size=2,
        inner_steps=1,
        inner_lr=0.4,
        test_inner_steps=2,
        val_every=4,
        val_tasks=4,
        checkpoint_every=3,
        log_every=2,
        progress=False,
    )
    return base.replace(**changes)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_tensors(path)[0]


def assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs (max {float((a[key] - b[key]).abs().max()):.3g})"


def deterministic_rows(folder: Path) -> list[dict]:
    """Metrics rows without the wall-clock column."""
    rows = json.loads((folder / "metrics.json").read_text())["rows"]
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted 8-iteration run, keeping the weights after iteration 4."""
    out = tmp_path_factory.mktemp("reference")
    train(tiny_config(save_at=(4,)), out)
    return out


# --------------------------------------------------------------------------- resume


def test_stop_and_rerun_matches_uninterrupted_run(reference, tmp_path):
    train(tiny_config(iterations=4), tmp_path)
    first = weights(tmp_path / "final.safetensors")
    result = train(tiny_config(), tmp_path)
    assert result.resumed_from == 4 and result.iterations == 8
    assert_bitwise_equal(weights(tmp_path / "final.safetensors"), weights(reference / "final.safetensors"))
    # the copy kept at iteration 4 is the final weights of the 4-iteration run
    assert_bitwise_equal(first, weights(reference / "checkpoints" / "iter_000004.safetensors"))
    assert deterministic_rows(tmp_path) == deterministic_rows(reference)
    assert_bitwise_equal(weights(tmp_path / "best.safetensors"), weights(reference / "best.safetensors"))
    ours = load_checkpoint(tmp_path / "checkpoint.safetensors")
    theirs = load_checkpoint(reference / "checkpoint.safetensors")
    for index, state in theirs["optimizer"]["state"].items():
        assert_bitwise_equal(ours["optimizer"]["state"][index], state)


def test_rerun_of_a_finished_run_changes_nothing(reference, tmp_path):
    train(tiny_config(), tmp_path)
    before = (tmp_path / "final.safetensors").read_bytes()
    result = train(tiny_config(), tmp_path)
    assert result.resumed_from == 8
    assert (tmp_path / "final.safetensors").read_bytes() == before


def test_compiled_path_resumes_bitwise_and_trains_as_the_loop_path(reference, tmp_path):
    """``--path compiled``: stopped at 4 and rerun, the same weights bit for bit as 8 iterations
    at once; and the same training as the reference's ``hybrid`` run up to float32 rounding
    (inductor sums in its own order)."""
    compiled = tiny_config(path="compiled")
    train(compiled, tmp_path / "whole")
    train(compiled.replace(iterations=4), tmp_path / "resumed")
    train(compiled, tmp_path / "resumed")
    final = weights(tmp_path / "whole" / "final.safetensors")
    assert_bitwise_equal(weights(tmp_path / "resumed" / "final.safetensors"), final)
    for key, value in weights(reference / "final.safetensors").items():
        torch.testing.assert_close(final[key], value, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_run_killed_at_a_random_moment_resumes_to_the_same_weights(reference, tmp_path):
    """SIGKILL a `python -m meta train` subprocess mid-run (checkpoint every iteration, so it is
    often killed while writing), then rerun: final weights bitwise equal to the reference's."""
    config = tiny_config(checkpoint_every=1, iterations=40)
    expected = tmp_path / "expected"
    train(config, expected)
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "meta", "train", "--out", str(out)]
    for name, value in config.as_dict().items():
        flag = f"--{name.replace('_', '-')}"
        if name == "progress" or value is None or value == []:
            continue
        if isinstance(value, bool):
            args.append(flag if value else f"--no-{flag[2:]}")
            continue
        args += [flag, ",".join(map(str, value)) if isinstance(value, list) else str(value)]
    proc = subprocess.Popen(
        args + ["--no-progress"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    info = out / "checkpoint.json"
    deadline = time.monotonic() + 120
    while not (info.is_file() and _iteration(info) >= 2):
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "the training subprocess made no checkpoint in 120 s"
        time.sleep(0.01)
    time.sleep(random.Random(os.getpid()).uniform(0.0, 0.2))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    killed_at = load_checkpoint(out / "checkpoint.safetensors")["iteration"]
    assert killed_at < 40, "the run finished before it was killed; the test did not interrupt it"
    result = train(config, out)
    assert result.resumed_from == killed_at
    assert_bitwise_equal(weights(out / "final.safetensors"), weights(expected / "final.safetensors"))
    assert deterministic_rows(out) == deterministic_rows(expected)


def _iteration(info: Path) -> int:
    try:
        return json.loads(info.read_text())["iteration"]
    except (json.JSONDecodeError, KeyError):
        return -1


def test_stray_temporary_files_are_ignored(reference, tmp_path):
    train(tiny_config(iterations=4), tmp_path)
    # what a crash during a write leaves behind: a partial temporary file next to each target
    for name in ("checkpoint.safetensors", "final.safetensors", "metrics.json"):
        partial = (tmp_path / name).read_bytes()[:37]
        (tmp_path / f".{name}.k3j4h5.tmp").write_bytes(partial)
    train(tiny_config(), tmp_path)
    assert_bitwise_equal(weights(tmp_path / "final.safetensors"), weights(reference / "final.safetensors"))
    assert not list(tmp_path.glob(".*.tmp"))  # the litter is cleared


def test_failed_checkpoint_write_leaves_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.safetensors"
    save_checkpoint(path, {"iteration": 1, "w": torch.ones(3)})
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"iteration": 2, "w": torch.zeros(3)})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.safetensors"]
    assert load_checkpoint(path)["iteration"] == 1


def test_truncated_checkpoint_is_reported_not_loaded(tmp_path):
    path = tmp_path / "checkpoint.safetensors"
    save_checkpoint(path, {"iteration": 1, "w": torch.ones(100)})
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(CheckpointError, match="damaged safetensors file: tensor .* needs bytes"):
        load_checkpoint(path)


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "change",
    [
        {"ways": 4},
        {"algorithm": "anil"},
        {"inner_lr": 0.1},
        {"seed": 4},
        {"freeze_inner": ("conv1",)},
        {"meta_batch_size": 3},
    ],
)
def test_incompatible_rerun_is_refused(tmp_path, change):
    train(tiny_config(iterations=2), tmp_path)
    name = next(iter(change))
    with pytest.raises(IncompatibleRunError, match=f"{name}: .* -> "):
        train(tiny_config(iterations=4, **change), tmp_path)


def test_rerun_may_change_length_evaluation_and_logging(tmp_path):
    train(tiny_config(iterations=2), tmp_path)
    result = train(
        tiny_config(iterations=3, val_every=1, val_tasks=3, log_every=1, checkpoint_every=1, test_inner_steps=1),
        tmp_path,
    )
    assert result.iterations == 3
    stored = json.loads((tmp_path / "config.json").read_text())["config"]
    assert stored["val_every"] == 1 and stored["iterations"] == 3


def test_fewer_iterations_than_the_checkpoint_is_refused(tmp_path):
    train(tiny_config(iterations=3), tmp_path)
    with pytest.raises(ValueError, match="already at iteration 3"):
        train(tiny_config(iterations=2), tmp_path)


def test_folder_that_is_not_a_run_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a training run folder"):
        train(tiny_config(iterations=1), tmp_path)


# --------------------------------------------------------------------------- run folder


def test_run_folder_matches_the_format(reference):
    names = {p.name for p in reference.iterdir()}
    assert {
        "config.json",
        "checkpoint.safetensors",
        "checkpoint.json",
        "best.safetensors",
        "final.safetensors",
        "metrics.csv",
        "metrics.json",
        "checkpoints",
    } <= names
    info = json.loads((reference / "config.json").read_text())
    assert info["model"] == {
        "factory": "meta.core.models:conv4",
        "kwargs": {
            "ways": 3,
            "in_channels": 1,
            "variant": "omniglot",
            "image_size": 28,
            "batch_norm": "batch",
            "padding": "same",
            "filters": 4,
        },
    }
    assert info["batch_norm"] == "batch" and "batch statistics" in info["batch_norm_semantics"]
    assert info["config"]["queries"] == 5 and info["config"]["meta_lr"] == 1e-3  # resolved defaults recorded
    state = json.loads((reference / "checkpoint.json").read_text())
    assert state["iteration"] == 8 and state["metrics_rows"] == len(deterministic_rows(reference))
    csv_lines = (reference / "metrics.csv").read_text().splitlines()
    assert csv_lines[0].startswith("iteration,split,loss,accuracy")
    assert len(csv_lines) == 1 + len(deterministic_rows(reference))
    # rows: train every 2 iterations, validation at 4 and 8
    rows = deterministic_rows(reference)
    assert [(r["iteration"], r["split"]) for r in rows] == [
        (2, "train"),
        (4, "train"),
        (4, "val"),
        (6, "train"),
        (8, "train"),
        (8, "val"),
    ]
    best = load_checkpoint(reference / "checkpoint.safetensors")["best"]
    val = {r["iteration"]: r["accuracy"] for r in rows if r["split"] == "val"}
    assert best["accuracy"] == max(val.values()) and val[best["iteration"]] == best["accuracy"]


def test_checkpoint_state_round_trips_exactly():
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    state = {"optimizer": optimizer.state_dict(), "window": {"count": 1, "sums": {"loss": 0.1 + 0.2}}, "t": (1, 2.5)}
    tree, tensors = pack(state, "state")
    json.dumps(tree)
    restored = unpack(json.loads(json.dumps(tree)), tensors)
    assert restored["window"]["sums"]["loss"] == 0.1 + 0.2 and restored["t"] == (1, 2.5)
    assert set(restored["optimizer"]["state"]) == {0, 1}  # integer keys survive JSON
    fresh = torch.optim.Adam(model.parameters(), lr=1e-3)
    fresh.load_state_dict(restored["optimizer"])
    assert_bitwise_equal(fresh.state_dict()["state"][0], optimizer.state_dict()["state"][0])


def test_rng_capture_and_restore_replays_every_generator():
    state = json.loads(json.dumps(capture_rng()))
    draws = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng(state)
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(draws[0], again[0]) and np.array_equal(draws[1], again[1]) and draws[2] == again[2]


# --------------------------------------------------------------------------- regimes


@pytest.mark.parametrize("algorithm", ["fomaml", "anil", "multitask", "nil", "multiclass"])
def test_every_regime_trains_and_validates(tmp_path, algorithm):
    result = train(tiny_config(algorithm=algorithm, iterations=2, val_every=2, batch_size=16), tmp_path)
    info = json.loads((tmp_path / "config.json").read_text())
    head = weights(tmp_path / "final.safetensors")["head.weight"]
    assert head.shape[0] == (48 if algorithm == "multiclass" else 3)  # multiclass: every training class
    assert info["test_procedure"]["kind"] == ("inner" if algorithm in ("fomaml", "anil") else "nil")
    assert result.best is not None and 0 <= result.best["accuracy"] <= 1
    assert info["regime"]["regime"] == algorithm


def test_random_features_keep_the_initial_weights(tmp_path):
    train(tiny_config(algorithm="random", iterations=1), tmp_path / "one")
    train(tiny_config(algorithm="random", iterations=3), tmp_path / "three")
    assert_bitwise_equal(
        weights(tmp_path / "one" / "final.safetensors"), weights(tmp_path / "three" / "final.safetensors")
    )


def test_freeze_inner_is_recorded_and_frozen_layers_still_meta_learn(tmp_path):
    train(tiny_config(freeze_inner=("conv1", "conv2"), iterations=2), tmp_path)
    info = json.loads((tmp_path / "config.json").read_text())
    assert info["adapted_layers"] == ["conv3", "conv4", "head"]
    assert info["regime"]["inner"]["adapt"] == ["conv3", "conv4", "head"]
    assert info["test_procedure"]["frozen_layers"] == ["conv1", "conv2"]
    torch.manual_seed(3)  # the initial weights: seed 3, as the run
    from repsim.weights import build_model

    initial = build_model(info["model"]["factory"], info["model"]["kwargs"], source=None).state_dict()
    final = weights(tmp_path / "final.safetensors")
    assert not torch.equal(initial["conv1.conv.weight"], final["conv1.conv.weight"])  # outer loop moves it


def test_synthetic_split_is_deterministic_and_disjoint():
    a, b = synthetic_split("train"), synthetic_split("train")
    assert np.array_equal(a.images, b.images) and a.images.shape == (48, 20, 1, 28, 28)
    test = synthetic_split("test")
    assert not any(np.array_equal(test.images[0, 0], a.images[c, 0]) for c in range(a.n_classes))


def test_maml_learns_well_above_chance_on_held_out_tasks(tmp_path):
    """5-way 5-shot synthetic: 60 MAML iterations lift held-out (test-split) accuracy from the
    initial network's (about 50%: fine-tuning random features) to far above chance (20%)."""
    config = tiny_config(
        ways=5,
        shots=5,
        queries=5,
        filters=8,
        iterations=60,
        val_every=60,
        meta_batch_size=4,
        test_inner_steps=3,
        checkpoint_every=60,
        meta_lr=0.01,
    )
    train(config.replace(iterations=1, meta_lr=0.0), tmp_path / "init")  # lr 0: the initial weights
    train(config, tmp_path / "trained")
    before = evaluate_run(tmp_path / "init", tasks=100, progress=False, write=False)
    after = evaluate_run(tmp_path / "trained", tasks=100, progress=False, write=False)
    assert after.accuracy > 70.0
    assert after.accuracy - after.ci95 > before.accuracy + before.ci95
