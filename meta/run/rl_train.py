"""Meta-training a policy with MAML-TRPO or ANIL-TRPO (``python -m meta train --algorithm
maml-trpo --env ...``) into a run folder, with the classifier's folder format and resume rules.

One meta-iteration ``i`` (0-based) is::

    rng, noise = random_streams(seed, i)      # a pure function of (seed, i)
    tasks = env.sample_tasks(rng, meta_batch_size)
    metrics = meta_iteration(policy, env, tasks, rl, rng, noise)   # meta.rl.metalearner

so an iteration depends only on the policy's weights and ``i``. The loop, checkpoints and resume
are the classifier's (:class:`meta.run.train.Trainer`, which :class:`RLTrainer` extends): one
atomic ``checkpoint.safetensors`` (the policy, the RNG states, the metrics rows and window; the
optimizer and sampler entries record TRPO, which keeps no state, and the task stream) every
``checkpoint_every`` meta-iterations and at the end, the one before kept as
``checkpoint.prev.safetensors``; ``final.safetensors``; ``checkpoints/iter_XXXXXX.safetensors``
for ``save_at``; ``metrics.csv``/``metrics.json`` with one row per ``log_every`` meta-iterations
(``return_before``, ``return_after``, ``loss_before``, ``loss_after``, ``kl``, ``step_fraction``,
``sampling_s``, ``inner_s``, ``trpo_s``, ``seconds``). Rerunning ``train`` on the folder resumes
from the checkpoint and ends bit for bit where an uninterrupted run ends (same threads); a rerun
may change only :data:`meta.run.rl_config.RL_MUTABLE_FIELDS`. The folder is locked while
training. ``config.json`` says ``"kind": "rl"`` and records every hyperparameter (docs/formats.md,
"Meta-RL run folder").

Imports: :mod:`meta.core` (inner-loop settings), :mod:`meta.rl`, :mod:`meta.run` and
:mod:`repsim` (weights, files, progress).
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from meta.rl.envs import BatchEnv, make_env
from meta.rl.inner import adapted_groups
from meta.rl.metalearner import MetaRL, describe, inner_loop_of, meta_iteration
from meta.rl.policy import LAYERS, PARAMETER_GROUPS, POLICY_FACTORY
from meta.rl.sampler import random_streams
from meta.rl.trpo import TRPO
from meta.run.cpu import configure_cpu
from meta.run.folder import RUN_FORMAT, RUN_VERSION, RunFolder
from meta.run.metrics import MetricsLog
from meta.run.recipe import IncompatibleRunError, check_rerun
from meta.run.rl_config import RL_MUTABLE_FIELDS, RLConfig, incompatible_rl_changes, resolve_rl, rl_from_mapping
from meta.run.state import seed_everything
from meta.run.train import Trainer, TrainResult, TrainState, run_locked
from repsim.progress import progress_bar
from repsim.weights import build_model

__all__ = ["RLTrainer", "env_of", "policy_spec", "rl_of", "train_rl"]


def env_of(config: RLConfig) -> BatchEnv:
    """The run's batched environment (HalfCheetah with the run's control-cost weight)."""
    options = {} if config.env == "2d-navigation" else {"ctrl_cost_weight": config.ctrl_cost_weight}
    return make_env(config.env, config.horizon, **options)


def rl_of(config: RLConfig) -> MetaRL:
    """The meta-iteration's settings of a resolved config."""
    inner = inner_loop_of(config.algorithm, config.inner_lr, config.freeze_inner, config.first_order)
    trpo = TRPO(config.max_kl, config.cg_iters, config.cg_damping, config.ls_steps, config.ls_backtrack)
    return MetaRL(inner, config.trajectories, config.gamma, config.gae_lambda, config.normalize_advantages, trpo)


def policy_spec(config: RLConfig, env: BatchEnv) -> dict[str, Any]:
    """The model spec of the run's policy (docs/formats.md, "Model spec")."""
    kwargs = {
        "observation_size": env.observation_size,
        "action_size": env.action_size,
        "hidden": config.hidden,
        "nonlinearity": config.nonlinearity,
    }
    return {"factory": POLICY_FACTORY, "kwargs": kwargs}


