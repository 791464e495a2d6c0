"""Meta-training with resumable, atomic checkpoints (``python -m meta train``).

One iteration ``i`` (0-based) is::

    batch = regime.batch(sampler, i)      # a pure function of (seed, i): tasks i*B .. (i+1)*B-1
    optimizer.zero_grad(set_to_none=True)
    metrics = regime.step(model, batch)   # adds the meta-gradient to .grad
    optimizer.step()                      # Adam, the run's meta_lr

After iteration ``k = i + 1``: a metrics row (means over the last ``log_every`` iterations) when
``k`` is a multiple of ``log_every``; validation on the fixed validation tasks when ``k`` is a
multiple of ``val_every`` (and at the last iteration), keeping ``best.safetensors`` (strictly
better validation accuracy); a kept copy ``checkpoints/iter_XXXXXX.safetensors`` when ``k`` is in
``save_at``; and a checkpoint when ``k`` is a multiple of ``checkpoint_every`` (and at the last
iteration, after ``final.safetensors``).

Resuming. The checkpoint (:func:`meta.run.folder.save_checkpoint`: one safetensors file, written
atomically) holds the model, the Adam state, the RNG states (torch, numpy, Python), the sampler
state, the number of metrics rows, the partial metrics window and the best validation result.
Running ``train`` again on the same folder continues from it; since an iteration depends only on
that state and ``i``, the final weights are bitwise those of an uninterrupted run on the same
device and thread count (a run killed at any moment included: it recomputes the iterations since
its last checkpoint; metrics rows written after that checkpoint are dropped and written again).
The rerun may change only :data:`meta.run.config.MUTABLE_FIELDS` (``iterations``, evaluation and
logging options); anything else is refused with the differences listed. Extending a finished run
(``--iterations 20`` then ``40``) validates at iteration 20 too, which an uninterrupted 40-iteration
run would skip unless 20 is a multiple of ``val_every``; only ``best.safetensors`` can differ.

Batch norm (recorded in ``config.json``): ``"batch"`` uses the statistics of the batch given, in
the inner loop and at test time (the original MAML code); a task's support set and query set are
separate forward passes.
"""

from __future__ import annotations

import csv
import io
import math
import platform
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from meta.core.inner import InnerLoop
from meta.core.names import LAYERS
from meta.core.regimes import MetaLearning, make_regime
from meta.data import EpisodeSampler, FewShotSplit
from meta.run.config import (
    META_LEARNERS,
    MUTABLE_FIELDS,
    RunConfig,
    adapted_layers,
    from_mapping,
    incompatible_changes,
    load_run_split,
    resolve,
)
from meta.run.cpu import configure_cpu
from meta.run.evaluate import AccuracySummary, evaluation_tasks, run_procedure, task_accuracies
from meta.run.folder import RUN_FORMAT, RUN_VERSION, RunFolder, remove_stale_temporaries
from meta.run.state import (
    capture_rng,
    load_checkpoint,
    readable_state,
    restore_rng,
    save_checkpoint,
    save_tensors,
    seed_everything,
)
from repsim.io import atomic_write_text, read_json, write_json
from repsim.weights import build_model

MODEL_FACTORY = "meta.core.models:conv4"
BATCH_NORM_SEMANTICS = {
    "batch": "batch statistics of the batch given, in the inner loop and at test time (original MAML code);"
    " a task's support set and query set are separate forward passes",
    "none": "no normalisation",
}


class IncompatibleRunError(ValueError):
    """A rerun whose configuration differs from the stored run in more than what may change."""


# --------------------------------------------------------------------------- set-up


def model_spec(config: RunConfig, train_split: FewShotSplit) -> dict[str, Any]:
    """The factory spec of the run's conv4 (docs/formats.md); multiclass heads cover every
    training class."""
    channels, size, _ = train_split.image_shape
    kwargs: dict[str, Any] = {
        "ways": train_split.n_classes if config.algorithm == "multiclass" else config.ways,
        "in_channels": channels,
        "variant": config.variant,
        "image_size": size,
        "batch_norm": config.batch_norm,
    }
    if config.filters is not None:
        kwargs["filters"] = config.filters
    return {"factory": MODEL_FACTORY, "kwargs": kwargs}


