"""Layer-by-layer similarity of two models (or two checkpoints of one model) on the same inputs.

The result is a tidy :class:`pandas.DataFrame`, one row per compared layer pair and measure,
with the columns of :data:`COLUMNS`:

========  ====================================================================================
layer_a   layer (capture key) of model A; ``name[i]`` for call ``i`` of a module run twice
layer_b   layer of model B
measure   measure name as requested (a key of :data:`repsim.measures.MEASURES`)
value     the similarity (float); NaN when the measure could not be computed, see ``reason``
conv      convolutional policy applied (``"none"`` when both activations are 2-D)
n         datapoints the measure saw (after the policy: ``N*H*W`` for ``"channels"``)
d_a, d_b  neurons of layer_a and layer_b after the policy
matched   True for the layer pairs that correspond (same name, or i-th with i-th); the
          per-layer plots use these rows, the heatmaps use all rows
reason    empty, or why value is NaN (the measure's ValueError message)
========  ====================================================================================

**Undefined values are NaN with a reason, never a crash and never a made-up number.** A
measure raises ValueError for input it cannot handle (CCA with ``d >= n``, too few datapoints
for debiased CKA, a dead layer with zero variance, two layers with different numbers of
datapoints such as conv layers of different spatial size under ``conv="channels"``); that one
row gets ``value = NaN`` and the message in ``reason``, the other rows are computed, and one
:class:`UndefinedSimilarityWarning` says how many rows are NaN. Cross-layer pairs of conv layers
with different spatial sizes need ``conv="mean"`` or ``"flatten"`` (same ``N`` datapoints).

**Batching and streaming.** With one forward batch (the default for up to
:data:`repsim.capture.WHOLE_BATCH_LIMIT` inputs, and always for models whose batch norm uses
batch statistics) all activations are compared in memory. With several batches, the measures
in :data:`STREAMING_MEASURES` (linear and debiased CKA, the CCA family) are accumulated batch by
batch with the exact accumulators of :mod:`repsim.measures.streaming`, so the activations of all inputs
are never held at once; the others (kernel CKA, Procrustes, RSA) need every activation in memory
and raise ValueError when the estimated float64 size exceeds ``memory_limit``.

Imports: :mod:`repsim.capture` and :mod:`repsim.measures` (inputs, the registry, the streaming
accumulators); never files, plots or :mod:`meta`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing
from itertools import chain
from typing import Any

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from repsim.capture import iter_activations, resolve_batch_size, resolve_layers
from repsim.measures.inputs import CONV_POLICIES, as_representation

#: Values of the ``pairs`` argument.
PAIRS = ("diagonal", "all")
#: Columns of the DataFrame returned by :func:`compare_models`, in order.
COLUMNS = ("layer_a", "layer_b", "measure", "value", "conv", "n", "d_a", "d_b", "matched", "reason")
#: Default bound (bytes) on the float64 activations held for measures computed in memory.
DEFAULT_MEMORY_LIMIT = 4 * 2**30
#: Measures that build ``n x n`` matrices (their memory estimate includes two of them).
GRAM_MEASURES = frozenset({"kernel_cka", "rsa"})

#: Measures that compare_models accumulates batch by batch, exactly, when the inputs span
#: several forward batches (see :func:`new_accumulator`).
STREAMING_MEASURES = frozenset({"cka", "linear_cka", "debiased_cka", "cca", "mean_cca", "svcca", "pwcca"})

MeasureFn = Callable[..., Any]
Pair = tuple[str, str, bool]


class UndefinedSimilarityWarning(UserWarning):
    """Some similarities could not be computed and are NaN (their ``reason`` says why)."""


def resolve_measures(
    measures: str | Sequence[str], measure_kwargs: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, MeasureFn]:
    """Measure functions by name from :data:`repsim.measures.MEASURES` (a comma-separated string
    or a sequence of names). Raises ValueError naming unknown measures and the known ones, and
    options in ``measure_kwargs`` for a measure not asked for, or not valid for it
    (:func:`repsim.measures.registry.check_options`), before anything is computed."""
    from repsim.measures import MEASURES
    from repsim.measures.registry import check_options

    names = [m.strip() for m in measures.split(",")] if isinstance(measures, str) else list(measures)
    names = [m for m in names if m]
    if not names:
        raise ValueError("no measures given")
    unknown = [m for m in names if m not in MEASURES]
    if unknown:
        raise ValueError(f"unknown measure(s) {unknown}; choose from {sorted(MEASURES)}")
    for name, options in (measure_kwargs or {}).items():
        if name not in names:
            raise ValueError(f"options are given for {name!r}, which is not among the measures {names}")
        check_options(name, options)
    return {m: MEASURES[m] for m in dict.fromkeys(names)}


def check_choice(value: str, choices: Sequence[str], what: str) -> str:
    """Return ``value`` if it is one of ``choices``, else raise ValueError naming ``what``."""
    if value not in choices:
        raise ValueError(f"{what} must be one of {tuple(choices)}; got {value!r}")
    return value


def layer_pairs(keys_a: Sequence[str], keys_b: Sequence[str], pairs: str, *, by_name: bool) -> list[Pair]:
    """The ``(layer_a, layer_b, matched)`` triples to compare.

    Matched pairs are same-named keys (``by_name``; every key of A must exist in B) or the
    i-th key of A with the i-th of B (equal counts needed). ``pairs="diagonal"`` gives the
    matched pairs; ``"all"`` gives every key of A against every key of B, marking the matched.
    """
    check_choice(pairs, PAIRS, "pairs")
    if by_name:
        missing = [k for k in keys_a if k not in keys_b]
        if missing:
            raise ValueError(f"layers {missing} of model A have no same-named layer in model B ({list(keys_b)})")
        matched = [(k, k) for k in keys_a]
    else:
        if len(keys_a) != len(keys_b):
            raise ValueError(
                f"layers_a and layers_b select {len(keys_a)} and {len(keys_b)} layers; matched"
                f" pairs need equal counts: {list(keys_a)} vs {list(keys_b)}"
            )
        matched = list(zip(keys_a, keys_b))
    if pairs == "diagonal":
        return [(a, b, True) for a, b in matched]
    chosen = set(matched)
    return [(a, b, (a, b) in chosen) for a in keys_a for b in keys_b]


def representation_shape(shape: Sequence[int], conv: str) -> tuple[int, int]:
    """``(n, d)`` of an activation of ``shape`` after the policy ``conv`` (4-D inputs) or as
    it is (2-D); other ranks count ``shape[0]`` datapoints of ``prod(shape[1:])`` values."""
    if len(shape) == 4:
        n, c, h, w = shape
        return {"channels": (n * h * w, c), "flatten": (n, c * h * w), "mean": (n, c)}[conv]
    return int(shape[0]), int(math.prod(shape[1:]))


def _row(
    a: str,
    b: str,
    measure: str,
    matched: bool,
    value: float,
    reason: str,
    conv: str,
    shape_a: Sequence[int],
    shape_b: Sequence[int],
) -> dict[str, Any]:
    """One result row (see :data:`COLUMNS`)."""
    used = conv if (len(shape_a) == 4 or len(shape_b) == 4) else "none"
    n_a, d_a = representation_shape(shape_a, conv)
    _, d_b = representation_shape(shape_b, conv)
    return {
        "layer_a": a,
        "layer_b": b,
        "measure": measure,
        "value": value,
        "conv": used,
        "n": n_a,
        "d_a": d_a,
        "d_b": d_b,
        "matched": matched,
        "reason": reason,
    }


def evaluate(fn: MeasureFn, x: Any, y: Any, *, conv: str, kwargs: Mapping[str, Any]) -> tuple[float, str]:
    """``(float(fn(x, y, conv=conv, **kwargs)), "")``, or ``(nan, message)`` when the measure
    raises ValueError (input it cannot handle)."""
    try:
        return float(fn(x, y, conv=conv, **kwargs)), ""
    except ValueError as err:
        return math.nan, str(err)


def to_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows as a DataFrame with exactly :data:`COLUMNS`; warns if some values are NaN."""
    df = pd.DataFrame(list(rows), columns=list(COLUMNS))
    df = df.astype({"value": float, "n": int, "d_a": int, "d_b": int, "matched": bool})
    warn_undefined(df, lambda row: f"{row['measure']} of {row['layer_a']} vs {row['layer_b']}")
    return df


