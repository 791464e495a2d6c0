"""The one inner loop: gradient descent on a task's support set as a pure function of the
parameters, with a per-layer mask of what adapts.

MAML (Finn et al. 2017, eq. 1), with the layers in ``adapt`` updated and the others frozen::

    theta_0 = theta
    theta_{s+1}[l] = theta_s[l] - lr * d L_support(theta_s) / d theta_s[l]   (l in adapt)
    theta_{s+1}[l] = theta[l]                                                  (l frozen)

``L_support`` is the loss of the reference MAML code (cbfinn/maml ``utils.xent`` differentiated
by ``tf.gradients``): the cross-entropies of the ``N*K`` support examples **summed and divided by
``K``**, i.e. ``N`` times their mean. The paper's inner learning rates (0.4, 0.1, 0.01) are for
this loss; on the plain mean they would be ``N`` times smaller steps. Batch-norm parameters
(``<layer>.norm.*``) adapt only with ``InnerLoop(adapt_norm=True)``: in the reference they are
created outside the adapted weights and learnt in the outer loop only. With ``meta_grad=True`` the
adapted parameters keep their autograd graph back to ``theta``, so a query loss at
``theta_steps`` backpropagates the meta-gradient: second order (MAML, the inner gradients are
differentiated, ``create_graph=True``) or first order (``first_order=True``: the inner gradients
are constants, so d theta_steps / d theta = I and the meta-gradient of an adapted layer is the
query gradient at the adapted parameters). ANIL is ``adapt={"head"}``; any other set freezes the
rest.

Frozen prefix. When the first layers are all frozen (ANIL: ``conv1``..``conv4``) their output
on the support set cannot change during adaptation, so it is computed once per task and the
steps run only the remaining layers (the same holds for the query set afterwards).

The loop is written once, against a *staged forward* ``forward(params, x, start, stop)`` (see
:class:`meta.core.models.Conv4`): :func:`module_forward` makes one for a single task from any staged
module with ``torch.func.functional_call``; :func:`task_batch_forward` makes one for ``T``
tasks at once (inputs and per-task parameters with a leading task dimension; conv4's grouped
convolutions). The support loss it differentiates is the *sum over tasks* of each task's mean
loss, so every task's gradient is its own: the adapted layers' parameters must then be given per
task (e.g. ``p.expand(T, *p.shape)``), the frozen ones may stay shared.

Imports: nothing of :mod:`meta` except :mod:`meta.validation`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from meta.validation import check_int, check_number

Params = dict[str, Tensor]


class StagedForward(Protocol):
    """``forward(params, x, start, stop)``: run layers ``start`` .. ``stop`` (inclusive, ``None``:
    first / last) with ``params`` (name -> tensor; the model's own tensors for names absent)."""

    def __call__(self, params: Mapping[str, Tensor], x: Tensor, start: str | None, stop: str | None) -> Tensor: ...


@dataclass(frozen=True)
class InnerLoop:
    """How a task is adapted: ``steps`` gradient steps of size ``lr`` on the layers in ``adapt``.

    Attributes:
        steps: number of inner gradient steps (0: no adaptation).
        lr: inner learning rate (the ``alpha`` of MAML).
        adapt: names of the layers that adapt (``None``: every layer). ANIL: ``{"head"}``.
        first_order: drop the second-order term (first-order MAML) when a meta-gradient is taken.
        adapt_norm: batch-norm parameters (``<layer>.norm.*``) of adapted layers adapt too
            (default ``False``, as in the reference MAML code: outer loop only).
    """

    steps: int
    lr: float
    adapt: frozenset[str] | None = None
    first_order: bool = False
    adapt_norm: bool = False

    def __post_init__(self) -> None:
        check_int("steps", self.steps, minimum=0)
        check_number("lr", self.lr, minimum=0)
        if self.adapt is not None:
            if isinstance(self.adapt, str):
                raise ValueError(f"adapt must be a set of layer names, got the string {self.adapt!r}")
            object.__setattr__(self, "adapt", frozenset(self.adapt))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: every field, ``adapt`` as a sorted list (or ``None``)."""
        return {
            "steps": self.steps,
            "lr": self.lr,
            "adapt": None if self.adapt is None else sorted(self.adapt),
            "first_order": self.first_order,
            "adapt_norm": self.adapt_norm,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InnerLoop:
        """Inverse of :meth:`as_dict`."""
        return cls(**{**data, "adapt": None if data.get("adapt") is None else frozenset(data["adapt"])})

    def adapted_layers(self, layers: Sequence[str]) -> tuple[str, ...]:
        """The layers of ``layers`` that adapt, in forward order (unknown names: ValueError)."""
        if self.adapt is None:
            return tuple(layers)
        unknown = sorted(self.adapt - set(layers))
        if unknown:
            raise ValueError(f"adapt names unknown layers {unknown}; layers are {tuple(layers)}")
        return tuple(name for name in layers if name in self.adapt)

    def adapted_params(self, params: Mapping[str, Tensor], layers: Sequence[str]) -> list[str]:
        """Names of the parameters that the inner loop updates: those of the adapted layers,
        without batch-norm parameters unless ``adapt_norm``."""
        names = layer_params(params, self.adapted_layers(layers))
        return names if self.adapt_norm else [name for name in names if ".norm." not in name]


@dataclass
class Adapted:
    """Result of :func:`inner_loop`.

    Attributes:
        params: every parameter after the last step (frozen ones are the input tensors).
        steps: with ``record_steps``, the full parameter dict after each step (detached), else
            ``None``.
        support_loss_before: detached loss on the support set at the initial parameters (per
            task for a task batch); NaN when ``steps == 0``.
        support_accuracy_before: likewise, accuracy.
        prefix: last layer of the frozen prefix (``None``: none), whose output was cached.
        start: first layer after the prefix (``None``: the first layer).
        query_forward: ``query_forward(x)``: the adapted model on query inputs (frozen prefix
            computed with the initial parameters, which are the same).
    """

    params: Params
    steps: list[Params] | None
    support_loss_before: Tensor
    support_accuracy_before: Tensor
    prefix: str | None
    start: str | None
    query_forward: Callable[[Tensor], Tensor] = field(repr=False)


def module_forward(model: nn.Module) -> StagedForward:
    """A staged forward for one task from a module whose ``forward(x, start=, stop=)`` runs
    layer stages (e.g. :class:`meta.core.models.Conv4`), via ``torch.func.functional_call``."""

    def forward(params: Mapping[str, Tensor], x: Tensor, start: str | None, stop: str | None) -> Tensor:
        return functional_call(model, dict(params), (x,), {"start": start, "stop": stop})

    return forward


def task_batch_forward(model: nn.Module, *, loop_from: int | None = None) -> StagedForward:
    """A staged forward for ``T`` tasks at once: inputs ``(T, n, ...)``, parameters per task
    ``(T, *shape)`` or shared (``shape``).

    Each call runs the tasks either together, as grouped convolutions (``model.forward_tasks``,
    see :meth:`meta.core.models.Conv4.forward_tasks`; few, large operations, good for small batches
    and GPUs), or, when the per-task batch ``n`` is at least ``loop_from``, one task after the
    other through ``model.forward`` with that task's slice of the parameters (ordinary
    convolutions, faster for large batches on CPUs). ``loop_from=None``: always together.
    """
    single = module_forward(model)
    dims = {k: v.dim() for k, v in model.named_parameters()}

    def forward(params: Mapping[str, Tensor], x: Tensor, start: str | None, stop: str | None) -> Tensor:
        if loop_from is None or x.shape[1] < loop_from:
            return model.forward_tasks(params, x, start=start, stop=stop)
        outputs = [
            single({k: v[t] if v.dim() > dims[k] else v for k, v in params.items()}, x[t], start, stop)
            for t in range(x.shape[0])
        ]
        return torch.stack(outputs)

    return forward


def task_losses(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy per task: logits ``(..., n, ways)``, labels ``(..., n)`` -> ``(...)``."""
    flat = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="none")
    return flat.reshape(labels.shape).mean(dim=-1)


