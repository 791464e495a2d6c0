"""The jobs of the paper's analyses beyond its tables: how far each layer's weights move in
adaptation, and ANIL's speed-up over MAML measured on this machine.

- :func:`weight_movement_job`: from an adaptation snapshot, per task, inner step and layer,
  ``||theta_step - theta_meta||`` over the layer's parameters and the same relative to
  ``||theta_meta||``.
- :func:`speed_job`: seconds of a training iteration and of one task's test-time adaptation,
  MAML and ANIL interleaved in one process (the same tasks, one thread), so that the machine's
  load hits both alike; the paper reports 1.7x (training) and 4.1x (inference) on a GPU.

Jobs are module-level functions of plain data (:mod:`meta.study.executor`).

Imports: :mod:`meta.core`, :mod:`meta.data`, :mod:`meta.run`, :mod:`repsim` (snapshot reading),
:mod:`meta.study.jobs`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from meta.core.names import LAYERS
from meta.core.procedures import task_accuracy
from meta.data import EpisodeSampler
from meta.run.config import from_mapping
from meta.run.evaluate import LoadedRun, evaluation_tasks, run_procedure
from meta.run.recipe import make_run_regime
from meta.run.state import load_tensors
from meta.study.jobs import load_split_once
from repsim.snapshot_report import read_manifest


def _layer_norms(tensors: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """``sqrt(sum of squares)`` over each layer's parameters (``<layer>.<...>`` keys), float64."""
    sums = dict.fromkeys(LAYERS, 0.0)
    for key, value in tensors.items():
        layer = key.split(".", 1)[0]
        if layer in sums:
            sums[layer] += float(value.double().square().sum())
    return {layer: total**0.5 for layer, total in sums.items()}


def weight_movement_job(snapshot_dir: str) -> list[dict[str, Any]]:
    """Per task, inner step and layer: ``movement = ||theta_step - theta_meta||_2`` over the
    layer's parameters (every key ``<layer>.*`` of the snapshot's weights) and
    ``relative = movement / ||theta_meta||_2`` (rows ``{"task", "step", "layer", "movement",
    "relative"}``)."""
    root = Path(snapshot_dir)
    manifest = read_manifest(root)
    meta, _ = load_tensors(root / manifest["meta_weights"])
    size = _layer_norms(meta)
    rows = []
    for task in manifest["tasks"]:
        for step, path in enumerate(task["steps"], start=1):
            adapted, _ = load_tensors(root / path)
            moved = _layer_norms({k: adapted[k] - meta[k] for k in meta})
            rows += [
                {
                    "task": task["id"],
                    "step": step,
                    "layer": layer,
                    "movement": moved[layer],
                    "relative": moved[layer] / size[layer] if size[layer] else float("nan"),
                }
                for layer in LAYERS
            ]
    return rows


def _seconds(fn: Callable[..., Any], *args: Any) -> float:
    """Wall seconds of ``fn(*args)``."""
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def _trainer(run: LoadedRun) -> Callable[[Any], None]:
    """One training iteration of the run's regime on a batch: gradients and an Adam step, on a
    copy of the run's final weights."""
    model = run.model("final")
    regime = make_run_regime(run.config)
    optimizer = torch.optim.Adam(model.parameters(), lr=run.config.meta_lr)

    def iteration(batch: Any) -> None:
        optimizer.zero_grad(set_to_none=True)
        regime.step(model, batch)
        optimizer.step()

    return iteration


def speed_job(maml: Mapping[str, Any], anil: Mapping[str, Any], iterations: int, tasks: int) -> dict[str, Any]:
    """ANIL's speed-up over MAML on this machine: ``maml`` and ``anil`` are ``{"config",
    "run_dir"}`` of the two runs (the same setting). Times ``iterations`` training iterations of
    each on the same meta-batches (drawn from the training split) and the test-time adaptation of
    each on the first ``tasks`` fixed test tasks (each run's own test procedure), alternating
    MAML and ANIL, after one untimed warm-up of each. Returns the seconds
    ``{"train": {"maml": [...], "anil": [...]}, "test": {...}}``."""
    runs = {name: LoadedRun.open(spec["run_dir"]) for name, spec in (("maml", maml), ("anil", anil))}
    config = from_mapping(maml["config"])
    sampler = EpisodeSampler(load_split_once(config, "train"), config.ways, config.shots, config.queries, seed=12345)
    batches = [sampler.batch(i * config.meta_batch_size, config.meta_batch_size) for i in range(iterations + 1)]
    trainers = {name: _trainer(run) for name, run in runs.items()}
    episodes = evaluation_tasks(config, load_split_once(config, "test"), tasks + 1)
    testers = {name: (run.model("final"), run_procedure(run.config)) for name, run in runs.items()}
    seconds: dict[str, dict[str, list[float]]] = {"train": {n: [] for n in runs}, "test": {n: [] for n in runs}}
    for i, batch in enumerate(batches):
        for name, iteration in trainers.items():
            took = _seconds(iteration, batch)
            if i:  # the first is a warm-up
                seconds["train"][name].append(took)
    for t in range(len(episodes)):
        for name, (model, procedure) in testers.items():
            took = _seconds(task_accuracy, model, episodes[t], procedure)
            if t:
                seconds["test"][name].append(took)
    return seconds