def make_run_regime(config: RunConfig) -> Any:
    """The training regime of a resolved config (``freeze_inner`` removes layers from MAML's and
    first-order MAML's inner loop)."""
    if config.algorithm in META_LEARNERS:
        adapt = adapted_layers(config.algorithm, config.freeze_inner)
        inner = InnerLoop(
            config.inner_steps,
            config.inner_lr,
            adapt=None if adapt == LAYERS else frozenset(adapt),
            first_order=config.algorithm == "fomaml",
            adapt_norm=config.adapt_norm,
        )
        return MetaLearning(inner, config.meta_batch_size, name=config.algorithm, path=config.path, chunk=config.chunk)
    return make_regime(
        config.algorithm,
        meta_batch_size=config.meta_batch_size,
        batch_size=config.batch_size,
        seed=config.seed,
        path=config.path,
    )


def run_info(
    config: RunConfig, preset: Any, spec: Mapping[str, Any], regime: Any, splits: Mapping[str, FewShotSplit], cpu: Any
) -> dict[str, Any]:
    """Everything ``config.json`` records (docs/formats.md)."""
    procedure = run_procedure(config)
    trained = adapted_layers(config.algorithm, config.freeze_inner) if config.algorithm in META_LEARNERS else ()
    return {
        "format": RUN_FORMAT,
        "version": RUN_VERSION,
        "config": config.as_dict(),
        "preset": {"dataset": preset.dataset, "ways": preset.ways, "shots": preset.shots},
        "model": dict(spec),
        "layers": list(LAYERS),
        "adapted_layers": list(trained),
        "test_procedure": procedure.describe(),
        "batch_norm": config.batch_norm,
        "batch_norm_semantics": BATCH_NORM_SEMANTICS[config.batch_norm],
        "forward_batch": "whole",
        "regime": regime.config(),
        "data": {
            name: {
                "name": s.name,
                "classes": s.n_classes,
                "per_class": s.n_per_class,
                "image_shape": list(s.image_shape),
            }
            for name, s in splits.items()
        },
        "software": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__},
        "cpu": cpu.as_dict() if hasattr(cpu, "as_dict") else cpu,
    }


def _check_rerun(folder: RunFolder, config: RunConfig) -> None:
    """Refuse a folder that is not a run, or a rerun that changes what may not change."""
    if not folder.config.is_file():
        if folder.root.is_dir() and any(not p.name.startswith(".") for p in folder.root.iterdir()):
            raise IncompatibleRunError(
                f"{str(folder.root)!r} is not empty and is not a training run folder (no config.json)"
            )
        return
    stored = from_mapping(folder.read_config()["config"])
    changes = incompatible_changes(stored, config)
    if changes:
        raise IncompatibleRunError(
            f"{str(folder.root)!r} holds a run with a different configuration; only {sorted(MUTABLE_FIELDS)} may"
            f" change on a rerun. Differences: {'; '.join(changes)}. Use another --out."
        )


# --------------------------------------------------------------------------- metrics


@dataclass
class MetricsWindow:
    """Sums of the training metrics since the last metrics row (resumable: plain floats)."""

    count: int = 0
    sums: dict[str, float] = field(default_factory=dict)

    def add(self, metrics: Mapping[str, float], seconds: float) -> None:
        self.count += 1
        for name, value in {**metrics, "seconds": seconds}.items():
            self.sums[name] = self.sums.get(name, 0.0) + float(value)

    def row(self, iteration: int) -> dict[str, Any]:
        """The means as a ``train`` row (``None`` where not finite), and a fresh window."""
        means = {k: v / self.count for k, v in self.sums.items()}
        row = {
            "iteration": iteration,
            "split": "train",
            **{k: v if math.isfinite(v) else None for k, v in means.items()},
        }
        self.count, self.sums = 0, {}
        return row


