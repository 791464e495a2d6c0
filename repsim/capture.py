"""Activations of named layers of any ``nn.Module``, captured with forward hooks.

Layers are module paths of ``model.named_modules()`` (``"conv1"``, ``"layer2.0.conv1"``) or
:mod:`fnmatch` globs. A glob is matched against the model's **named layers** first: the names in
a ``layers`` attribute of the model, when it has one that is a sequence of module paths (conv4's
``("conv1", "conv2", "conv3", "conv4", "head")``), else its top-level children. Only a glob that
matches none of them is matched against every module path (``*`` then also crosses dots). So on
conv4 ``"conv*"`` is ``conv1``..``conv4`` (not ``conv1.conv``, ``conv1.norm``, ...), and on a
BERT ``"encoder.layer.?"`` is its blocks ``encoder.layer.0``, ``encoder.layer.1``, ... A pattern
that matches nothing raises :class:`LayerNotFoundError`, which lists the named layers and every
module path.

Inputs are one tensor ``(N, ...)``, passed as ``model(x)``, or a mapping of names to tensors that
all have ``N`` rows (``{"input_ids": ..., "attention_mask": ...}``), passed as ``model(**x)``;
batches are cut along the first axis of each.

The *output* of each selected module is recorded (for a module that returns a tuple, e.g. an
LSTM, its first element; for one that returns a mapping, e.g. a ``transformers`` model output,
its first tensor, ``last_hidden_state``). A module called more than once in one forward pass
(weight sharing, a block applied twice) is recorded **once per call**, under the keys
``name[0]``, ``name[1]``, ... in call order, with a :class:`RepeatedCallWarning`; the calls
are different representations (different depths of the computation), so they are never
concatenated.

Hooks live only inside :class:`ActivationRecorder` and are removed on exit, also when the
forward pass raises. Forward passes run under ``torch.no_grad()`` in eval mode by default (batch
norm uses its running statistics, dropout is off); ``train_mode=True`` runs in train mode
(batch norm normalises with the statistics of the batch it is given, dropout is on). Batch norm
running statistics and every other buffer are restored after a train-mode pass, and each
module's ``training`` flag is restored, so capturing never changes the model.

Batch composition matters when a batch-norm layer uses batch statistics (train mode,
``batch_stats=True``, ``track_running_stats=False``, or a batch norm of the model's own without
running statistics, as conv4's: :func:`uses_batch_statistics`): then the default
``batch_size=None`` passes all inputs as **one** batch, which reproduces what the network saw
during adaptation. Otherwise ``batch_size=None`` is one batch up to :data:`WHOLE_BATCH_LIMIT`
inputs and batches of :data:`DEFAULT_BATCH_SIZE` beyond that (the activations are the same
either way, up to floating-point rounding).

Imports: :mod:`repsim.progress` only (and torch, numpy); never :mod:`meta`.
"""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from repsim.progress import progress_bar

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


def named_layers(model: nn.Module) -> list[str]:
    """The layers a glob matches first: ``model.layers`` when it is a sequence of strings that
    are all module paths of ``model``, else the names of its top-level children."""
    declared = getattr(model, "layers", None)
    if isinstance(declared, (list, tuple)) and declared and all(isinstance(n, str) for n in declared):
        paths = set(module_names(model))
        if all(name in paths for name in declared):
            return list(declared)
    return [name for name, _ in model.named_children()]


def _matches(pattern: str, layers: list[str], names: list[str]) -> list[str]:
    """The module paths ``pattern`` selects: itself if it is one; for a glob, the named
    ``layers`` it matches, or else every module path (``names``) it matches."""
    if pattern in names:
        return [pattern]
    if not _GLOB_CHARS & set(pattern):
        return []
    return fnmatch.filter(layers, pattern) or fnmatch.filter(names, pattern)


def resolve_layers(model: nn.Module, layers: str | Sequence[str]) -> list[str]:
    """Module paths selected by ``layers``: exact paths and fnmatch globs, in the order given
    (a glob's matches in the order of the named layers, or of ``named_modules()``), without
    duplicates. A glob matches the named layers (:func:`named_layers`) before sub-modules.

    Raises:
        LayerNotFoundError: some pattern matches nothing; the message lists the named layers and
            every module path.

    Examples:
        >>> from torch import nn
        >>> block = lambda: nn.Sequential(nn.Conv2d(1, 1, 3), nn.ReLU())
        >>> net = nn.Sequential()
        >>> for name in ("conv1", "conv2"):
        ...     net.add_module(name, block())
        >>> net.add_module("head", nn.Linear(1, 1))
        >>> resolve_layers(net, "conv*"), resolve_layers(net, ["head", "conv?.1"])
        (['conv1', 'conv2'], ['head', 'conv1.1', 'conv2.1'])
    """
    patterns = [layers] if isinstance(layers, str) else list(layers)
    if not patterns:
        raise ValueError("no layers given: name at least one module path or glob")
    names, top = module_names(model), named_layers(model)
    chosen: list[str] = []
    unmatched: list[str] = []
    for pattern in patterns:
        matches = _matches(pattern, top, names)
        if not matches:
            unmatched.append(pattern)
        chosen += [m for m in matches if m not in chosen]
    if unmatched:
        raise LayerNotFoundError(
            f"layer(s) {unmatched} match no module of {type(model).__name__}; its named layers are:"
            f" {', '.join(top) if top else '(none)'}; every module path:"
            f" {', '.join(names) if names else '(none: the model has no submodules)'}"
        )
    return chosen


