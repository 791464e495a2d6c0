"""The average return of a meta-RL run after 0, 1, 2, ... inner steps on a fixed, seeded set of
test tasks, with a 95% interval (``python -m meta evaluate RUN_DIR`` on an RL run folder).

Test tasks: the first ``tasks`` of ``env.sample_tasks`` from ``random_streams(TEST_SEED, 0)``,
the same for every run of an environment (and a prefix of any larger set); they are processed in
chunks of :data:`CHUNK` tasks, chunk ``c`` sampling from ``random_streams(TEST_SEED, 1, c)``. On
each task the test procedure (:func:`meta.rl.metalearner.adaptation_trajectories`) samples
``trajectories`` episodes with the policy after ``k = 0 .. S`` inner steps (sizes
``test_inner_lr``, then ``test_later_lr``); a task's return after ``k`` steps is the mean
undiscounted return of its episodes, and over the ``T`` tasks::

    return_k = mean_t R_tk,   ci95_k = 1.96 * std_t(R_tk) / sqrt(T)   (population std, ddof=0)

(:func:`meta.run.results.mean_ci95`, the classifier's formula). ``freeze`` chooses the groups
frozen at test time (``fc1,fc2``: the body frozen, NIL-style; ``steps=0``: no adaptation at all).
The result is written to ``RUN_DIR/eval/<name>.json`` (docs/formats.md, "Meta-RL evaluation").

Imports: :mod:`meta.core`, :mod:`meta.rl`, :mod:`meta.run` and :mod:`repsim` (io, progress).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from meta.core.inner import InnerLoop
from meta.rl.envs import BatchEnv
from meta.rl.inner import adapted_groups
from meta.rl.metalearner import AdaptationStep, adaptation_trajectories
from meta.rl.policy import PARAMETER_GROUPS, POLICY_FACTORY
from meta.rl.sampler import random_streams
from meta.run.folder import RunFolder, load_weights
from meta.run.results import mean_ci95
from meta.run.rl_config import RLConfig, is_rl_run, rl_from_mapping
from meta.run.rl_train import env_of, rl_of
from meta.validation import check_int
from repsim.io import write_json
from repsim.progress import progress_bar

__all__ = ["CHUNK", "TEST_SEED", "LoadedRLRun", "evaluate_rl_run", "format_rl_result", "is_rl_run", "test_tasks"]

#: The seed of the fixed test tasks and of their sampling.
TEST_SEED = 123
#: Test tasks sampled together.
CHUNK = 40
CI95_FORMULA = "1.96 * std / sqrt(tasks) over the tasks' mean returns, population std (ddof=0)"


def test_tasks(env: BatchEnv, count: int) -> np.ndarray:
    """The fixed test tasks ``(count, task_size)`` of ``env`` (module docstring)."""
    rng, _ = random_streams(TEST_SEED, 0)
    return env.sample_tasks(rng, check_int("tasks", count, minimum=1))


@dataclass
class LoadedRLRun:
    """A meta-RL run folder: its resolved config, ``config.json`` and environment."""

    folder: RunFolder
    config: RLConfig
    info: dict[str, Any]

    @classmethod
    def open(cls, run_dir: str | Path) -> LoadedRLRun:
        folder = RunFolder(Path(run_dir))
        if not is_rl_run(folder):
            raise ValueError(f"{str(folder.root)!r} is not a meta-RL run folder (its config.json has no kind 'rl')")
        info = folder.read_config()
        return cls(folder, rl_from_mapping(info["config"]), info)

    def env(self) -> BatchEnv:
        return env_of(self.config)

    def policy(self, weights: str = "final", trusted: Sequence[str] = ()) -> torch.nn.Module:
        """The run's policy with ``weights`` (``final``, an iteration kept with ``save_at``, a path)."""
        path = self.folder.weights(weights)
        return load_weights(self.info["model"], path, source=self.folder.config, trusted=(POLICY_FACTORY, *trusted))

    def test_inner(self, freeze: Sequence[str] | str | None, steps: int | None) -> tuple[InnerLoop, int]:
        """The test-time inner loop (the training's adapted groups, or all but ``freeze``) and its
        number of steps."""
        steps = self.config.test_inner_steps if steps is None else check_int("steps", steps, minimum=0)
        if freeze is None:
            adapt = frozenset(adapted_groups(rl_of(self.config).inner))
        else:
            frozen = [f.strip() for f in freeze.split(",")] if isinstance(freeze, str) else list(freeze)
            frozen = [f for f in frozen if f not in ("", "none")]
            unknown = sorted(set(frozen) - set(PARAMETER_GROUPS))
            if unknown:
                raise ValueError(f"--freeze: unknown policy layers {unknown}; they are {', '.join(PARAMETER_GROUPS)}")
            adapt = frozenset(g for g in PARAMETER_GROUPS if g not in frozen)
        return InnerLoop(max(steps, 1), self.config.test_inner_lr, adapt=adapt), steps

    def lrs(self, steps: int, lr: float | None, later_lr: float | None) -> list[float]:
        first = self.config.test_inner_lr if lr is None else lr
        later = self.config.test_later_lr if later_lr is None else later_lr
        return [first, *[later] * (steps - 1)][:steps]

    def adaptation(
        self,
        policy: torch.nn.Module,
        tasks: np.ndarray,
        inner: InnerLoop,
        lrs: Sequence[float],
        *,
        progress: bool = False,
    ) -> list[list[AdaptationStep]]:
        """The test procedure on ``tasks``, chunk by chunk (module docstring): per chunk the
        :class:`AdaptationStep` after 0 .. ``len(lrs)`` steps."""
        env, c = self.env(), self.config
        chunks = range(0, len(tasks), CHUNK)
        out = []
        for number, start in enumerate(
            progress_bar(chunks, desc="test tasks", unit="chunk", enabled=progress, leave=False)
        ):
            rng, noise = random_streams(TEST_SEED, 1, number)
            out.append(
                adaptation_trajectories(
                    policy,
                    env,
                    tasks[start : start + CHUNK],
                    inner,
                    lrs,
                    c.trajectories,
                    rng,
                    noise,
                    gamma=c.gamma,
                    gae_lambda=c.gae_lambda,
                    normalize_advantages=c.normalize_advantages,
                )
            )
        return out