def warn_undefined(df: pd.DataFrame, describe: Callable[[pd.Series], str]) -> None:
    """One :class:`UndefinedSimilarityWarning` if some ``value`` of ``df`` is NaN, quoting the
    first such row (``describe(row)``) and its ``reason``."""
    undefined = df[df["value"].isna()]
    if len(undefined):
        first = undefined.iloc[0]
        warnings.warn(
            f"{len(undefined)} of {len(df)} similarities are NaN (see the 'reason' column), e.g."
            f" {describe(first)}: {first['reason']}",
            UndefinedSimilarityWarning,
            stacklevel=3,
        )


def pair_rows(
    acts_a: Mapping[str, Any],
    acts_b: Mapping[str, Any],
    pairs: Sequence[Pair],
    measures: Mapping[str, MeasureFn],
    *,
    conv: str = "channels",
    measure_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Result rows (:data:`COLUMNS`) for each pair and measure of captured activations
    ``{key: (N, ...)}``, all in memory, in pair order then measure order."""
    measure_kwargs = measure_kwargs or {}
    jobs = [(p, m) for p in pairs for m in measures]
    rows = []
    for (a, b, matched), m in tqdm(jobs, desc="similarity", disable=not progress, leave=False):
        kwargs = measure_kwargs.get(m, {})
        value, reason = evaluate(measures[m], acts_a[a], acts_b[b], conv=conv, kwargs=kwargs)
        rows.append(_row(a, b, m, matched, value, reason, conv, acts_a[a].shape, acts_b[b].shape))
    return rows


def _select(acts: Mapping[str, torch.Tensor], names: Sequence[str]) -> dict[str, torch.Tensor]:
    """The entries of ``acts`` recorded for ``names`` (``name`` or ``name[i]``), in ``acts`` order."""
    wanted = set(names)
    return {k: v for k, v in acts.items() if k.split("[", 1)[0] in wanted}


def _paired_batches(
    model_a: nn.Module, model_b: nn.Module, inputs: Any, names_a: list[str], names_b: list[str], **kw: Any
) -> Iterator[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]]:
    """Activations of both models batch by batch; one forward pass when they are one object."""
    if model_b is model_a:
        union = names_a + [n for n in names_b if n not in names_a]
        with closing(iter_activations(model_a, inputs, union, **kw)) as gen:
            for acts in gen:
                yield _select(acts, names_a), _select(acts, names_b)
        return
    with (
        closing(iter_activations(model_a, inputs, names_a, desc="model A", **kw)) as gen_a,
        closing(iter_activations(model_b, inputs, names_b, desc="model B", **kw)) as gen_b,
    ):
        yield from zip(gen_a, gen_b)


def estimate_memory(
    shapes_a: Mapping[str, Sequence[int]],
    shapes_b: Mapping[str, Sequence[int]],
    pairs: Sequence[Pair],
    measures: Sequence[str],
    *,
    n_inputs: int,
    conv: str,
) -> int:
    """Bytes to hold, in float64, every activation the pairs use for ``n_inputs`` inputs (the
    shapes are those of one batch), plus two ``n x n`` float64 matrices for a Gram measure."""

    def total(shape: Sequence[int]) -> float:
        return math.prod(shape) / shape[0] * n_inputs * 8

    used_a = {a for a, _, _ in pairs}
    used_b = {b for _, b, _ in pairs}
    size = sum(total(shapes_a[k]) for k in used_a) + sum(total(shapes_b[k]) for k in used_b)
    if GRAM_MEASURES & set(measures):
        rows = max(representation_shape(shapes_a[a], conv)[0] / shapes_a[a][0] for a in used_a)
        size += 2 * 8 * (rows * n_inputs) ** 2
    return int(size)


def _check_memory(estimate: int, limit: float, measures: Sequence[str], n_inputs: int) -> None:
    """Raise ValueError when measures computed in memory would need more than ``limit`` bytes."""
    if estimate > limit:
        raise ValueError(
            f"measures {list(measures)} need all activations of {n_inputs} inputs in memory: about"
            f" {estimate / 2**30:.2f} GiB in float64, above memory_limit={limit / 2**30:.2f} GiB."
            f" Use streaming measures only ({sorted(STREAMING_MEASURES)}) with a batch size,"
            " fewer layers or inputs, or a larger memory_limit"
        )


def new_accumulator(measure: str, kwargs: Mapping[str, Any]) -> Any:
    """A fresh exact streaming accumulator of :mod:`repsim.measures.streaming` for a measure of
    :data:`STREAMING_MEASURES` (``update(x, y)`` with 2-D batches, then ``result()``):
    :class:`~repsim.measures.StreamingCKA` for the CKA names, otherwise
    :class:`~repsim.measures.StreamingCCA` (``"cca"`` is mean CCA). ``kwargs`` are the
    measure's keyword arguments (``keep`` for SVCCA, ``symmetric`` for PWCCA, ``rtol``, ``dtype``).
    """
    from repsim.measures import StreamingCCA, StreamingCKA

    try:
        if measure in ("cka", "linear_cka", "debiased_cka"):
            return StreamingCKA(debiased=measure == "debiased_cka", **kwargs)
        return StreamingCCA("mean_cca" if measure == "cca" else measure, **kwargs)
    except TypeError as err:
        raise ValueError(f"measure_kwargs {dict(kwargs)} of {measure!r} cannot be used when streaming: {err}") from None


class _Stream:
    """One exact streaming accumulator of :mod:`repsim.measures.streaming` for one pair and measure; a
    ValueError during an update ends it and keeps the message as the row's reason."""

    def __init__(self, measure: str, kwargs: Mapping[str, Any]):
        self.measure = measure
        self.reason = ""
        self.accumulator = new_accumulator(measure, kwargs)

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if self.reason:
            return
        if x.shape[0] != y.shape[0]:
            self.reason = f"X and Y must describe the same datapoints: a batch gives {x.shape[0]} and {y.shape[0]} rows"
            return
        try:
            self.accumulator.update(x, y)
        except ValueError as err:
            self.reason = str(err)

    def value(self) -> tuple[float, str]:
        if self.reason:
            return math.nan, self.reason
        try:
            return float(self.accumulator.result()), ""
        except ValueError as err:
            return math.nan, str(err)


def _representations(acts: Mapping[str, torch.Tensor], keys: set[str], conv: str) -> dict[str, Any]:
    """2-D float64 representations of one batch's activations (or the ValueError message)."""
    out: dict[str, Any] = {}
    for key in keys:
        try:
            out[key] = as_representation(acts[key], name=key, conv=conv)
        except ValueError as err:
            out[key] = str(err)
    return out


def _compare_batched(
    batches: Iterator[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]],
    plan: Sequence[Pair],
    fns: Mapping[str, MeasureFn],
    shapes_a: Mapping[str, Sequence[int]],
    shapes_b: Mapping[str, Sequence[int]],
    *,
    conv: str,
    n_inputs: int,
    memory_limit: float,
    measure_kwargs: Mapping[str, Mapping[str, Any]],
    progress: bool,
) -> pd.DataFrame:
    """Compare over several batches: streaming measures accumulate batch by batch, the others
    get the concatenated activations (after the memory check)."""
    streamed = [m for m in fns if m in STREAMING_MEASURES]
    held = [m for m in fns if m not in STREAMING_MEASURES]
    if held:
        estimate = estimate_memory(shapes_a, shapes_b, plan, held, n_inputs=n_inputs, conv=conv)
        _check_memory(estimate, memory_limit, held, n_inputs)
    streams = {(a, b, m): _Stream(m, measure_kwargs.get(m, {})) for a, b, _ in plan for m in streamed}
    used_a, used_b = {a for a, _, _ in plan}, {b for _, b, _ in plan}
    stored_a: dict[str, list[torch.Tensor]] = {}
    stored_b: dict[str, list[torch.Tensor]] = {}
    for acts_a, acts_b in batches:
        reps_a, reps_b = _representations(acts_a, used_a, conv), _representations(acts_b, used_b, conv)
        for (a, b, _), stream in streams.items():
            x, y = reps_a[a], reps_b[b]
            if isinstance(x, str) or isinstance(y, str):
                stream.reason = stream.reason or (x if isinstance(x, str) else y)
            else:
                stream.update(x, y)
        if held:
            for key in used_a:
                stored_a.setdefault(key, []).append(acts_a[key])
            for key in used_b:
                stored_b.setdefault(key, []).append(acts_b[key])
    full_a = {k: (n_inputs, *s[1:]) for k, s in shapes_a.items()}
    full_b = {k: (n_inputs, *s[1:]) for k, s in shapes_b.items()}
    matched = {(a, b): flag for a, b, flag in plan}
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    for (a, b, m), stream in streams.items():
        value, reason = stream.value()
        rows[a, b, m] = _row(a, b, m, matched[a, b], value, reason, conv, full_a[a], full_b[b])
    if held:
        cat_a = {k: torch.cat(v) for k, v in stored_a.items()}
        cat_b = {k: torch.cat(v) for k, v in stored_b.items()}
        for row in pair_rows(
            cat_a, cat_b, plan, {m: fns[m] for m in held}, conv=conv, measure_kwargs=measure_kwargs, progress=progress
        ):
            rows[row["layer_a"], row["layer_b"], row["measure"]] = row
    return to_frame([rows[a, b, m] for a, b, _ in plan for m in fns])


