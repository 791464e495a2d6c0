"""Training regimes (MAML, first-order MAML, ANIL, any frozen set; the body-training baselines of
Raghu et al. 2020, Table 5) and test procedures, on top of :mod:`meta.inner`.

Regimes share one interface that a trainer drives without knowing which it has::

    regime.batch(sampler, iteration) -> batch    # the data of one iteration, a pure function
                                                 # of (sampler's split and seed, iteration)
    regime.step(model, batch) -> {metric: float} # adds the meta-gradient to param.grad

The trainer zeroes the gradients before ``step`` and calls ``optimizer.step()`` after it. A
regime holds no state that changes during training (``config()`` is everything about it), so a
resumed run needs only the model, the optimizer and the iteration number.

Body-training regimes of Table 5 (section 5.2 of the paper), each tested with NIL afterwards:

- ``maml`` / ``anil``: :class:`MetaLearning` with every layer / only the head adapting.
- ``multiclass``: :class:`Multiclass`, standard supervised training of one classifier over all
  the training classes (``model.ways == split.n_classes``) on minibatches of labelled images.
- ``multitask``: :class:`Multitask`, the meta-batch of N-way training tasks trained jointly with
  **no inner loop**: one shared network and head minimise the mean loss of every task on its
  support and query examples (each task's labels as the sampler assigns them).
- ``random``: :class:`RandomFeatures`, no training at all (the initial random body).
- ``nil``: :class:`NILTraining`, the NIL classifier used as the training objective: the body is
  trained on ``-log p(y_q | q)`` of the query set given the support set (:mod:`meta.nil`), the
  head unused.

Execution paths of the meta-gradient (:func:`meta_gradient`), identical in exact arithmetic and
checked against each other and a plain autograd loop in float64 (``tests/test_inner.py``):

- ``"loop"``: one task at a time (``torch.func.functional_call``), each task's query loss
  backpropagated before the next task starts, so memory holds one task's graph (the least
  memory; about the speed of the common clone-and-update loop).
- ``"grouped"``: ``chunk`` tasks at once as grouped convolutions (the tasks side by side in the
  channel dimension: per-task weights and batch-norm statistics in single operations), support
  and query sets alike; meant for GPUs.
- ``"hybrid"`` (:data:`DEFAULT_PATH`, fastest on the project's CPUs): ``chunk`` tasks adapted
  side by side (support batches of at least ``loop_from`` examples per task run task by task,
  where ordinary convolutions are faster on CPUs), then each task's query set alone through
  ordinary convolutions, its graph freed before the next task's, and one backward through the
  chunk's inner loop.
- ``"compiled"``: ``"loop"``'s work for one task traced into one graph with no autograd left in
  it (the second-order backward written out) and compiled ahead of time by inductor: batch
  norm, ReLU and the support sets' many small elementwise operations fused into a few loops
  (:mod:`meta.compiled`). A child process compiles (about a minute per task shape on one core,
  a C++ compiler needed; the package is cached on disk by graph) and the training process only
  loads the result, so it carries no compiler. CPUs and :class:`meta.models.Conv4` models only.

Measured on the project's 2-core CPUs (``benchmarks/README.md``): for Omniglot 5-way 1-shot,
meta-batch 32, 5 steps, ``"compiled"`` was 1.64x (MAML), 1.71x (first-order MAML) and 1.63x
(ANIL) faster than a clone-and-update loop, with that loop's resident memory (0.62-1.06x) and
0.47-0.71x its tensors' peak; ``"hybrid"`` with chunks of :data:`DEFAULT_CHUNK` tasks, the
default because it needs no compiling, was 1.33-1.46x (MAML), 1.20-1.42x (first-order MAML) and
1.21-1.28x (ANIL) faster (four runs), its tensors' peak memory 1.39-1.45x that loop's for MAML,
0.75-0.83x for first-order MAML and 0.74x for ANIL (larger chunks: faster and more memory);
``"loop"`` used less memory than that loop (0.60-0.72x) and was 1.03-1.18x faster. For
miniImageNet's shapes ``"loop"`` is the better path (:data:`PATH_BY_VARIANT`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from meta.compiled import compiled_task_program
from meta.inner import (
    Adapted,
    InnerLoop,
    Params,
    inner_loop,
    module_forward,
    task_accuracies,
    task_batch_forward,
    task_losses,
)
from meta.nil import nil_accuracy, nil_log_probs

__all__ = [
    "DEFAULT_CHUNK",
    "DEFAULT_PATH",
    "PATHS",
    "PRESETS",
    "REGIMES",
    "Multiclass",
    "MetaLearning",
    "Multitask",
    "NILTraining",
    "Preset",
    "RandomFeatures",
    "Regime",
    "TaskResult",
    "default_path",
    "evaluate_task",
    "make_regime",
    "meta_gradient",
    "nil_accuracy",
    "preset",
]

PATHS = ("loop", "grouped", "hybrid", "compiled")
DEFAULT_PATH = "hybrid"
DEFAULT_CHUNK = 4

# The trainer's path per conv4 variant when none is given (``benchmarks/README.md``,
# ``bench_maml.py --variant``). Omniglot: ``hybrid`` is the fastest (MAML 1.3-1.4x a
# clone-and-update loop, at 1.45x its tensors' peak memory). miniImageNet (84x84x3 images,
# meta-batch 4): a support set is already large work, grouping gains little, and ``loop`` is
# faster for first-order MAML and ANIL (1.7x against hybrid's 1.2-1.6x) at no more memory than
# that loop (tensors 0.96-0.98x); second-order MAML is 1.20x either way (two runs; hybrid 1.19x
# and 1.30x), hybrid at twice the tensor memory.
PATH_BY_VARIANT = {"omniglot": DEFAULT_PATH, "miniimagenet": "loop"}


def default_path(variant: str) -> str:
    """The execution path a run of conv4 variant ``variant`` takes by default."""
    return PATH_BY_VARIANT.get(variant, DEFAULT_PATH)


class Regime(Protocol):
    """What a trainer needs of a training regime (see the module docstring)."""

    name: str

    def batch(self, sampler: Any, iteration: int) -> Any: ...

    def step(self, model: nn.Module, batch: Any) -> dict[str, float]: ...

    def config(self) -> dict[str, Any]: ...


# ---------------------------------------------------------------------------------------------
# Paper defaults
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preset:
    """Hyperparameters of one benchmark setting (MAML paper, Finn et al. 2017, appendix A.1, and
    the commands at the top of cbfinn/maml ``main.py``; Raghu et al. 2020 use MAML's settings).

    Attributes:
        dataset, ways, shots: the setting.
        variant: conv4 variant (``meta.models.VARIANTS``); ``in_channels``: 1 or 3.
        train_inner, test_inner: inner loops at meta-training and at test time (all layers).
        meta_batch_size: tasks per meta-update.
        meta_lr: outer Adam learning rate.
        queries: query examples per class.
        iterations: meta-training iterations of the reference runs.
    """

    dataset: str
    ways: int
    shots: int
    variant: str
    in_channels: int
    train_inner: InnerLoop
    test_inner: InnerLoop
    meta_batch_size: int
    meta_lr: float = 1e-3
    queries: int = 15
    iterations: int = 60000

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``meta.models:conv4`` for this setting (a model spec's kwargs)."""
        return {"ways": self.ways, "in_channels": self.in_channels, "variant": self.variant}


def _omniglot(ways: int, shots: int, steps: int, test_steps: int, lr: float, meta_batch_size: int) -> Preset:
    return Preset(
        "omniglot", ways, shots, "omniglot", 1, InnerLoop(steps, lr), InnerLoop(test_steps, lr), meta_batch_size,
        iterations=40000,
    )


def _miniimagenet(shots: int, meta_batch_size: int) -> Preset:
    return Preset(
        "miniimagenet", 5, shots, "miniimagenet", 3, InnerLoop(5, 0.01), InnerLoop(10, 0.01), meta_batch_size
    )


# MAML paper, appendix A.1: Omniglot 5-way: 1 step of 0.4 at training, 3 at test, meta-batch 32;
# 20-way: 5 steps of 0.1 at training and test, meta-batch 16; miniImageNet: 5 steps of 0.01 at
# training, 10 at test, meta-batch 4 (1-shot) and 2 (5-shot), 15 queries per class (Ravi &
# Larochelle). Outer Adam 1e-3 (main.py ``meta_lr``). The reference Omniglot code draws K query
# examples per class; we use 15 everywhere. The learning rates are for the reference's inner loss
# (``utils.xent``: per-example cross-entropies divided by K, summed by ``tf.gradients``), which
# meta.inner uses: N times the mean cross-entropy.
PRESETS: dict[tuple[str, int, int], Preset] = {
    ("omniglot", 5, 1): _omniglot(5, 1, steps=1, test_steps=3, lr=0.4, meta_batch_size=32),
    ("omniglot", 5, 5): _omniglot(5, 5, steps=1, test_steps=3, lr=0.4, meta_batch_size=32),
    ("omniglot", 20, 1): _omniglot(20, 1, steps=5, test_steps=5, lr=0.1, meta_batch_size=16),
    ("omniglot", 20, 5): _omniglot(20, 5, steps=5, test_steps=5, lr=0.1, meta_batch_size=16),
    ("miniimagenet", 5, 1): _miniimagenet(1, meta_batch_size=4),
    ("miniimagenet", 5, 5): _miniimagenet(5, meta_batch_size=2),
}


def preset(dataset: str, ways: int, shots: int) -> Preset:
    """The :data:`PRESETS` entry for a setting (ValueError naming the known ones otherwise)."""
    key = (dataset, ways, shots)
    if key not in PRESETS:
        raise ValueError(f"no preset for {key}; known: {sorted(PRESETS)}")
    return PRESETS[key]


# ---------------------------------------------------------------------------------------------
# Tasks as tensors
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tasks:
    """A meta-batch as stacked tensors: support ``(T, n_s, C, H, W)`` / ``(T, n_s)``, query
    likewise."""

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor

    def __len__(self) -> int:
        return self.support_x.shape[0]

    def slice(self, start: int, stop: int) -> _Tasks:
        return _Tasks(*(getattr(self, f)[start:stop] for f in ("support_x", "support_y", "query_x", "query_y")))


def _as_tasks(batch: Any) -> _Tasks:
    """An ``EpisodeBatch`` (stacked fields) or a sequence of episodes -> :class:`_Tasks`."""
    fields = ("support_x", "support_y", "query_x", "query_y")
    if isinstance(getattr(batch, "support_x", None), Tensor) and batch.support_x.dim() == 5:
        tasks = _Tasks(*(getattr(batch, f) for f in fields))
    else:
        episodes = list(batch)
        if not episodes:
            raise ValueError("the meta-batch has no tasks")
        try:
            tasks = _Tasks(*(torch.stack([getattr(e, f) for e in episodes]) for f in fields))
        except RuntimeError as error:
            raise ValueError(f"the tasks of a meta-batch must have equal shapes: {error}") from error
    if tasks.support_x.dim() != 5 or tasks.query_x.dim() != 5:
        raise ValueError(f"task inputs must be (T, n, C, H, W); got {tuple(tasks.support_x.shape)}")
    if tasks.support_y.shape != tasks.support_x.shape[:2] or tasks.query_y.shape != tasks.query_x.shape[:2]:
        raise ValueError("task labels must be (T, n) matching the inputs")
    return tasks


def _mean_metrics(per_task: Mapping[str, Sequence[Tensor]]) -> dict[str, float]:
    return {k: float(torch.cat([v.reshape(-1) for v in values]).double().mean()) for k, values in per_task.items()}


# ---------------------------------------------------------------------------------------------
# Meta-gradient
# ---------------------------------------------------------------------------------------------


def meta_gradient(
    model: nn.Module,
    batch: Any,
    inner: InnerLoop,
    *,
    path: str = DEFAULT_PATH,
    chunk: int = DEFAULT_CHUNK,
    loop_from: int = 32,
) -> dict[str, float]:
    """Add the meta-gradient of the mean query loss after adaptation to ``param.grad``.

    ``L = (1/T) sum_t CE(query_t; adapt(theta, support_t))``; ``d L / d theta`` is accumulated
    into each parameter's ``.grad`` (as ``loss.backward()`` would).

    Args:
        model: a staged model (:class:`meta.models.Conv4`; ``forward_tasks`` for the task paths).
        batch: an ``EpisodeBatch`` or a sequence of episodes, ``T`` tasks of equal shapes.
        inner: the training inner loop (second or first order, adapted layers).
        path: ``"loop"``, ``"grouped"`` or ``"hybrid"`` (see the module docstring).
        chunk: tasks computed together by ``"grouped"`` and ``"hybrid"``.
        loop_from: ``"hybrid"`` runs batches of at least this many examples per task task by
            task.

    Returns:
        ``loss`` and ``accuracy`` on the query sets after adaptation, ``support_loss_before``
        and ``support_accuracy_before`` at the meta-parameters (NaN when ``inner.steps == 0``),
        means over tasks.
    """
    if path not in PATHS:
        raise ValueError(f"unknown path {path!r}; choose from {PATHS}")
    chunk, loop_from = _positive("chunk", chunk), _positive("loop_from", loop_from)
    tasks = _as_tasks(batch)
    run_part = {"loop": _loop_task, "grouped": _grouped_chunk, "hybrid": _hybrid_chunk, "compiled": _compiled_task}[path]
    size = 1 if path in ("loop", "compiled") else chunk
    metrics: dict[str, list[Tensor]] = {k: [] for k in _PART_METRICS}
    for start in range(0, len(tasks), size):
        part = tasks.slice(start, start + size)
        for name, values in zip(_PART_METRICS, run_part(model, part, inner, 1.0 / len(tasks), loop_from)):
            metrics[name].append(values)
    return _mean_metrics(metrics)


# What each path's part function returns, per task of the part.
_PART_METRICS = ("loss", "accuracy", "support_loss_before", "support_accuracy_before")


def _part_metrics(losses: Tensor, accuracies: Tensor, adapted: Adapted) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return losses, accuracies, adapted.support_loss_before, adapted.support_accuracy_before


def _backward_query(logits: Tensor, labels: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """Backpropagate ``scale * sum_t CE_t``; return the per-task losses and accuracies."""
    losses = task_losses(logits, labels)
    (losses.sum() * scale).backward()
    return losses.detach(), task_accuracies(logits, labels)


def _loop_task(model: nn.Module, part: _Tasks, inner: InnerLoop, scale: float, loop_from: int):
    """``"loop"``: one task, adapted and backpropagated through ``functional_call``."""
    params = dict(model.named_parameters())
    layers = tuple(model.layers)
    adapted = inner_loop(module_forward(model), params, layers, part.support_x[0], part.support_y[0], inner)
    return _part_metrics(*_backward_query(adapted.query_forward(part.query_x[0]), part.query_y[0], scale), adapted)


def _compiled_task(model: nn.Module, part: _Tasks, inner: InnerLoop, scale: float, loop_from: int):
    """``"compiled"``: one task's meta-gradient as one compiled program (:mod:`meta.compiled`),
    added to ``.grad``."""
    task = (part.support_x[0], part.support_y[0], part.query_x[0], part.query_y[0])
    params = list(model.parameters())
    grads, *metrics = compiled_task_program(model, inner, scale, task)([p.detach() for p in params], task)
    for p, g in zip(params, grads):
        if p.requires_grad:
            p.grad = g if p.grad is None else p.grad.add_(g)
    return tuple(metrics)


def _task_params(model: nn.Module, inner: InnerLoop, tasks: int) -> tuple[Params, set[str]]:
    """The meta-parameters for a task batch: the adapted layers' expanded to ``(tasks, *shape)``
    (so that each task gets its own inner gradient), the frozen ones shared."""
    params = dict(model.named_parameters())
    per_task = set(inner.adapted_params(params, tuple(model.layers)))
    return {k: v.expand(tasks, *v.shape) if k in per_task else v for k, v in params.items()}, per_task


def _grouped_chunk(model: nn.Module, part: _Tasks, inner: InnerLoop, scale: float, loop_from: int):
    """``"grouped"``: the chunk's tasks side by side, support and query alike."""
    params, _ = _task_params(model, inner, len(part))
    adapted = inner_loop(task_batch_forward(model), params, tuple(model.layers), part.support_x, part.support_y, inner)
    return _part_metrics(*_backward_query(adapted.query_forward(part.query_x), part.query_y, scale), adapted)


def _hybrid_chunk(model: nn.Module, part: _Tasks, inner: InnerLoop, scale: float, loop_from: int):
    """``"hybrid"``: the inner loop of the chunk's tasks side by side (support batches of at
    least ``loop_from`` examples task by task), then each task's query set alone, its graph
    freed before the next, and one backward through the inner loop.

    Chain rule in two stages: with ``phi_t`` the adapted parameters of task ``t``, the query
    backward of each task gives ``g_t = d L_t / d phi_t`` (and adds the frozen layers' direct
    gradients to ``.grad``); ``backward(phi, g)`` then carries ``g`` through the inner loop to
    the meta-parameters. Memory holds the chunk's inner-loop graph and one task's query graph.
    """
    layers, t = tuple(model.layers), len(part)
    params, per_task = _task_params(model, inner, t)
    forward = task_batch_forward(model, loop_from=loop_from)
    adapted = inner_loop(forward, params, layers, part.support_x, part.support_y, inner)
    phi = {k: adapted.params[k] for k in sorted(per_task)}
    leaves = {k: v.detach().requires_grad_() for k, v in phi.items()}
    single = module_forward(model)
    losses, accuracies = [], []
    for i in range(t):
        task_params = {**params, **{k: v[i] for k, v in leaves.items()}}
        hidden = part.query_x[i]
        if adapted.prefix is not None:
            hidden = single(task_params, hidden, None, adapted.prefix)
        logits = single(task_params, hidden, adapted.start, None)
        loss, accuracy = _backward_query(logits, part.query_y[i], scale)
        losses.append(loss)
        accuracies.append(accuracy)
    pairs = [(phi[k], leaves[k].grad) for k in phi if leaves[k].grad is not None and phi[k].requires_grad]
    if pairs:
        # d/dtheta sum_k <phi_k, g_k> = J^T g, bit for bit what backward(phi, g) gives. A scalar's
        # backward skips torch.autograd.backward's check of explicit output gradients, which
        # imports sympy (torch.fx's symbolic shapes: about 20 MB resident and a second) at its
        # first call. (A torch optimizer loads the same modules, so the trainer pays them once
        # either way; the benchmark's memory figures and optimizer-free callers do not.)
        sum((v * g).sum() for v, g in pairs).backward()
    return _part_metrics(torch.stack(losses), torch.stack(accuracies), adapted)


# ---------------------------------------------------------------------------------------------
# Test procedures
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskResult:
    """One test task: query ``accuracy`` and ``loss`` after adaptation; with ``record_steps`` the
    full parameter dict after each inner step (detached), else ``None``."""

    accuracy: float
    loss: float
    params_per_step: list[Params] | None = field(default=None, repr=False)


def evaluate_task(model: nn.Module, episode: Any, inner: InnerLoop, *, record_steps: bool = False) -> TaskResult:
    """Adapt ``model`` to one task's support set with ``inner`` (any adapted set) and score its
    query set. The model's own parameters are not changed.

    Args:
        model: a staged model (:class:`meta.models.Conv4`).
        episode: ``support_x (N*K, C, H, W)``, ``support_y (N*K,)``, ``query_x``, ``query_y``.
        inner: the test-time inner loop (``first_order`` is irrelevant here).
        record_steps: return the parameters after every step (adaptation snapshots).
    """
    params = dict(model.named_parameters())
    adapted = inner_loop(
        module_forward(model), params, tuple(model.layers), episode.support_x, episode.support_y, inner,
        meta_grad=False, record_steps=record_steps,
    )
    with torch.no_grad():
        logits = adapted.query_forward(episode.query_x)
        loss = task_losses(logits, episode.query_y)
        accuracy = task_accuracies(logits, episode.query_y)
    return TaskResult(float(accuracy), float(loss), adapted.steps)


# ---------------------------------------------------------------------------------------------
# Regimes
# ---------------------------------------------------------------------------------------------


class _Episodic:
    """Shared by the regimes that train on meta-batches of tasks from an ``EpisodeSampler``."""

    name: str

    def __init__(self, meta_batch_size: int) -> None:
        self.meta_batch_size = _positive("meta_batch_size", meta_batch_size)

    def batch(self, sampler: Any, iteration: int) -> Any:
        """Tasks ``iteration * B .. (iteration + 1) * B - 1`` of the sampler (``B`` the
        meta-batch size): ``sampler.batch(start, count)``, a pure function of the iteration."""
        return sampler.batch(_non_negative("iteration", iteration) * self.meta_batch_size, self.meta_batch_size)

    def config(self) -> dict[str, Any]:
        """Everything about the regime, JSON-serialisable (for a run's ``config.json``)."""
        out = {"regime": self.name, **{k: v for k, v in vars(self).items() if k != "name"}}
        if isinstance(out.get("inner"), InnerLoop):
            inner = out["inner"]
            out["inner"] = {**asdict(inner), "adapt": None if inner.adapt is None else sorted(inner.adapt)}
        return out


class MetaLearning(_Episodic):
    """MAML-family meta-training: the meta-gradient of the query loss after ``inner``.

    ``MetaLearning(InnerLoop(5, 0.4))`` is MAML, ``first_order=True`` first-order MAML,
    ``adapt={"head"}`` ANIL, any other ``adapt`` set freezes the rest in the inner loop.
    """

    def __init__(
        self,
        inner: InnerLoop,
        meta_batch_size: int,
        *,
        name: str | None = None,
        path: str = DEFAULT_PATH,
        chunk: int = DEFAULT_CHUNK,
    ) -> None:
        if path not in PATHS:
            raise ValueError(f"unknown path {path!r}; choose from {PATHS}")
        super().__init__(meta_batch_size)
        self.inner = inner
        self.path, self.chunk = path, _positive("chunk", chunk)
        self.name = name or _inner_name(inner)

    def step(self, model: nn.Module, batch: Any) -> dict[str, float]:
        return meta_gradient(model, batch, self.inner, path=self.path, chunk=self.chunk)


class Multitask(_Episodic):
    """Joint training on the meta-batch's tasks with no inner loop (see the module docstring):
    loss ``(1/T) sum_t (CE(support_t) + CE(query_t)) / 2`` of the shared network, the support
    and query sets as separate forward passes."""

    name = "multitask"

    def step(self, model: nn.Module, batch: Any) -> dict[str, float]:
        return _task_by_task(model, batch, _multitask_objective)


def _multitask_objective(model: nn.Module, sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> tuple[Tensor, Tensor]:
    query_logits = model(qx)
    return (task_losses(model(sx), sy) + task_losses(query_logits, qy)) / 2, query_logits


class NILTraining(_Episodic):
    """NIL as the training objective: ``-log p(y_q | q)`` (Matching-Networks attention over the
    support set with cosine similarity of penultimate features; :mod:`meta.nil`)."""

    name = "nil"

    def step(self, model: nn.Module, batch: Any) -> dict[str, float]:
        return _task_by_task(model, batch, _nil_objective)


def _nil_objective(model: nn.Module, sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> tuple[Tensor, Tensor]:
    log_probs = nil_log_probs(model.features(sx), sy, model.features(qx), int(sy.max()) + 1)
    return F.nll_loss(log_probs, qy), log_probs


def _task_by_task(model: nn.Module, batch: Any, objective: Callable[..., tuple[Tensor, Tensor]]) -> dict[str, float]:
    """Backpropagate ``(1/T) sum_t loss_t`` task by task, ``objective(model, support_x,
    support_y, query_x, query_y) -> (loss_t, query scores)``; mean loss and query accuracy."""
    tasks = _as_tasks(batch)
    losses, accuracies = [], []
    for t in range(len(tasks)):
        loss, scores = objective(model, tasks.support_x[t], tasks.support_y[t], tasks.query_x[t], tasks.query_y[t])
        (loss / len(tasks)).backward()
        losses.append(loss.detach())
        accuracies.append(task_accuracies(scores, tasks.query_y[t]))
    return _mean_metrics({"loss": losses, "accuracy": accuracies})


class RandomFeatures(_Episodic):
    """No training: ``step`` leaves every ``.grad`` as it is (``None`` after ``zero_grad(
    set_to_none=True)``, so Adam changes nothing) and the body stays at its random
    initialisation."""

    name = "random"

    def __init__(self, meta_batch_size: int = 1) -> None:
        super().__init__(meta_batch_size)

    def step(self, model: nn.Module, batch: Any) -> dict[str, float]:
        return {}


class Multiclass:
    """Standard supervised training of one classifier over all ``n_classes`` training classes.

    The model's head must have ``ways == split.n_classes``. :meth:`batch` draws ``batch_size``
    distinct images uniformly from the sampler's split (``sampler.split``, a ``FewShotSplit``),
    as a pure function of ``(seed, iteration)``; images are ``uint8 / 255`` (then ``(x - mean) /
    std`` with ``normalize=(mean, std)``, one value per channel).
    """

    def __init__(
        self, batch_size: int = 128, *, seed: int = 0, normalize: tuple[Sequence[float], Sequence[float]] | None = None
    ) -> None:
        self.name = "multiclass"
        self.batch_size = _positive("batch_size", batch_size)
        self.seed = _non_negative("seed", seed)
        self.normalize = normalize

    def batch(self, sampler: Any, iteration: int) -> tuple[Tensor, Tensor]:
        """``(x (B, C, H, W) float32, y (B,) int64 class index in the split)``."""
        split = getattr(sampler, "split", sampler)
        images = split.images
        n_classes, n_per_class = images.shape[:2]
        total = n_classes * n_per_class
        if self.batch_size > total:
            raise ValueError(f"batch_size={self.batch_size} exceeds the {total} images of {split.name}")
        rng = np.random.default_rng([self.seed, _non_negative("iteration", iteration)])
        flat = rng.choice(total, size=self.batch_size, replace=False)
        classes, examples = np.divmod(flat, n_per_class)
        x = torch.from_numpy(np.divide(images[classes, examples], np.float32(255.0), dtype=np.float32))
        if self.normalize is not None:
            mean, std = (torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1) for v in self.normalize)
            x = (x - mean) / std
        return x, torch.from_numpy(classes.astype(np.int64))

    def step(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> dict[str, float]:
        x, y = batch
        logits = model(x)
        if logits.shape[-1] <= int(y.max()):
            raise ValueError(
                f"multiclass training needs a head over all classes: got {logits.shape[-1]} outputs for class {int(y.max())}"
            )
        loss = F.cross_entropy(logits, y)
        loss.backward()
        return {"loss": float(loss.detach()), "accuracy": float(task_accuracies(logits, y))}

    def config(self) -> dict[str, Any]:
        return {"regime": self.name, "batch_size": self.batch_size, "seed": self.seed, "normalize": self.normalize}


REGIMES = ("maml", "fomaml", "anil", "multiclass", "multitask", "random", "nil")


def make_regime(
    name: str,
    *,
    inner: InnerLoop | None = None,
    meta_batch_size: int = 32,
    batch_size: int = 128,
    seed: int = 0,
    path: str = DEFAULT_PATH,
) -> Any:
    """A regime by name (:data:`REGIMES`).

    ``inner`` (required for ``maml``, ``fomaml``, ``anil``) gives steps and learning rate; its
    ``adapt`` and ``first_order`` are set by the name (``anil``: head only; ``fomaml``: first
    order). ``batch_size`` and ``seed`` are for ``multiclass``.
    """
    if name in ("maml", "fomaml", "anil"):
        if inner is None:
            raise ValueError(f"regime {name!r} needs an inner loop (inner=InnerLoop(steps, lr))")
        inner = replace(inner, first_order=name == "fomaml", adapt=frozenset({"head"}) if name == "anil" else None)
        return MetaLearning(inner, meta_batch_size, name=name, path=path)
    if name == "multiclass":
        return Multiclass(batch_size, seed=seed)
    if name == "multitask":
        return Multitask(meta_batch_size)
    if name == "random":
        return RandomFeatures(meta_batch_size)
    if name == "nil":
        return NILTraining(meta_batch_size)
    raise ValueError(f"unknown regime {name!r}; choose from {REGIMES}")


def _inner_name(inner: InnerLoop) -> str:
    if inner.adapt == frozenset({"head"}):
        return "anil" + ("_first_order" if inner.first_order else "")
    if inner.adapt is None:
        return "fomaml" if inner.first_order else "maml"
    frozen = "+".join(sorted(inner.adapt))
    return f"{'fomaml' if inner.first_order else 'maml'}[adapt={frozen}]"


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _non_negative(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return int(value)
