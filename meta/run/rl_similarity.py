"""How much each layer of a meta-RL policy changes in adaptation: CCA and CKA of the activations
of ``fc1``, ``fc2`` and ``head`` before vs after one inner step, on the states the adapted
policies visit on the fixed test tasks.

For each test task ``t`` (:mod:`meta.run.rl_evaluate`: the same tasks, procedure and random
streams), with ``X`` the states ``(n_t, D)`` the policy visited after one inner step (unmasked
steps), and ``A_l(theta; X)`` the output of layer ``l`` (repsim's capture)::

    cca_l = mean CCA (A_l(theta; X), A_l(theta'_t; X))      repsim.mean_cca, no conv policy
    cka_l = linear CKA (A_l(theta; X), A_l(theta'_t; X))    repsim.linear_cka

then the mean over tasks with ``ci95 = 1.96 * std / sqrt(T)`` (population std). A task where a
measure is undefined (a dead layer, fewer states than neurons) counts in ``n_undefined`` and is left
out of the mean. The rows ``{layer, measure, value, ci95, n_tasks, n_undefined, algorithm, env,
seed, steps}`` are returned and written as a CSV (default ``RUN_DIR/eval/similarity.csv``).

Imports: :mod:`meta.rl`, :mod:`meta.run` and :mod:`repsim` (capture, measures, CSV).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from meta.rl.policy import LAYERS
from meta.run.results import mean_ci95
from meta.run.rl_evaluate import CHUNK, LoadedRLRun, test_tasks
from meta.run.rl_snapshot import visited_states
from repsim.capture import capture_activations
from repsim.io import write_csv
from repsim.measures import linear_cka, mean_cca

__all__ = ["MEASURES", "SIMILARITY_COLUMNS", "rl_similarity"]

#: The measures by their column name.
MEASURES = {"cca": mean_cca, "cka": linear_cka}
SIMILARITY_COLUMNS = (
    "layer",
    "measure",
    "value",
    "ci95",
    "n_tasks",
    "n_undefined",
    "algorithm",
    "env",
    "seed",
    "steps",
)


def _task_values(policy: torch.nn.Module, after: torch.nn.Module, states: torch.Tensor) -> dict[tuple[str, str], float]:
    """``(layer, measure) -> value`` of one task (NaN where the measure is undefined)."""
    before_acts = capture_activations(policy, states, list(LAYERS), batch_size=len(states), progress=False)
    after_acts = capture_activations(after, states, list(LAYERS), batch_size=len(states), progress=False)
    values = {}
    for layer in LAYERS:
        for name, measure in MEASURES.items():
            try:
                values[(layer, name)] = float(measure(before_acts[layer], after_acts[layer]))
            except ValueError:
                values[(layer, name)] = math.nan
    return values


def rl_similarity(
    run_dir: str | Path,
    *,
    tasks: int | None = None,
    weights: str = "final",
    lr: float | None = None,
    out_csv: str | Path | None = None,
    trusted: Sequence[str] = (),
    progress: bool = True,
) -> list[dict[str, Any]]:
    """CCA and CKA of each layer before vs after one inner step (module docstring); ``tasks``
    defaults to the run's ``test_tasks``. Returns the rows and writes them to ``out_csv``."""
    run = LoadedRLRun.open(run_dir)
    count = run.config.test_tasks if tasks is None else tasks
    inner, _ = run.test_inner(None, 1)
    policy = run.policy(weights, trusted)
    after = run.policy(weights, trusted)
    chunks = run.adaptation(policy, test_tasks(run.env(), count), inner, run.lrs(1, lr, None), progress=progress)
    per_task: dict[tuple[str, str], list[float]] = {}
    for t in range(count):
        adapted = chunks[t // CHUNK][1]
        index = t % CHUNK
        state = {k: v[index] if v.dim() > policy.state_dict()[k].dim() else v for k, v in adapted.params.items()}
        after.load_state_dict(state)
        for key, value in _task_values(policy, after, visited_states(adapted, index)).items():
            per_task.setdefault(key, []).append(value)
    rows = [_row(layer, measure, values, run) for (layer, measure), values in per_task.items()]
    path = Path(out_csv) if out_csv is not None else run.folder.eval_dir / "similarity.csv"
    write_csv(path, pd.DataFrame(rows, columns=list(SIMILARITY_COLUMNS)))
    return rows


def _row(layer: str, measure: str, values: list[float], run: LoadedRLRun) -> dict[str, Any]:
    finite = np.asarray([v for v in values if math.isfinite(v)])
    value, ci95 = mean_ci95(finite) if finite.size else (math.nan, math.nan)
    return {
        "layer": layer,
        "measure": measure,
        "value": value,
        "ci95": ci95,
        "n_tasks": int(finite.size),
        "n_undefined": len(values) - int(finite.size),
        "algorithm": run.config.algorithm,
        "env": run.config.env,
        "seed": run.config.seed,
        "steps": 1,
    }