def evaluate_rl_run(
    run_dir: str | Path,
    *,
    tasks: int | None = None,
    weights: str = "final",
    freeze: Sequence[str] | str | None = None,
    steps: int | None = None,
    lr: float | None = None,
    later_lr: float | None = None,
    trusted: Sequence[str] = (),
    progress: bool = True,
    write: bool = True,
) -> dict[str, Any]:
    """The returns after 0 .. ``steps`` inner steps (module docstring) as the JSON of
    docs/formats.md ("Meta-RL evaluation"); written to ``RUN_DIR/eval/<name>.json`` unless
    ``write=False`` (then ``"json"`` is ``None``). ``tasks`` defaults to the run's ``test_tasks``."""
    run = LoadedRLRun.open(run_dir)
    count = run.config.test_tasks if tasks is None else tasks
    inner, steps = run.test_inner(freeze, steps)
    lrs = run.lrs(steps, lr, later_lr)
    task_array = test_tasks(run.env(), count)
    chunks = run.adaptation(run.policy(weights, trusted), task_array, inner, lrs, progress=progress)
    per_task = np.stack(
        [np.concatenate([c[k].episodes.task_returns().numpy() for c in chunks]) for k in range(steps + 1)]
    )
    frozen = [g for g in PARAMETER_GROUPS if g not in (inner.adapt or PARAMETER_GROUPS)]
    name = f"test_{Path(weights).stem}_{count}tasks_rl-{steps}steps" + (f"_frozen-{'-'.join(frozen)}" if frozen else "")
    result = {
        "returns": [dict(zip(("return", "ci95"), mean_ci95(row)), steps=k) for k, row in enumerate(per_task)],
        "per_task": per_task.tolist(),
        "procedure": {
            "kind": "rl-inner",
            "steps": steps,
            "lrs": lrs,
            "adapted_layers": sorted(inner.adapt or PARAMETER_GROUPS, key=PARAMETER_GROUPS.index),
            "frozen_layers": frozen,
            "trajectories": run.config.trajectories,
        },
        "run_dir": str(run.folder.root),
        "weights": weights,
        "weights_path": str(run.folder.weights(weights)),
        "algorithm": run.config.algorithm,
        "env": run.config.env,
        "horizon": run.config.horizon,
        "seed": run.config.seed,
        "tasks": count,
        "task_set": {"seed": TEST_SEED, "count": count, "sha256": hashlib.sha256(task_array.tobytes()).hexdigest()},
        "ci95_formula": CI95_FORMULA,
        "name": name,
    }
    path = write_json(run.folder.eval_dir / f"{name}.json", result) if write else None
    return {**result, "json": None if path is None else str(path)}


def format_rl_result(result: dict[str, Any]) -> str:
    """One line per number of inner steps: ``after k steps: R +- ci95``."""
    head = f"{result['algorithm']} on {result['env']} ({result['run_dir']}), {result['tasks']} test tasks"
    rows = [f"  after {r['steps']} inner steps: return {r['return']:.2f} +- {r['ci95']:.2f}" for r in result["returns"]]
    return "\n".join([head, *rows])
