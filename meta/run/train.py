"""Meta-training with resumable, atomic checkpoints (``python -m meta train``).

One iteration ``i`` (0-based) is::

    batch = regime.batch(sampler, i)      # a pure function of (seed, i): tasks i*B .. (i+1)*B-1
    optimizer.zero_grad(set_to_none=True)
    metrics = regime.step(model, batch, ranks)   # adds the meta-gradient to .grad
    clip_meta_gradient(model, grad_clip)  # each entry to [-grad_clip, grad_clip] (0: none)
    optimizer.step()                      # Adam, the run's meta_lr

After iteration ``k = i + 1``: a metrics row (means over the last ``log_every`` iterations) when
``k`` is a multiple of ``log_every``; validation on the fixed validation tasks when ``k`` is a
multiple of ``val_every`` (and at the last iteration), keeping ``best.safetensors`` (strictly
better validation accuracy); a kept copy ``checkpoints/iter_XXXXXX.safetensors`` when ``k`` is in
``save_at``; and a checkpoint when ``k`` is a multiple of ``checkpoint_every`` (and at the last
iteration, after ``final.safetensors``).

Resuming. The checkpoint (:func:`meta.run.state.save_checkpoint`: one safetensors file, written
atomically) holds the model, the Adam state, the RNG states (torch, numpy, Python), the sampler
state, the number of metrics rows, the partial metrics window and the best validation result.
The two latest checkpoints are kept (``checkpoint.safetensors`` and
``checkpoint.prev.safetensors``): a damaged latest one falls back to the one before, with a
warning. Running ``train`` again on the same folder continues from it; since an iteration depends
only on that state and ``i``, the final weights are bitwise those of an uninterrupted run with the
same compute settings (a run killed at any moment included: it recomputes the iterations since
its last checkpoint; metrics rows written after that checkpoint are dropped and written again).
The rerun may change only :data:`meta.run.config.MUTABLE_FIELDS` (``iterations``, evaluation and
logging options, and the compute settings, which are recorded as a new segment:
:mod:`meta.run.recipe`); anything else is refused with the differences listed. A rerun that
computes nothing leaves the folder as it is. Extending a finished run (``--iterations 20`` then
``40``) validates at iteration 20 too, which an uninterrupted 40-iteration run would skip unless 20
is a multiple of ``val_every``; only ``best.safetensors`` can differ.

One writer: the run folder is locked (:class:`meta.run.lock.FolderLock`) for as long as ``train``
runs, so a second ``train`` (or ``snapshot``) on it is refused at once, naming the holder.

Ranks (``torchrun --nproc-per-node W -m meta train ...``, :mod:`meta.run.distributed`): the
ranks share each meta-batch's parts and the validation tasks, and every rank takes the same Adam
step, bit for bit the one of one process (:mod:`meta.core.reduction`). Rank 0 alone holds the
lock, reads the checkpoint (and sends it to the others) and writes every file; the world size is
a compute setting of ``config.json``'s segments, and ``metrics.csv``'s ``comm_seconds`` is the
time per iteration spent in collectives (0 in one process).

Batch norm (recorded in ``config.json``): ``"batch"`` uses the statistics of the batch given, in
the inner loop and at test time (the original MAML code); a task's support set and query set are
separate forward passes.

Imports: :mod:`meta.core`, :mod:`meta.data`, :mod:`meta.run` and :mod:`repsim` (weights, files, progress).
"""

from __future__ import annotations

import shutil
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from meta.data import EpisodeSampler, FewShotSplit
from meta.run.config import RunConfig, load_run_split, resolve
from meta.run.cpu import configure_cpu
from meta.run.distributed import ONE, Single, ranks_for
from meta.run.evaluate import evaluation_tasks, run_procedure, task_accuracies
from meta.run.folder import RunFolder, remove_stale_temporaries
from meta.run.lock import LOCK_NAME, FolderLock
from meta.run.metrics import MetricsLog, MetricsWindow
from meta.run.recipe import (
    IncompatibleRunError,
    changed_compute,
    check_rerun,
    compute_segment,
    make_run_regime,
    model_spec,
    run_info,
    segments_after,
)
from meta.run.results import AccuracySummary
from meta.run.state import (
    CheckpointError,
    capture_rng,
    keep_copy,
    load_checkpoint,
    readable_state,
    restore_rng,
    save_checkpoint,
    save_tensors,
    seed_everything,
)
from repsim.devices import check_device
from repsim.io import write_json
from repsim.progress import progress_bar
from repsim.weights import build_model