class MetricsLog:
    """Rows of training and validation metrics, written to ``metrics.csv`` and ``metrics.json``
    (atomically). Accuracies are fractions; ``seconds`` is wall time per iteration."""

    def __init__(self, folder: RunFolder, rows: list[dict[str, Any]] | None = None) -> None:
        self.folder, self.rows = folder, list(rows or [])

    @classmethod
    def resume(cls, folder: RunFolder, count: int) -> MetricsLog:
        """The first ``count`` rows of ``metrics.json`` (rows after the checkpoint are dropped)."""
        rows = read_json(folder.metrics_json)["rows"] if folder.metrics_json.is_file() else []
        if len(rows) < count:
            raise ValueError(f"{str(folder.metrics_json)!r} has {len(rows)} rows, the checkpoint expects {count}")
        return cls(folder, rows[:count])

    def write(self) -> None:
        columns = list(dict.fromkeys(k for row in self.rows for k in row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.folder.metrics_csv, buffer.getvalue())
        write_json(self.folder.metrics_json, {"columns": columns, "rows": self.rows})


# --------------------------------------------------------------------------- training


@dataclass(frozen=True)
class TrainResult:
    """What a call of :func:`train` did: the run folder, the iteration reached, the iteration it
    started from (0 for a new run), the final weights' path and the best validation result
    (``{"iteration", "accuracy"}``, accuracy a fraction; ``None`` before any validation)."""

    run_dir: str
    iterations: int
    resumed_from: int
    final: str
    best: dict[str, Any] | None


@dataclass
class TrainState:
    """What a checkpoint restores besides the model and the optimizer."""

    iteration: int = 0
    window: MetricsWindow = field(default_factory=MetricsWindow)
    best: dict[str, Any] | None = None


def _to_device(batch: Any, device: torch.device) -> Any:
    if hasattr(batch, "to"):
        return batch.to(device)
    return tuple(t.to(device) for t in batch)


class Trainer:
    """The training loop of one run folder (see the module docstring); :func:`train` drives it."""

    def __init__(
        self, config: RunConfig, out_dir: str | Path, splits: Mapping[str, FewShotSplit] | None = None
    ) -> None:
        self.config, self.preset = resolve(config)
        self.folder = RunFolder(Path(out_dir))
        _check_rerun(self.folder, self.config)
        c = self.config
        cpu = configure_cpu(threads=c.threads or None)
        self.device = torch.device(c.device)
        self.splits = (
            dict(splits) if splits else {s: load_run_split(c, s, progress=c.progress) for s in ("train", "val")}
        )
        self.sampler = EpisodeSampler(self.splits["train"], c.ways, c.shots, c.queries, seed=c.seed)
        self.val_tasks = evaluation_tasks(c, self.splits["val"], c.val_tasks)
        self.regime = make_run_regime(c)
        self.spec = model_spec(c, self.splits["train"])
        seed_everything(c.seed)
        self.model: nn.Module = build_model(self.spec["factory"], self.spec["kwargs"]).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=c.meta_lr)
        self.procedure = run_procedure(c)
        self.info = run_info(c, self.preset, self.spec, self.regime, self.splits, cpu)
        self.state = TrainState()
        self.metrics = MetricsLog(self.folder)

    # ------------------------------------------------------------------ checkpoint

    def resume(self) -> int:
        """Load the folder's checkpoint if there is one; returns the iteration to start from."""
        if not self.folder.checkpoint.is_file():
            return 0
        saved = load_checkpoint(self.folder.checkpoint)
        if saved["iteration"] > self.config.iterations:
            raise ValueError(
                f"{str(self.folder.root)!r} is already at iteration {saved['iteration']}, beyond --iterations"
                f" {self.config.iterations}"
            )
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.sampler.load_state_dict(saved["sampler"])
        restore_rng(saved["rng"])
        self.state = TrainState(saved["iteration"], MetricsWindow(**saved["window"]), saved["best"])
        self.metrics = MetricsLog.resume(self.folder, saved["metrics_rows"])
        return saved["iteration"]

    def checkpoint(self) -> None:
        """Metrics first, then the checkpoint (the commit point), then its readable copy."""
        self.metrics.write()
        state = {
            "iteration": self.state.iteration,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "sampler": self.sampler.state_dict(),
            "rng": capture_rng(),
            "metrics_rows": len(self.metrics.rows),
            "window": {"count": self.state.window.count, "sums": self.state.window.sums},
            "best": self.state.best,
        }
        save_checkpoint(self.folder.checkpoint, state)
        write_json(
            self.folder.checkpoint_info,
            readable_state({k: v for k, v in state.items() if k != "rng"})
            | {"rng": "in checkpoint.safetensors metadata"},
        )

    def save_weights(self, path: Path) -> None:
        save_tensors(path, self.model.state_dict(), {"iteration": str(self.state.iteration)})

    # ------------------------------------------------------------------ loop

    def step(self, i: int) -> dict[str, float]:
        """Iteration ``i`` (0-based): one meta-update."""
        batch = _to_device(self.regime.batch(self.sampler, i), self.device)
        self.optimizer.zero_grad(set_to_none=True)
        metrics = self.regime.step(self.model, batch)
        self.optimizer.step()
        if hasattr(self.regime, "meta_batch_size"):
            self.sampler.next_index = (i + 1) * self.regime.meta_batch_size
        return metrics

    def validate(self) -> dict[str, Any]:
        """Accuracy on the fixed validation tasks; updates ``best.safetensors``."""
        accuracies = task_accuracies(self.model, self.val_tasks, self.procedure, device=self.device, progress=False)
        summary = AccuracySummary.of(accuracies)
        k = self.state.iteration
        row = {"iteration": k, "split": "val", "accuracy": summary.accuracy / 100, "ci95": summary.ci95 / 100}
        if self.state.best is None or row["accuracy"] > self.state.best["accuracy"]:
            self.save_weights(self.folder.best)
            self.state.best = {"iteration": k, "accuracy": row["accuracy"]}
        return row

    def run(self) -> TrainResult:
        """Train to ``config.iterations`` from the checkpoint (or from scratch)."""
        self.folder.root.mkdir(parents=True, exist_ok=True)
        for folder in (self.folder.root, self.folder.root / "checkpoints"):
            remove_stale_temporaries(folder)
        start = self.resume()
        write_json(self.folder.config, self.info)
        c = self.config
        bar = tqdm(
            total=c.iterations,
            initial=start,
            desc=f"{c.algorithm} {c.ways}-way {c.shots}-shot",
            unit="it",
            disable=not c.progress,
        )
        postfix: dict[str, str] = {}
        for i in range(start, c.iterations):
            started = time.perf_counter()
            metrics = self.step(i)
            self.state.window.add(metrics, time.perf_counter() - started)
            k = self.state.iteration = i + 1
            last = k == c.iterations
            if k % c.log_every == 0 or last:
                row = self.state.window.row(k)
                self.metrics.rows.append(row)
                postfix.update({n: f"{row[n]:.3f}" for n in ("loss", "accuracy") if row.get(n) is not None})
            if k % c.val_every == 0 or last:
                row = self.validate()
                self.metrics.rows.append(row)
                postfix["val"] = f"{row['accuracy']:.3f}"
            if k in c.save_at:
                self.save_weights(self.folder.saved_at(k))
            if last:
                self.save_weights(self.folder.final)
            if k % c.checkpoint_every == 0 or last:
                self.checkpoint()
            bar.set_postfix(postfix, refresh=False)
            bar.update()
        bar.close()
        if not self.folder.final.is_file():  # a finished run whose final weights were removed
            self.save_weights(self.folder.final)
        return TrainResult(str(self.folder.root), self.state.iteration, start, str(self.folder.final), self.state.best)


def train(config: RunConfig, out_dir: str | Path, *, splits: Mapping[str, FewShotSplit] | None = None) -> TrainResult:
    """Train (or resume) the run in ``out_dir`` to ``config.iterations``.

    Args:
        config: the run's configuration (``None`` hyperparameters: the paper preset's).
        out_dir: the run folder (created; an existing run in it is resumed if compatible).
        splits: ``{"train": FewShotSplit, "val": FewShotSplit}`` to use instead of loading
            ``config.dataset`` (tests, custom data; evaluation then needs ``data=`` too).

    Returns:
        The :class:`TrainResult`.
    """
    return Trainer(config, out_dir, splits).run()