def compare_models(
    model_a: nn.Module,
    model_b: nn.Module,
    inputs: Any,
    *,
    layers_a: str | Sequence[str],
    layers_b: str | Sequence[str] | None = None,
    measures: str | Sequence[str] = ("cca", "cka"),
    pairs: str = "diagonal",
    conv: str = "channels",
    batch_size: int | None = None,
    device: str | torch.device = "cpu",
    train_mode: bool = False,
    memory_limit: float = DEFAULT_MEMORY_LIMIT,
    measure_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Compare the representations of two models layer by layer on the same ``inputs``.

    Args:
        model_a, model_b: any modules (the same object is run once).
        inputs: ``(N, ...)`` tensor or array fed to both models.
        layers_a: module paths or globs of model A (see :func:`repsim.capture.resolve_layers`).
        layers_b: those of model B; ``None`` uses ``layers_a`` and matches layers by name,
            otherwise the i-th layer of A matches the i-th of B.
        measures: names in :data:`repsim.measures.MEASURES` (sequence or comma-separated).
        pairs: ``"diagonal"`` (matched pairs) or ``"all"`` (every layer of A against every
            layer of B, as a heatmap needs).
        conv: policy for 4-D activations, one of :data:`repsim.CONV_POLICIES`; ``"channels"``
            (channels are neurons, every position of every input a datapoint) is the paper's.
        batch_size: inputs per forward pass; ``None`` is one batch where it matters or fits
            (see :mod:`repsim.capture`).
        device: where the models run (they are moved there in place, like ``Module.to``) and
            where the similarity is computed (activations stay on a non-CPU device).
        train_mode: forward in train mode (batch norm uses batch statistics; buffers restored).
        memory_limit: bytes allowed for activations of measures computed in memory.
        measure_kwargs: extra keyword arguments per measure name, e.g. ``{"svcca": {"keep": 0.99}}``.
        progress: show tqdm bars.

    Returns:
        DataFrame with :data:`COLUMNS` (module docstring), rows in pair order then measure order.
    """
    fns = resolve_measures(measures, measure_kwargs)
    check_choice(conv, CONV_POLICIES, "conv")
    check_choice(pairs, PAIRS, "pairs")
    names_a = resolve_layers(model_a, layers_a)
    names_b = resolve_layers(model_b, layers_a if layers_b is None else layers_b)
    n_inputs = len(inputs)
    size = max(resolve_batch_size(n_inputs, batch_size, m, train_mode=train_mode) for m in (model_a, model_b))
    keep = torch.device(device).type != "cpu"
    batches = _paired_batches(
        model_a,
        model_b,
        inputs,
        names_a,
        names_b,
        batch_size=size,
        device=device,
        train_mode=train_mode,
        keep_on_device=keep,
        progress=progress,
    )
    with closing(batches):
        first_a, first_b = next(batches)
        plan = layer_pairs(list(first_a), list(first_b), pairs, by_name=layers_b is None)
        shapes_a = {k: tuple(v.shape) for k, v in first_a.items()}
        shapes_b = {k: tuple(v.shape) for k, v in first_b.items()}
        if size >= n_inputs:
            estimate = estimate_memory(shapes_a, shapes_b, plan, list(fns), n_inputs=n_inputs, conv=conv)
            _check_memory(estimate, memory_limit, list(fns), n_inputs)
            return to_frame(
                pair_rows(first_a, first_b, plan, fns, conv=conv, measure_kwargs=measure_kwargs, progress=progress)
            )
        return _compare_batched(
            chain([(first_a, first_b)], batches),
            plan,
            fns,
            shapes_a,
            shapes_b,
            conv=conv,
            n_inputs=n_inputs,
            memory_limit=memory_limit,
            measure_kwargs=measure_kwargs or {},
            progress=progress,
        )