__all__ = ["IncompatibleRunError", "TrainResult", "Trainer", "run_locked", "train"]


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


#: The fields of a training checkpoint and their types (an edited one is refused by name).
CHECKPOINT_FIELDS: dict[str, type | tuple[type, ...]] = {
    "iteration": int,
    "model": dict,
    "optimizer": dict,
    "sampler": dict,
    "rng": dict,
    "metrics_rows": int,
    "window": dict,
    "best": (dict, type(None)),
}


def clip_meta_gradient(model: nn.Module, bound: float) -> None:
    """Clip every entry of the meta-gradient (``.grad``) to ``[-bound, bound]`` in place, as the
    reference clips miniImageNet's (``tf.clip_by_value(grad, -10, 10)``, cbfinn/maml ``maml.py``
    lines 147-148); ``bound == 0``: no clipping."""
    if bound:
        for p in model.parameters():
            if p.grad is not None:
                p.grad.clamp_(-bound, bound)


def _to_device(batch: Any, device: torch.device) -> Any:
    if hasattr(batch, "to"):
        return batch.to(device)
    return tuple(t.to(device) for t in batch)


class Trainer:
    """The training loop of one run folder (see the module docstring); :func:`train` drives it.
    ``ranks``: the processes sharing each iteration (default: this one alone)."""

    ranks: Single = ONE

    def __init__(
        self,
        config: RunConfig,
        out_dir: str | Path,
        splits: Mapping[str, FewShotSplit] | None = None,
        ranks: Single = ONE,
    ) -> None:
        self.config, self.defaults = resolve(config)
        self.folder = RunFolder(Path(out_dir))
        self.ranks = ranks
        if ranks.rank == 0:
            check_rerun(self.folder, self.config)
        ranks.check_same(self.config.as_dict(), "settings")
        c = self.config
        self.device = check_device(c.device)
        self.cpu = configure_cpu(threads=c.threads or None)
        self.splits = (
            dict(splits) if splits else {s: load_run_split(c, s, progress=c.progress) for s in ("train", "val")}
        )
        self.sampler = EpisodeSampler(self.splits["train"], c.ways, c.shots, c.queries, seed=c.seed)
        self.val_tasks = evaluation_tasks(c, self.splits["val"], c.val_tasks)
        self.regime = make_run_regime(c)
        self.spec = model_spec(c, self.splits["train"])
        seed_everything(c.seed)
        self.model: nn.Module = build_model(self.spec["factory"], self.spec["kwargs"], source=None).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=c.meta_lr)
        self.procedure = run_procedure(c)
        self.state = TrainState()
        self.metrics = MetricsLog(self.folder)

    # ------------------------------------------------------------------ checkpoint

    def resume(self) -> int:
        """Load the folder's checkpoint (the one before it, with a warning, when the latest is
        missing or damaged); returns the iteration to start from (0 without a checkpoint)."""
        saved = self.ranks.from_first(self._load_latest_checkpoint)
        if saved is None:
            return 0
        if saved["iteration"] > self.config.iterations:
            raise ValueError(
                f"{str(self.folder.root)!r} is already at iteration {saved['iteration']}, beyond --iterations"
                f" {self.config.iterations}"
            )
        try:
            self.model.load_state_dict(saved["model"])
            self.optimizer.load_state_dict(saved["optimizer"])
            self.sampler.load_state_dict(saved["sampler"])
            restore_rng(saved["rng"])
            self.state = TrainState(saved["iteration"], MetricsWindow(**saved["window"]), saved["best"])
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise CheckpointError(
                f"the checkpoint in {str(self.folder.root)!r} does not fit this run: {error}"
            ) from None
        if self.ranks.rank == 0:
            self.metrics = MetricsLog.resume(self.folder, saved["metrics_rows"])
        return saved["iteration"]

    def _load_latest_checkpoint(self) -> dict[str, Any] | None:
        """The latest readable checkpoint of the two kept, or ``None`` when there is none."""
        latest, previous = self.folder.checkpoint, self.folder.previous_checkpoint
        problem = "it is missing"
        if latest.is_file():
            try:
                return load_checkpoint(latest, CHECKPOINT_FIELDS)
            except CheckpointError as error:
                problem = str(error)
        if not previous.is_file():
            if latest.is_file():
                raise CheckpointError(f"{problem}; there is no earlier checkpoint to fall back to") from None
            return None
        warnings.warn(
            f"the latest checkpoint {str(latest)!r} cannot be used ({problem}); resuming from the one before,"
            f" {str(previous)!r}",
            stacklevel=2,
        )
        return load_checkpoint(previous, CHECKPOINT_FIELDS)

    def checkpoint(self) -> None:
        """Metrics first, then the checkpoint (the commit point; the previous one is kept as
        ``checkpoint.prev.safetensors``, so that at every moment the folder holds a complete
        latest checkpoint), then its readable copy. Rank 0 alone writes."""
        if self.ranks.rank != 0:
            return
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
        if self.folder.checkpoint.is_file():
            keep_copy(self.folder.checkpoint, self.folder.previous_checkpoint)
        save_checkpoint(self.folder.checkpoint, state)
        write_json(
            self.folder.checkpoint_info,
            readable_state({k: v for k, v in state.items() if k != "rng"})
            | {"rng": "in checkpoint.safetensors metadata"},
        )

    def save_weights(self, path: Path) -> None:
        """The model's weights (rank 0 alone writes)."""
        if self.ranks.rank != 0:
            return
        save_tensors(path, self.model.state_dict(), {"iteration": str(self.state.iteration)})

    def write_record(self, start: int) -> None:
        """Write ``config.json`` with the run's segments, unless the run is finished and nothing
        it records would change (a finished run is left as it is). Rank 0 alone writes."""
        if self.ranks.rank != 0:
            return
        stored = self.folder.read_config() if self.folder.config.is_file() else None
        segment = compute_segment(self.config, self.cpu, start, self.ranks.world)
        finished = start >= self.config.iterations
        info = self.record_info()
        if stored is not None and finished:
            return
        if stored is not None and changed_compute(stored, segment):
            warnings.warn(
                f"{str(self.folder.root)!r}: iterations from {start} on are computed with other settings"
                f" ({'; '.join(changed_compute(stored, segment))}); recorded as a new segment in config.json",
                stacklevel=2,
            )
        write_json(self.folder.config, {**info, "segments": segments_after(stored, segment)})

    def record_info(self) -> dict[str, Any]:
        """What ``config.json`` records besides the segments (:func:`meta.run.recipe.run_info`)."""
        return run_info(self.config, self.defaults, self.spec, self.regime, self.splits, self.cpu)

    # ------------------------------------------------------------------ loop

    def step(self, i: int) -> dict[str, float]:
        """Iteration ``i`` (0-based): one meta-update."""
        batch = _to_device(self.regime.batch(self.sampler, i), self.device)
        self.optimizer.zero_grad(set_to_none=True)
        metrics = self.regime.step(self.model, batch, self.ranks)
        clip_meta_gradient(self.model, self.config.grad_clip)
        self.optimizer.step()
        if hasattr(self.regime, "meta_batch_size"):
            self.sampler.next_index = (i + 1) * self.regime.meta_batch_size
        return metrics

    def validate(self) -> dict[str, Any]:
        """Accuracy on the fixed validation tasks; updates ``best.safetensors``."""
        accuracies = task_accuracies(
            self.model, self.val_tasks, self.procedure, device=self.device, progress=False, ranks=self.ranks
        )
        summary = AccuracySummary.of(accuracies)
        k = self.state.iteration
        row = {"iteration": k, "split": "val", "accuracy": summary.accuracy / 100, "ci95": summary.ci95 / 100}
        if self.state.best is None or row["accuracy"] > self.state.best["accuracy"]:
            self.save_weights(self.folder.best)
            self.state.best = {"iteration": k, "accuracy": row["accuracy"]}
        return row

    def run(self) -> TrainResult:
        """Train to ``config.iterations`` from the checkpoint (or from scratch). The caller holds
        the folder's lock (:func:`train` does)."""
        if self.ranks.rank == 0:
            for folder in (self.folder.root, self.folder.root / "checkpoints"):
                remove_stale_temporaries(folder)
        start = self.resume()
        self.write_record(start)
        self._iterate(start)
        if not self.folder.final.is_file():  # a finished run whose final weights were removed
            self.save_weights(self.folder.final)
        return TrainResult(str(self.folder.root), self.state.iteration, start, str(self.folder.final), self.state.best)

    def _iterate(self, start: int) -> None:
        """Iterations ``start`` .. ``iterations - 1`` with their logging, validation, kept
        weights and checkpoints (module docstring)."""
        c = self.config
        bar = progress_bar(
            total=c.iterations,
            initial=start,
            desc=f"{c.algorithm} {c.ways}-way {c.shots}-shot",
            unit="it",
            enabled=c.progress and self.ranks.rank == 0,
        )
        postfix: dict[str, str] = {}
        for i in range(start, c.iterations):
            self.ranks.take_seconds()  # validation's collectives are not an iteration's
            started = time.perf_counter()
            metrics = self.step(i)
            seconds = time.perf_counter() - started
            self.state.window.add({**metrics, "comm_seconds": self.ranks.take_seconds()}, seconds)
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


