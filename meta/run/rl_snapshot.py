"""Adaptation snapshots of a meta-RL policy (``python -m meta snapshot RUN_DIR --out DIR`` on an
RL run folder), in the snapshot folder format that repsim reads (docs/formats.md, "Adaptation
snapshot", and its meta-RL additions).

For each chosen test task (the fixed tasks of :mod:`meta.run.rl_evaluate`, the same procedure
and random streams) the folder holds the policy's full state_dict after each inner step
(``step_01`` .. ``step_SS``; frozen groups keep the meta-learned values) and, as the task's
inputs, the states the policies visited: ``support_x`` ``(n, D)``, those of the meta-learned
policy's trajectories (what the first inner step learnt from), and ``query_x``, those of the
policy after the last step (the adapted policy's behaviour); masked steps are left out.
``return_before``/``return_after`` are the task's mean returns before adaptation and after the last
step, ``returns`` after each ``k = 0 .. S``. Files are written atomically and ``manifest.json``
last; a failed write leaves no half snapshot.

Imports: :mod:`meta.rl`, :mod:`meta.run` and :mod:`repsim.io`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from meta.rl.metalearner import AdaptationStep
from meta.rl.policy import LAYERS, PARAMETER_GROUPS
from meta.run.rl_evaluate import CHUNK, TEST_SEED, LoadedRLRun, test_tasks
from meta.run.snapshot_writer import SNAPSHOT_FORMAT, SNAPSHOT_VERSION, write_snapshot_folder
from meta.run.state import save_tensors
from repsim.io import write_json

__all__ = ["snapshot_rl_run", "visited_states"]


def visited_states(step: AdaptationStep, task: int) -> Tensor:
    """The observations ``(n, D)`` of task ``task``'s unmasked steps in ``step``'s trajectories."""
    observations, _, mask = step.episodes.flat()
    return observations[task][mask[task] > 0]


def _task_params(params: dict[str, Tensor], task: int, meta_state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The full state_dict of task ``task`` (per-task tensors sliced, shared ones as they are)."""
    return {k: params[k][task] if params[k].dim() > v.dim() else params[k] for k, v in meta_state.items()}


def _write_task(
    out: Path, number: int, task_id: int, steps: list[AdaptationStep], index: int, meta_state: dict
) -> dict:
    """Write one task's folder; returns its manifest entry."""
    folder = f"task_{number:04d}"
    inputs = {"support_x": visited_states(steps[0], index), "query_x": visited_states(steps[-1], index)}
    save_tensors(out / folder / "inputs.safetensors", inputs)
    paths = []
    for s, step in enumerate(steps[1:], start=1):
        paths.append(f"{folder}/step_{s:02d}.safetensors")
        save_tensors(out / paths[-1], _task_params(step.params, index, meta_state))
    returns = [float(step.episodes.task_returns()[index]) for step in steps]
    return {
        "id": task_id,
        "dir": folder,
        "inputs": f"{folder}/inputs.safetensors",
        "steps": paths,
        "return_before": returns[0],
        "return_after": returns[-1],
        "returns": returns,
    }


def snapshot_rl_run(
    run_dir: str | Path,
    out_dir: str | Path,
    *,
    task_ids: Sequence[int] | None = None,
    tasks: int = 8,
    steps: int | None = None,
    lr: float | None = None,
    later_lr: float | None = None,
    freeze: Sequence[str] | str | None = None,
    weights: str = "final",
    trusted: Sequence[str] = (),
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Write the adaptation snapshot of an RL run on the fixed test tasks numbered ``task_ids``
    (default: the first ``tasks``); returns the manifest (module docstring)."""
    run = LoadedRLRun.open(run_dir)
    ids = list(range(tasks)) if task_ids is None else [int(i) for i in task_ids]
    if not ids or min(ids) < 0:
        raise ValueError(f"task ids must be non-negative and at least one, got {ids}")
    inner, n_steps = run.test_inner(freeze, steps)
    if n_steps < 1:
        raise ValueError(f"a snapshot needs at least one inner step, got steps={n_steps}")
    lrs = run.lrs(n_steps, lr, later_lr)
    policy = run.policy(weights, trusted)
    meta_state = {k: v.detach() for k, v in policy.state_dict().items()}
    chunks = run.adaptation(policy, test_tasks(run.env(), max(ids) + 1), inner, lrs, progress=progress)

    def write(out: Path) -> dict[str, Any]:
        save_tensors(out / "meta.safetensors", meta_state)
        entries = [_write_task(out, n, i, chunks[i // CHUNK], i % CHUNK, meta_state) for n, i in enumerate(ids)]
        manifest = _manifest(run, inner.adapt, lrs, weights, entries)
        write_json(out / "manifest.json", manifest)
        return manifest

    return write_snapshot_folder(out_dir, overwrite, write)


def _manifest(run: LoadedRLRun, adapt: Any, lrs: list[float], weights: str, entries: list[dict]) -> dict[str, Any]:
    """The manifest (docs/formats.md, "Adaptation snapshot" and its meta-RL keys)."""
    c = run.config
    return {
        "format": SNAPSHOT_FORMAT,
        "version": SNAPSHOT_VERSION,
        "kind": "rl",
        "model": dict(run.info["model"]),
        "meta_weights": "meta.safetensors",
        "layers": list(LAYERS),
        "batch_norm": "none",
        "forward_batch": "whole",
        "algorithm": c.algorithm,
        "adapted_layers": [g for g in PARAMETER_GROUPS if adapt is None or g in adapt],
        "inner_steps": len(lrs),
        "inner_lr": lrs[0],
        "inner_lrs": lrs,
        "env": c.env,
        "horizon": c.horizon,
        "trajectories": c.trajectories,
        "dataset": f"{c.env}/test",
        "task_set": {"seed": TEST_SEED},
        "inputs": {"support_x": "states visited before adaptation", "query_x": "states visited after the last step"},
        "source": {
            "run_dir": str(run.folder.root),
            "weights": weights,
            "weights_path": str(run.folder.weights(weights)),
            "seed": c.seed,
        },
        "tasks": entries,
    }