def support_objective(logits: Tensor, labels: Tensor) -> Tensor:
    """The inner-loop loss per task, as in the reference MAML code: ``sum_i CE_i / K`` over the
    ``N*K`` support examples, which is ``N`` (= ``logits.shape[-1]``) times the mean
    cross-entropy. Logits ``(..., n, N)``, labels ``(..., n)`` -> ``(...)``."""
    return task_losses(logits, labels) * logits.shape[-1]


def task_accuracies(logits: Tensor, labels: Tensor) -> Tensor:
    """Fraction of correct argmax predictions per task (detached): ``(..., n, ways)`` -> ``(...)``."""
    return (logits.detach().argmax(dim=-1) == labels).to(logits.dtype).mean(dim=-1)


def layer_params(params: Mapping[str, Tensor], layers: Sequence[str]) -> list[str]:
    """Names of the parameters that belong to ``layers`` (``"<layer>.<...>"``)."""
    prefixes = tuple(f"{name}." for name in layers)
    return [name for name in params if name.startswith(prefixes)]


def frozen_prefix(layers: Sequence[str], adapted: Sequence[str]) -> str | None:
    """Last layer of the longest prefix of ``layers`` with no adapted layer (``None``: empty)."""
    last = None
    for name in layers:
        if name in adapted:
            break
        last = name
    return last


