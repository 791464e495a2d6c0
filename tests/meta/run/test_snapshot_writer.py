"""Adaptation snapshots: the folder is exactly docs/formats.md, step files differ from the
meta-learned weights only in the adapted layers, and repsim reads it."""

from __future__ import annotations

import json

import pytest
import torch
from test_train import assert_bitwise_equal, tiny_config, weights

from meta.core.inner import InnerLoop
from meta.core.models import conv4
from meta.core.procedures import evaluate_task
from meta.data import fixed_tasks
from meta.data.synthetic import synthetic_split
from meta.run.snapshot_writer import snapshot_run, write_snapshot
from meta.run.train import train
from repsim.snapshot_report import read_manifest

MANIFEST_KEYS = {
    "format",
    "version",
    "model",
    "meta_weights",
    "layers",
    "batch_norm",
    "forward_batch",
    "algorithm",
    "adapted_layers",
    "inner_steps",
    "inner_lr",
    "ways",
    "shots",
    "queries",
    "dataset",
    "tasks",
}
TASK_KEYS = {"id", "dir", "inputs", "steps", "classes", "query_accuracy_before", "query_accuracy_after"}
SPEC = {"factory": "meta.core.models:conv4", "kwargs": {"ways": 3, "in_channels": 1, "filters": 4}}


@pytest.fixture(scope="module")
def episodes():
    return fixed_tasks(synthetic_split("test"), 3, 2, 4, n_tasks=3)


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return conv4(**SPEC["kwargs"])


def layer_of(key: str) -> str:
    return key.split(".")[0]


@pytest.mark.parametrize("adapt", [None, frozenset({"head"}), frozenset({"conv3", "conv4", "head"})])
def test_snapshot_folder_matches_the_format(tmp_path, episodes, adapt):
    net = model()
    inner = InnerLoop(3, 0.4, adapt=adapt)
    manifest = write_snapshot(
        net, SPEC, list(episodes), inner, tmp_path, algorithm="maml", dataset="synthetic/test", progress=False
    )
    assert json.loads((tmp_path / "manifest.json").read_text()) == manifest
    assert set(manifest) == MANIFEST_KEYS
    assert manifest["format"] == "adaptation-snapshot" and manifest["version"] == 1
    assert manifest["model"] == SPEC and manifest["meta_weights"] == "meta.safetensors"
    assert manifest["layers"] == ["conv1", "conv2", "conv3", "conv4", "head"]
    assert manifest["batch_norm"] == "batch" and manifest["forward_batch"] == "whole"
    adapted = manifest["layers"] if adapt is None else sorted(adapt, key=manifest["layers"].index)
    assert manifest["adapted_layers"] == adapted
    setting = ("inner_steps", "inner_lr", "ways", "shots", "queries")
    assert tuple(manifest[k] for k in setting) == (3, 0.4, 3, 2, 4)
    meta = weights(tmp_path / "meta.safetensors")
    assert_bitwise_equal(meta, net.state_dict())
    files = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    expected = {".lock", "manifest.json", "meta.safetensors"}  # .lock: the writer's lock (docs/formats.md)
    for number, (task, episode) in enumerate(zip(manifest["tasks"], episodes)):
        folder = f"task_{number:04d}"
        assert set(task) == TASK_KEYS and task["dir"] == folder and task["id"] == episode.index
        assert task["inputs"] == f"{folder}/inputs.safetensors"
        assert task["steps"] == [f"{folder}/step_{s:02d}.safetensors" for s in (1, 2, 3)]
        assert task["classes"] == episode.classes.tolist()
        expected |= {task["inputs"], *task["steps"]}
        inputs = weights(tmp_path / task["inputs"])
        assert set(inputs) == {"support_x", "support_y", "query_x", "query_y"}
        assert inputs["support_x"].shape == (6, 1, 28, 28) and inputs["support_x"].dtype == torch.float32
        assert inputs["query_x"].shape == (12, 1, 28, 28) and inputs["query_y"].dtype == torch.int64
        for name in inputs:
            assert torch.equal(inputs[name], getattr(episode, name))
        result = evaluate_task(net, episode, inner, record_steps=True)
        for step_file, params in zip(task["steps"], result.params_per_step):
            state = weights(tmp_path / step_file)
            assert state.keys() == meta.keys()
            for key in meta:
                moved = not torch.equal(state[key], meta[key])
                adapts = layer_of(key) in adapted and ".norm." not in key  # batch-norm shifts: outer loop only
                assert moved == adapts, f"{step_file}: {key} moved={moved}"
                assert torch.equal(state[key], params[key])
        assert task["query_accuracy_after"] == result.accuracy
        assert task["query_accuracy_before"] == evaluate_task(net, episode, InnerLoop(0, 0.4)).accuracy
    assert files == expected
    assert read_manifest(tmp_path)["tasks"] == manifest["tasks"]  # repsim's reader accepts it


def test_snapshot_of_a_run_uses_the_evaluation_tasks_and_its_inner_loop(tmp_path):
    run = tmp_path / "run"
    train(tiny_config(freeze_inner=("conv1", "conv2"), iterations=2), run)
    manifest = snapshot_run(run, tmp_path / "snap", tasks=2, steps=4, progress=False)
    assert manifest["adapted_layers"] == ["conv3", "conv4", "head"] and manifest["inner_steps"] == 4
    assert manifest["inner_lr"] == 0.4 and manifest["algorithm"] == "maml" and manifest["dataset"] == "synthetic/test"
    assert manifest["model"] == json.loads((run / "config.json").read_text())["model"]
    assert_bitwise_equal(weights(tmp_path / "snap" / "meta.safetensors"), weights(run / "final.safetensors"))
    tasks = fixed_tasks(synthetic_split("test"), 3, 1, 5, n_tasks=2)
    for task, episode in zip(manifest["tasks"], tasks):
        assert torch.equal(weights(tmp_path / "snap" / task["inputs"])["query_x"], episode.query_x)
    chosen = snapshot_run(run, tmp_path / "chosen", task_ids=[1], freeze="none", progress=False)
    assert [t["id"] for t in chosen["tasks"]] == [1] and chosen["adapted_layers"][0] == "conv1"


def test_existing_snapshot_needs_overwrite(tmp_path, episodes):
    write_snapshot(model(), SPEC, list(episodes), InnerLoop(1, 0.4), tmp_path, progress=False)
    with pytest.raises(ValueError, match="not empty"):
        write_snapshot(model(), SPEC, list(episodes), InnerLoop(1, 0.4), tmp_path, progress=False)
    manifest = write_snapshot(model(), SPEC, [episodes[0]], InnerLoop(2, 0.4), tmp_path, overwrite=True, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "manifest.json", "meta.safetensors", "task_0000"]
    assert len(manifest["tasks"]) == 1 and len(manifest["tasks"][0]["steps"]) == 2


def test_bad_snapshot_requests_are_refused(tmp_path, episodes):
    with pytest.raises(ValueError, match="at least one inner step"):
        write_snapshot(model(), SPEC, list(episodes), InnerLoop(0, 0.4), tmp_path, progress=False)
    with pytest.raises(ValueError, match="at least one task"):
        write_snapshot(model(), SPEC, [], InnerLoop(1, 0.4), tmp_path, progress=False)
    wide = {"factory": "meta.core.models:conv4", "kwargs": {"ways": 5, "in_channels": 1, "filters": 4}}
    with pytest.raises(ValueError, match="5 outputs but the tasks are 3-way"):
        write_snapshot(conv4(**wide["kwargs"]), wide, list(episodes), InnerLoop(1, 0.4), tmp_path, progress=False)