def train(
    config: RunConfig,
    out_dir: str | Path,
    *,
    splits: Mapping[str, FewShotSplit] | None = None,
    distributed: bool = False,
) -> TrainResult:
    """Train (or resume) the run in ``out_dir`` to ``config.iterations``.

    Args:
        config: the run's configuration (``None`` hyperparameters: the paper defaults').
        out_dir: the run folder (created; an existing run in it is resumed if compatible).
        splits: ``{"train": FewShotSplit, "val": FewShotSplit}`` to use instead of loading
            ``config.dataset`` (tests, custom data; evaluation then needs ``data=`` too).
        distributed: share every iteration among the ranks of the initialised default
            ``torch.distributed`` process group (every rank calls this with the same arguments;
            the module docstring).

    Returns:
        The :class:`TrainResult`.

    The folder is locked (:class:`meta.run.lock.FolderLock`) before anything in it is read, so
    that a second writer is refused naming this process; a folder this call created is removed
    again if the run cannot start (bad settings, missing data), leaving nothing behind.
    """
    resolve(config)  # bad settings are refused before the folder is touched
    ranks = ranks_for(distributed)
    return run_locked(out_dir, lambda out: Trainer(config, out, splits, ranks), ranks)


def run_locked(out_dir: str | Path, make_trainer: Callable[[Path], Trainer], ranks: Single = ONE) -> TrainResult:
    """``make_trainer(folder).run()`` holding the folder's lock (:func:`train`; the meta-RL trainer
    of :mod:`meta.run.rl_train` too); of several ``ranks``, rank 0 alone takes it. A folder this
    call created is removed again if the run cannot start, leaving nothing behind."""
    if ranks.rank != 0:
        return make_trainer(Path(out_dir)).run()
    out = Path(out_dir)
    created = not out.exists()
    try:
        with FolderLock(out, "train"):
            return make_trainer(out).run()
    except BaseException:
        if created and out.is_dir() and {p.name for p in out.iterdir()} <= {LOCK_NAME}:
            shutil.rmtree(out)
        raise