def _output_tensor(output: Any, name: str) -> torch.Tensor:
    """The tensor a module returned: the output itself, the first element of a tuple/list, or the
    first tensor of a mapping (a ``transformers`` model output)."""
    if isinstance(output, Mapping):
        output = next((v for v in output.values() if isinstance(v, torch.Tensor)), output)
    elif isinstance(output, (tuple, list)) and output:
        output = output[0]
    if not isinstance(output, torch.Tensor):
        raise ValueError(
            f"layer {name!r} returned a {type(output).__name__}; only modules returning a tensor"
            " (or a tuple whose first element is one, or a mapping holding one) can be captured"
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
    batch: a torch batch norm in train mode, with ``batch_stats``, or keeping no running
    statistics; or a batch norm of the model's own (a module whose class name contains
    ``BatchNorm``, such as conv4's ``ShiftBatchNorm``) that keeps no ``running_mean``."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if train_mode or batch_stats or not m.track_running_stats:
                return True
        elif "BatchNorm" in type(m).__name__ and getattr(m, "running_mean", None) is None:
            return True
    return False


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


Inputs = torch.Tensor | Mapping[str, torch.Tensor]


def _input_tensor(values: Any, model: nn.Module, name: str) -> torch.Tensor:
    """One input array ``(N, ...)`` as a tensor; floating values take the dtype of the model's
    first floating parameter (float32 for a model without one), integers (token ids) are kept."""
    x = torch.from_numpy(np.asarray(values)) if not isinstance(values, torch.Tensor) else values
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(f"{name} must be (N, ...) with N >= 1; got shape {tuple(x.shape)}")
    if x.is_floating_point():
        dtypes = [p.dtype for p in model.parameters() if p.is_floating_point()]
        x = x.to(dtypes[0] if dtypes else torch.float32)
    return x.detach()


def as_model_inputs(inputs: Any, model: nn.Module) -> Inputs:
    """``inputs`` as the model takes them: a tensor ``(N, ...)`` (see :func:`_input_tensor`), or a
    mapping of keyword names to such tensors, which must all have the same ``N``."""
    if not isinstance(inputs, Mapping):
        return _input_tensor(inputs, model, "inputs")
    if not inputs:
        raise ValueError("keyword inputs are empty: give at least one array, e.g. input_ids")
    out = {str(k): _input_tensor(v, model, f"input {k!r}") for k, v in inputs.items()}
    counts = {k: v.shape[0] for k, v in out.items()}
    if len(set(counts.values())) > 1:
        raise ValueError(f"keyword inputs must all have the same number of rows N; got {counts}")
    return out


def input_count(inputs: Inputs) -> int:
    """``N``, the number of inputs (rows of the tensor, or of every keyword input)."""
    return len(next(iter(inputs.values()))) if isinstance(inputs, Mapping) else len(inputs)


def input_rows(inputs: Inputs, rows: slice | torch.Tensor) -> Inputs:
    """The inputs ``rows`` (a slice or an index tensor) of a tensor or of every keyword input."""
    if isinstance(inputs, Mapping):
        return {k: v[rows] for k, v in inputs.items()}
    return inputs[rows]


def _inputs_to(inputs: Inputs, device: str | torch.device) -> Inputs:
    if isinstance(inputs, Mapping):
        return {k: v.to(device) for k, v in inputs.items()}
    return inputs.to(device)


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
    """Yield, for each batch of ``inputs`` (a tensor ``(N, ...)`` or keyword inputs, see the
    module docstring), the outputs of the selected layers
    ``{key: (B, ...)}`` (keys as in :meth:`ActivationRecorder.take`).

    The model is moved to ``device`` (in place, like ``Module.to``); inputs are moved batch by
    batch. Hooks exist only while the generator runs and are removed when it finishes, raises
    or is closed.
    """
    names = resolve_layers(model, layers)
    x = as_model_inputs(inputs, model)
    n = input_count(x)
    size = resolve_batch_size(n, batch_size, model, train_mode=train_mode, batch_stats=batch_stats)
    model.to(device)
    keys: list[str] | None = None
    starts = range(0, n, size)
    with (
        forward_mode(model, train_mode=train_mode, batch_stats=batch_stats),
        ActivationRecorder(model, names, keep_on_device=keep_on_device) as recorder,
        progress_bar(total=len(starts), desc=desc, unit="batch", enabled=progress, leave=False) as bar,
    ):
        for start in starts:
            with torch.no_grad():  # only around the forward: never across a yield
                _forward(model, _inputs_to(input_rows(x, slice(start, start + size)), device))
            bar.update(1)
            if start + size >= n:
                bar.close()  # the stage ends with its last forward pass, not when the consumer stops
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


def _forward(model: nn.Module, batch: Inputs) -> None:
    """``model(batch)`` (``model(**batch)`` for keyword inputs); a model that cannot take the
    inputs is a ValueError saying what they are (not the traceback from deep inside the model)."""
    try:
        model(**batch) if isinstance(batch, Mapping) else model(batch)
    except (RuntimeError, TypeError, ValueError, IndexError) as err:
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        tensors = batch.values() if isinstance(batch, Mapping) else [batch]
        hint = (
            " Integer and bool inputs are passed as they are (token ids); images must be floating point, e.g. x / 255."
            if not all(t.is_floating_point() for t in tensors)
            else ""
        )
        raise ValueError(f"the model cannot take {_describe(batch)}: {type(err).__name__}: {first}.{hint}") from None


def _describe(batch: Inputs) -> str:
    """``"inputs of shape (4, 6) and dtype float32"``, or the same for each keyword input."""

    def one(t: torch.Tensor) -> str:
        return f"shape {tuple(t.shape)} and dtype {str(t.dtype).removeprefix('torch.')}"

    if isinstance(batch, Mapping):
        return "keyword inputs " + ", ".join(f"{k} of {one(v)}" for k, v in batch.items())
    return f"inputs of {one(batch)}"


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
