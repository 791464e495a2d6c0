"""Training regimes: MAML, first-order MAML, ANIL and any frozen set in the inner loop, and the
body-training baselines of Raghu et al. 2020, Table 5.

Regimes share one interface that a trainer drives without knowing which it has::

    regime.batch(sampler, iteration) -> batch    # the data of one iteration, a pure function
                                                 # of (sampler's split and seed, iteration)
    regime.step(model, batch, reducer) -> {metric: float}   # adds the meta-gradient to param.grad

The trainer zeroes the gradients before ``step`` and calls ``optimizer.step()`` after it. A
regime holds no state that changes during training (``config()`` is everything about it), so a
resumed run needs only the model, the optimizer and the iteration number.

Every step is a sum of parts (:mod:`meta.core.reduction`): one task for the episodic regimes
(one chunk of tasks on the ``grouped`` and ``hybrid`` paths), the whole minibatch for
``multiclass``. ``reducer`` (default: this process alone) shares the parts among the ranks of
``torchrun``; the gradient added is the same, bit for bit, whatever the number of ranks.

The regimes (names in :data:`meta.core.names.REGIMES`):

- ``maml`` / ``fomaml`` / ``anil``: :class:`MetaLearning` with every layer / every layer at first
  order / only the head adapting (the meta-gradient of :mod:`meta.core.paths`).
- ``multiclass``: :class:`Multiclass`, standard supervised training of one classifier over all
  the training classes (``model.ways == split.n_classes``) on minibatches of labelled images.
- ``multitask``: :class:`Multitask`, the meta-batch of N-way training tasks trained jointly with
  **no inner loop**: one shared network and head minimise the mean loss of every task on its
  support and query examples (each task's labels as the sampler assigns them).
- ``random``: :class:`RandomFeatures`, no training at all (the initial random body).
- ``nil``: :class:`NILTraining`, the NIL classifier used as the training objective: the body is
  trained on ``-log p(y_q | q)`` of the query set given the support set (:mod:`meta.core.nil`),
  the head unused.

Imports: :mod:`meta.core` only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from meta.core.inner import InnerLoop, task_accuracies, task_losses
from meta.core.names import REGIMES
from meta.core.nil import nil_log_probs
from meta.core.paths import DEFAULT_CHUNK, DEFAULT_PATH, PATHS, meta_gradient
from meta.core.reduction import ALONE, Reducer, sum_parts
from meta.core.tasks import as_tasks
from meta.validation import check_choice, check_int

__all__ = ["Multiclass", "MetaLearning", "Multitask", "NILTraining", "RandomFeatures", "Regime", "make_regime"]


class Regime(Protocol):
    """What a trainer needs of a training regime (see the module docstring)."""

    name: str

    def batch(self, sampler: Any, iteration: int) -> Any: ...

    def step(self, model: nn.Module, batch: Any, reducer: Reducer = ALONE) -> dict[str, float]: ...

    def config(self) -> dict[str, Any]: ...


class _Episodic:
    """Shared by the regimes that train on meta-batches of tasks from an ``EpisodeSampler``."""

    name: str

    def __init__(self, meta_batch_size: int) -> None:
        self.meta_batch_size = check_int("meta_batch_size", meta_batch_size, minimum=1)

    def batch(self, sampler: Any, iteration: int) -> Any:
        """Tasks ``iteration * B .. (iteration + 1) * B - 1`` of the sampler (``B`` the
        meta-batch size): ``sampler.batch(start, count)``, a pure function of the iteration."""
        return sampler.batch(check_int("iteration", iteration, minimum=0) * self.meta_batch_size, self.meta_batch_size)

    def config(self) -> dict[str, Any]:
        """Everything about the regime, JSON-serialisable (for a run's ``config.json``)."""
        out = {"regime": self.name, **{k: v for k, v in vars(self).items() if k != "name"}}
        if isinstance(out.get("inner"), InnerLoop):
            inner = out["inner"]
            out["inner"] = inner.as_dict()
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
        check_choice("path", path, PATHS)
        super().__init__(meta_batch_size)
        self.inner = inner
        self.path, self.chunk = path, check_int("chunk", chunk, minimum=1)
        self.name = name or _inner_name(inner)

    def step(self, model: nn.Module, batch: Any, reducer: Reducer = ALONE) -> dict[str, float]:
        return meta_gradient(model, batch, self.inner, path=self.path, chunk=self.chunk, reducer=reducer)


class Multitask(_Episodic):
    """Joint training on the meta-batch's tasks with no inner loop (see the module docstring):
    loss ``(1/T) sum_t (CE(support_t) + CE(query_t)) / 2`` of the shared network, the support
    and query sets as separate forward passes."""

    name = "multitask"

    def step(self, model: nn.Module, batch: Any, reducer: Reducer = ALONE) -> dict[str, float]:
        return _task_by_task(model, batch, _multitask_objective, reducer)


def _multitask_objective(model: nn.Module, sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> tuple[Tensor, Tensor]:
    query_logits = model(qx)
    return (task_losses(model(sx), sy) + task_losses(query_logits, qy)) / 2, query_logits


class NILTraining(_Episodic):
    """NIL as the training objective: ``-log p(y_q | q)`` (Matching-Networks attention over the
    support set with cosine similarity of penultimate features; :mod:`meta.core.nil`)."""

    name = "nil"

    def step(self, model: nn.Module, batch: Any, reducer: Reducer = ALONE) -> dict[str, float]:
        return _task_by_task(model, batch, _nil_objective, reducer)


def _nil_objective(model: nn.Module, sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> tuple[Tensor, Tensor]:
    log_probs = nil_log_probs(model.features(sx), sy, model.features(qx), int(sy.max()) + 1)
    return F.nll_loss(log_probs, qy), log_probs


def _task_by_task(
    model: nn.Module, batch: Any, objective: Callable[..., tuple[Tensor, Tensor]], reducer: Reducer
) -> dict[str, float]:
    """Backpropagate ``(1/T) sum_t loss_t`` task by task (each task a part), ``objective(model,
    support_x, support_y, query_x, query_y) -> (loss_t, query scores)``; mean loss and query
    accuracy."""
    tasks = as_tasks(batch)

    def part(t: int) -> tuple[Tensor, Tensor]:
        loss, scores = objective(model, tasks.support_x[t], tasks.support_y[t], tasks.query_x[t], tasks.query_y[t])
        (loss / len(tasks)).backward()
        return loss, task_accuracies(scores, tasks.query_y[t])

    return sum_parts(model, [1] * len(tasks), part, ("loss", "accuracy"), reducer)


class RandomFeatures(_Episodic):
    """No training: ``step`` leaves every ``.grad`` as it is (``None`` after ``zero_grad(
    set_to_none=True)``, so Adam changes nothing) and the body stays at its random
    initialisation."""

    name = "random"

    def __init__(self, meta_batch_size: int = 1) -> None:
        super().__init__(meta_batch_size)

    def step(self, model: nn.Module, batch: Any, reducer: Reducer = ALONE) -> dict[str, float]:
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
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.seed = check_int("seed", seed, minimum=0)
        self.normalize = normalize

    def batch(self, sampler: Any, iteration: int) -> tuple[Tensor, Tensor]:
        """``(x (B, C, H, W) float32, y (B,) int64 class index in the split)``."""
        split = getattr(sampler, "split", sampler)
        images = split.images
        n_classes, n_per_class = images.shape[:2]
        total = n_classes * n_per_class
        if self.batch_size > total:
            raise ValueError(f"batch_size={self.batch_size} exceeds the {total} images of {split.name}")
        rng = np.random.default_rng([self.seed, check_int("iteration", iteration, minimum=0)])
        flat = rng.choice(total, size=self.batch_size, replace=False)
        classes, examples = np.divmod(flat, n_per_class)
        x = torch.from_numpy(np.divide(images[classes, examples], np.float32(255.0), dtype=np.float32))
        if self.normalize is not None:
            mean, std = (torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1) for v in self.normalize)
            x = (x - mean) / std
        return x, torch.from_numpy(classes.astype(np.int64))

    def step(self, model: nn.Module, batch: tuple[Tensor, Tensor], reducer: Reducer = ALONE) -> dict[str, float]:
        """One part, the whole minibatch (its batch norm needs every image in one pass): with
        several ranks, rank 0 computes it and the others receive its gradient."""
        x, y = batch

        def whole(_: int) -> tuple[Tensor, Tensor]:
            logits = model(x)
            if logits.shape[-1] <= int(y.max()):
                raise ValueError(
                    "multiclass training needs a head over all classes:"
                    f" got {logits.shape[-1]} outputs for class {int(y.max())}"
                )
            loss = F.cross_entropy(logits, y)
            loss.backward()
            return loss, task_accuracies(logits, y)

        return sum_parts(model, [1], whole, ("loss", "accuracy"), reducer)

    def config(self) -> dict[str, Any]:
        return {"regime": self.name, "batch_size": self.batch_size, "seed": self.seed, "normalize": self.normalize}


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