class TaskStream:
    """The training tasks: meta-iteration ``i`` draws its ``meta_batch_size`` tasks from
    ``random_streams(seed, i)`` (nothing to carry between iterations; the state names the stream
    so that a checkpoint of another run is refused)."""

    def __init__(self, env: BatchEnv, seed: int, meta_batch_size: int) -> None:
        self.env, self.seed, self.meta_batch_size = env, seed, meta_batch_size

    def state_dict(self) -> dict[str, Any]:
        return {"env": self.env.name, "seed": self.seed, "meta_batch_size": self.meta_batch_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state != self.state_dict():
            raise ValueError(f"the checkpoint's task stream {state} is not this run's {self.state_dict()}")

    def tasks(self, rng: np.random.Generator) -> np.ndarray:
        return self.env.sample_tasks(rng, self.meta_batch_size)


class TRPOState:
    """TRPO keeps no state between meta-iterations: the checkpoint's ``optimizer`` entry says so."""

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": "trpo"}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state != self.state_dict():
            raise ValueError(f"the checkpoint's optimizer state {state} is not TRPO's")


def check_rl_rerun(folder: RunFolder, config: RLConfig) -> None:
    """Refuse a folder that is not a run, a classifier run, or a rerun that changes what may not
    change (:data:`RL_MUTABLE_FIELDS`)."""
    if not folder.config.is_file():
        check_rerun(folder, config)  # a file, or a non-empty folder that is no run: refused
        return
    info = folder.read_config()
    if info.get("kind") != "rl":
        raise IncompatibleRunError(f"{str(folder.root)!r} holds a few-shot classifier run, not a meta-RL run")
    changes = incompatible_rl_changes(rl_from_mapping(info["config"]), config)
    if changes:
        raise IncompatibleRunError(
            f"{str(folder.root)!r} holds a run with a different configuration; only {sorted(RL_MUTABLE_FIELDS)} may"
            f" change on a rerun. Differences: {'; '.join(changes)}. Use another --out."
        )


def software() -> dict[str, str]:
    """Versions that decide an RL run's numbers (mujoco's too, where it is loaded)."""
    versions = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    try:
        import mujoco
    except ModuleNotFoundError:
        return versions
    return {**versions, "mujoco": mujoco.__version__}


class RLTrainer(Trainer):
    """The meta-RL training loop of one run folder (module docstring); :func:`train_rl` drives it.
    Resuming, checkpoints and ``config.json``'s segments are :class:`meta.run.train.Trainer`'s."""

    def __init__(self, config: RLConfig, out_dir: str | Path) -> None:
        self.config = c = resolve_rl(config)
        self.folder = RunFolder(Path(out_dir))
        check_rl_rerun(self.folder, c)
        self.cpu = configure_cpu(threads=c.threads)
        self.env = env_of(c)
        self.rl = rl_of(c)
        self.sampler = TaskStream(self.env, c.seed, c.meta_batch_size)
        self.spec = policy_spec(c, self.env)
        seed_everything(c.seed)
        self.model = build_model(self.spec["factory"], self.spec["kwargs"], source=None)
        self.optimizer = TRPOState()
        self.state = TrainState()
        self.metrics = MetricsLog(self.folder)

    def record_info(self) -> dict[str, Any]:
        """``config.json`` (docs/formats.md, "Meta-RL run folder"), without the segments."""
        c = self.config
        return {
            "format": RUN_FORMAT,
            "version": RUN_VERSION,
            "kind": "rl",
            "config": c.as_dict(),
            "model": self.spec,
            "layers": list(LAYERS),
            "parameter_groups": list(PARAMETER_GROUPS),
            "adapted_layers": list(adapted_groups(self.rl.inner)),
            "env": {
                "name": self.env.name,
                "horizon": self.env.horizon,
                "observation_size": self.env.observation_size,
                "action_size": self.env.action_size,
            },
            "meta_rl": describe(self.rl),
            "test_procedure": {
                "steps": c.test_inner_steps,
                "lrs": [c.test_inner_lr, *[c.test_later_lr] * max(c.test_inner_steps - 1, 0)],
                "tasks": c.test_tasks,
            },
            "software": software(),
            "cpu": self.cpu.as_dict(),
        }

    def step(self, i: int) -> dict[str, float]:
        """Meta-iteration ``i`` (0-based)."""
        rng, noise = random_streams(self.config.seed, i)
        return meta_iteration(self.model, self.env, self.sampler.tasks(rng), self.rl, rng, noise)

    def _iterate(self, start: int) -> None:
        """Meta-iterations ``start`` .. ``iterations - 1``, each followed by its row, kept weights
        and checkpoint where due (module docstring)."""
        c = self.config
        with progress_bar(
            total=c.iterations, initial=start, desc=f"{c.algorithm} {c.env}", unit="it", enabled=c.progress
        ) as bar:
            for i in range(start, c.iterations):
                row = self._after(i, self._timed_step(i))
                if row is not None:
                    bar.set_postfix({"before": f"{row['return_before']:.1f}", "after": f"{row['return_after']:.1f}"})
                bar.update()

    def _timed_step(self, i: int) -> dict[str, float]:
        started = time.perf_counter()
        metrics = self.step(i)
        self.state.window.add(metrics, time.perf_counter() - started)
        return metrics

    def _after(self, i: int, metrics: dict[str, float]) -> dict[str, Any] | None:
        """The row (when due), kept weights and checkpoint after meta-iteration ``i``."""
        c = self.config
        k = self.state.iteration = i + 1
        due = {"row": k % c.log_every == 0, "checkpoint": k % c.checkpoint_every == 0, "last": k == c.iterations}
        row = self.state.window.row(k) if due["row"] or due["last"] else None
        if row is not None:
            self.metrics.rows.append(row)
        for path in [self.folder.saved_at(k)] * (k in c.save_at) + [self.folder.final] * due["last"]:
            self.save_weights(path)
        if due["checkpoint"] or due["last"]:
            self.checkpoint()
        return row


def train_rl(config: RLConfig, out_dir: str | Path) -> TrainResult:
    """Train (or resume) the meta-RL run in ``out_dir`` to ``config.iterations`` (module
    docstring). Bad settings are refused before the folder is touched; the folder is locked
    while training (:func:`meta.run.train.run_locked`)."""
    resolved = resolve_rl(config)
    return run_locked(out_dir, lambda out: RLTrainer(resolved, out))
