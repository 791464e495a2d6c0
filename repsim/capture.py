"""Activations of named layers of any ``nn.Module``, captured with forward hooks.

Layers are module paths of ``model.named_modules()`` (``"conv1"``, ``"layer2.0.conv1"``) or
:mod:`fnmatch` globs over those paths (``"layer*.0.conv?"``; ``*`` also crosses dots). A pattern
that matches nothing raises :class:`LayerNotFoundError`, which lists the paths that exist.

The *output* of each selected module is recorded (for a module that returns a tuple, e.g. an
LSTM, its first element). A module called more than once in one forward pass (weight sharing,
a block applied twice) is recorded **once per call**, under the keys ``name[0]``, ``name[1]``,
... in call order, with a :class:`RepeatedCallWarning`; the calls are different representations
(different depths of the computation), so they are never concatenated.

Hooks live only inside :class:`ActivationRecorder` and are removed on exit, also when the
forward pass raises. Forward passes run under ``torch.no_grad()`` in eval mode by default (batch
norm uses its running statistics, dropout is off); ``train_mode=True`` runs in train mode
(batch norm normalises with the statistics of the batch it is given, dropout is on). Batch norm
running statistics and every other buffer are restored after a train-mode pass, and each
module's ``training`` flag is restored, so capturing never changes the model.

Batch composition matters when a batch-norm layer uses batch statistics (train mode,
``batch_stats=True``, or ``track_running_stats=False`` as in MAML's conv4): then the default
``batch_size=None`` passes all inputs as **one** batch, which reproduces what the network saw
during adaptation. Otherwise ``batch_size=None`` is one batch up to :data:`WHOLE_BATCH_LIMIT`
inputs and batches of :data:`DEFAULT_BATCH_SIZE` beyond that (the activations are the same
either way, up to floating-point rounding).

Imports: nothing of ``repsim`` (torch, numpy and tqdm only); never :mod:`meta`.
"""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

#: ``batch_size=None`` passes at most this many inputs as one batch (for models whose batch norm
#: does not use batch statistics; those always get one batch).
WHOLE_BATCH_LIMIT = 1024
#: Batch size used beyond :data:`WHOLE_BATCH_LIMIT` inputs when ``batch_size=None``.
DEFAULT_BATCH_SIZE = 256

_GLOB_CHARS = frozenset("*?[")


class LayerNotFoundError(ValueError):
    """A layer name or glob that matches no module of the model."""


class RepeatedCallWarning(UserWarning):
    """A selected module ran more than once in one forward pass; each call is kept separately."""


class BatchStatisticsWarning(UserWarning):
    """Inputs were split into batches for a model whose batch norm uses batch statistics."""


def module_names(model: nn.Module) -> list[str]:
    """Paths of every submodule of ``model`` in ``named_modules()`` order (the root excluded)."""
    return [name for name, _ in model.named_modules() if name]


def resolve_layers(model: nn.Module, layers: str | Sequence[str]) -> list[str]:
    """Module paths selected by ``layers``: exact paths and fnmatch globs, in the order given
    (a glob's matches in ``named_modules()`` order), without duplicates.

    Raises:
        LayerNotFoundError: some pattern matches nothing; the message lists every module path.
    """
    patterns = [layers] if isinstance(layers, str) else list(layers)
    if not patterns:
        raise ValueError("no layers given: name at least one module path or glob")
    names = module_names(model)
    existing = set(names)
    chosen: list[str] = []
    unmatched: list[str] = []
    for pattern in patterns:
        if pattern in existing:
            matches = [pattern]
        elif _GLOB_CHARS & set(pattern):
            matches = fnmatch.filter(names, pattern)
        else:
            matches = []
        if not matches:
            unmatched.append(pattern)
        chosen += [m for m in matches if m not in chosen]
    if unmatched:
        raise LayerNotFoundError(
            f"layer(s) {unmatched} match no module of {type(model).__name__}; its modules are:"
            f" {', '.join(names) if names else '(none: the model has no submodules)'}"
        )
    return chosen


def _output_tensor(output: Any, name: str) -> torch.Tensor:
    """The tensor a module returned: the output itself, or the first element of a tuple/list."""
    if isinstance(output, (tuple, list)) and output:
        output = output[0]
    if not isinstance(output, torch.Tensor):
        raise ValueError(
            f"layer {name!r} returned a {type(output).__name__}; only modules returning a tensor"
            " (or a tuple whose first element is one) can be captured"
        )
    return output