def inner_loop(
    forward: StagedForward,
    params: Mapping[str, Tensor],
    layers: Sequence[str],
    support_x: Tensor,
    support_y: Tensor,
    inner: InnerLoop,
    *,
    meta_grad: bool = True,
    record_steps: bool = False,
) -> Adapted:
    """Adapt ``params`` to one task (or a task batch) by ``inner.steps`` gradient steps.

    Args:
        forward: a staged forward (:func:`module_forward` or :func:`task_batch_forward`).
        params: the initial (meta-)parameters, name -> tensor (``(T, *shape)`` for a task
            batch).
        layers: the model's layer names in forward order (parameters are ``"<layer>.<...>"``).
        support_x: support inputs ``(n, C, H, W)`` (``(T, n, C, H, W)`` for a task batch).
        support_y: labels ``(n,)`` (``(T, n)`` for a task batch).
        inner: steps, learning rate, adapted layers, first order.
        meta_grad: keep the graph from the adapted parameters to ``params`` (for a
            meta-gradient); ``False`` for testing: nothing outside the loop is differentiated
            and the returned parameters are detached.
        record_steps: also return the (detached) parameters after each step.

    Returns:
        :class:`Adapted`.
    """
    adapted_layers = inner.adapted_layers(layers)
    prefix = frozen_prefix(layers, adapted_layers)
    start = None if prefix is None else layers[layers.index(prefix) + 1]
    base: Params = dict(params) if meta_grad else {k: v.detach() for k, v in params.items()}
    fast_names = inner.adapted_params(base, layers)
    second_order = meta_grad and not inner.first_order
    with torch.enable_grad():
        hidden = support_x if prefix is None else forward(base, support_x, None, prefix)
        fast = {k: base[k] if meta_grad else base[k].requires_grad_() for k in fast_names}
        steps: list[Params] | None = [] if record_steps else None
        loss_before = acc_before = torch.full(support_y.shape[:-1], float("nan"), device=support_y.device)
        for step in range(inner.steps):
            logits = forward({**base, **fast}, hidden, start, None)
            losses = task_losses(logits, support_y)
            if step == 0:
                loss_before, acc_before = losses.detach(), task_accuracies(logits, support_y)
            objective = support_objective(logits, support_y).sum()
            grads = torch.autograd.grad(objective, list(fast.values()), create_graph=second_order)
            fast = {k: w - inner.lr * g for (k, w), g in zip(fast.items(), grads)}
            if not meta_grad:
                fast = {k: w.detach().requires_grad_(step + 1 < inner.steps) for k, w in fast.items()}
            if steps is not None:
                steps.append({k: v.detach() for k, v in {**base, **fast}.items()})
    final = {**base, **fast}
    if not meta_grad:
        final = {k: v.detach() for k, v in final.items()}

    def query_forward(x: Tensor) -> Tensor:
        hidden_q = x if prefix is None else forward(final, x, None, prefix)
        return forward(final, hidden_q, start, None)

    return Adapted(final, steps, loss_before, acc_before, prefix, start, query_forward)