class ActivationRecorder:
    """Forward hooks on named submodules that keep their outputs (a context manager).

    Inside ``with ActivationRecorder(model, names) as rec:``, every forward pass appends each
    selected module's output (detached; moved to the CPU unless ``keep_on_device``; dtype kept)
    and :meth:`take` returns and clears them. The hooks are removed on exit, whatever happens.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], *, keep_on_device: bool = False):
        modules = dict(model.named_modules())
        missing = [name for name in layers if name not in modules]
        if missing:
            raise LayerNotFoundError(f"layer(s) {missing} are not modules of {type(model).__name__}")
        self._modules = {name: modules[name] for name in layers}
        self._keep_on_device = keep_on_device
        self._outputs: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> ActivationRecorder:
        try:
            for name, module in self._modules.items():
                self._handles.append(module.register_forward_hook(self._hook(name)))
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove every hook (idempotent)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, name: str):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            t = _output_tensor(output, name).detach()
            self._outputs[name].append(t if self._keep_on_device else t.to("cpu"))

        return hook

    def take(self) -> dict[str, torch.Tensor]:
        """Outputs recorded since the last call: ``{name: tensor}``, or ``{name[i]: tensor}`` for
        each call ``i`` of a module that ran more than once. Raises ValueError for a selected
        module that did not run."""
        out: dict[str, torch.Tensor] = {}
        for name, outputs in self._outputs.items():
            if not outputs:
                raise ValueError(f"layer {name!r} was not called in the forward pass")
            if len(outputs) == 1:
                out[name] = outputs[0]
            else:
                out.update({f"{name}[{i}]": t for i, t in enumerate(outputs)})
            self._outputs[name] = []
        return out


def uses_batch_statistics(model: nn.Module, *, train_mode: bool = False, batch_stats: bool = False) -> bool:
    """True when some batch-norm layer of ``model`` would normalise with the statistics of the
    batch: in train mode, with ``batch_stats``, or when it keeps no running statistics."""
    return any(
        train_mode or batch_stats or not m.track_running_stats
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    )


@contextmanager
def forward_mode(model: nn.Module, *, train_mode: bool = False, batch_stats: bool = False) -> Iterator[None]:
    """Run the body in eval mode (or train mode), then restore.

    ``batch_stats=True`` keeps eval mode but puts batch-norm layers in train mode, so they use
    batch statistics ("batch" batch norm of MAML snapshots). Afterwards every module's
    ``training`` flag and, if anything ran in train mode, every buffer (batch-norm running
    statistics and counters) are restored to their values before the call.
    """
    flags = [(m, m.training) for m in model.modules()]
    saved = {name: b.detach().clone() for name, b in model.named_buffers()} if (train_mode or batch_stats) else {}
    try:
        model.train(train_mode)
        if batch_stats:
            for m in model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.train(True)
        yield
    finally:
        for m, flag in flags:
            m.training = flag
        with torch.no_grad():
            for name, b in model.named_buffers():
                if name in saved:
                    b.copy_(saved[name])


def as_input_tensor(inputs: Any, model: nn.Module) -> torch.Tensor:
    """Inputs ``(N, ...)`` as a tensor; floating inputs take the dtype of the model's first
    floating parameter (float32 for a model without one), integer inputs (token ids) are kept."""
    x = torch.from_numpy(np.asarray(inputs)) if not isinstance(inputs, torch.Tensor) else inputs
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(f"inputs must be (N, ...) with N >= 1; got shape {tuple(x.shape)}")
    if x.is_floating_point():
        dtypes = [p.dtype for p in model.parameters() if p.is_floating_point()]
        x = x.to(dtypes[0] if dtypes else torch.float32)
    return x.detach()


def resolve_batch_size(
    n: int, batch_size: int | None, model: nn.Module, *, train_mode: bool = False, batch_stats: bool = False
) -> int:
    """The batch size used for ``n`` inputs (see the module docstring for ``None``); warns with
    :class:`BatchStatisticsWarning` when an explicit size splits inputs for a batch-statistics
    model."""
    batch_norm_batch = uses_batch_statistics(model, train_mode=train_mode, batch_stats=batch_stats)
    if batch_size is None:
        return n if (batch_norm_batch or n <= WHOLE_BATCH_LIMIT) else DEFAULT_BATCH_SIZE
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be a positive integer or None; got {batch_size!r}")
    if batch_norm_batch and batch_size < n:
        warnings.warn(
            f"batch_size={batch_size} splits {n} inputs, but batch norm in {type(model).__name__}"
            " uses batch statistics: activations depend on which inputs share a batch (pass"
            " batch_size=None for one batch)",
            BatchStatisticsWarning,
            stacklevel=3,
        )
    return int(batch_size)


def iter_activations(
    model: nn.Module,
    inputs: Any,
    layers: str | Sequence[str],
    *,
    batch_size: int | None = None,
    device: str | torch.device = "cpu",
    train_mode: bool = False,
    batch_stats: bool = False,
    keep_on_device: bool = False,
    progress: bool = True,
    desc: str = "forward",
) -> Iterator[dict[str, torch.Tensor]]:
    """Yield, for each batch of ``inputs`` ``(N, ...)``, the outputs of the selected layers
    ``{key: (B, ...)}`` (keys as in :meth:`ActivationRecorder.take`).

    The model is moved to ``device`` (in place, like ``Module.to``); inputs are moved batch by
    batch. Hooks exist only while the generator runs and are removed when it finishes, raises
    or is closed.
    """
    names = resolve_layers(model, layers)
    x = as_input_tensor(inputs, model)
    n = x.shape[0]
    size = resolve_batch_size(n, batch_size, model, train_mode=train_mode, batch_stats=batch_stats)
    model.to(device)
    keys: list[str] | None = None
    with (
        forward_mode(model, train_mode=train_mode, batch_stats=batch_stats),
        ActivationRecorder(model, names, keep_on_device=keep_on_device) as recorder,
    ):
        for start in tqdm(range(0, n, size), desc=desc, unit="batch", disable=not progress, leave=False):
            with torch.no_grad():  # only around the forward: never across a yield
                _forward(model, x[start : start + size].to(device))
            acts = recorder.take()
            if keys is None:
                keys = list(acts)
                _warn_repeated(names, keys)
            elif list(acts) != keys:
                raise ValueError(
                    f"the layers ran a different number of times in batch starting at input"
                    f" {start}: {list(acts)} instead of {keys}"
                )
            yield acts


def _forward(model: nn.Module, batch: torch.Tensor) -> None:
    """``model(batch)``; a model that cannot take the inputs is a ValueError saying what they are
    (not the traceback from deep inside the model)."""
    try:
        model(batch)
    except (RuntimeError, TypeError, ValueError, IndexError) as err:
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        hint = (
            " Integer and bool inputs are passed as they are (token ids); images must be floating point, e.g. x / 255."
            if not batch.is_floating_point()
            else ""
        )
        raise ValueError(
            f"the model cannot take inputs of shape {tuple(batch.shape)} and dtype"
            f" {str(batch.dtype).removeprefix('torch.')}: {type(err).__name__}: {first}.{hint}"
        ) from None


def _warn_repeated(names: Sequence[str], keys: Sequence[str]) -> None:
    """Warn about selected modules recorded under several ``name[i]`` keys."""
    repeated = [name for name in names if name not in keys]
    if repeated:
        warnings.warn(
            f"module(s) {repeated} ran more than once per forward pass; each call is recorded"
            " separately as NAME[0], NAME[1], ... in call order",
            RepeatedCallWarning,
            stacklevel=3,
        )


def capture_activations(
    model: nn.Module, inputs: Any, layers: str | Sequence[str], **options: Any
) -> dict[str, torch.Tensor]:
    """Outputs of the selected layers for all ``inputs``: ``{key: (N, ...)}`` in the layers'
    dtype (float32 for most models; measures upcast to float64 themselves), on the CPU unless
    ``keep_on_device``. Batches are concatenated along the first axis.

    ``options`` are the keyword arguments of :func:`iter_activations`: ``batch_size``,
    ``device``, ``train_mode``, ``batch_stats``, ``keep_on_device``, ``progress``.
    """
    batches: dict[str, list[torch.Tensor]] = {}
    for acts in iter_activations(model, inputs, layers, **options):
        for key, t in acts.items():
            batches.setdefault(key, []).append(t)
    return {key: parts[0] if len(parts) == 1 else torch.cat(parts) for key, parts in batches.items()}
