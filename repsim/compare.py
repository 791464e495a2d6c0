"""Layer-by-layer similarity of two models (or two checkpoints of one model) on the same inputs.

The result is a tidy :class:`pandas.DataFrame`, one row per compared layer pair and measure,
with the columns of :data:`COLUMNS`:

========  ====================================================================================
layer_a   layer (capture key) of model A; ``name[i]`` for call ``i`` of a module run twice
layer_b   layer of model B
measure   measure name as requested (a key of :data:`repsim.measures.MEASURES`)
value     the similarity (float); NaN when the measure could not be computed, see ``reason``
conv      convolutional policy the pair used (``"none"`` when neither activation is 4-D)
seq       sequence policy the pair used (``"none"`` when neither activation is 3-D)
n         datapoints the measure saw (after the policy: ``N*H*W`` for ``"channels"``, the real
          tokens for ``"tokens"``)
d_a, d_b  neurons of layer_a and layer_b after the policy
matched   True for the layer pairs that correspond (same name, or i-th with i-th); the
          per-layer plots use these rows, the heatmaps use all rows
reason    empty, or why value is NaN (the measure's ValueError message)
========  ====================================================================================

**Policies.** 4-D activations ``(N, C, H, W)`` are reduced by ``conv``, 3-D sequences
``(N, T, D)`` by ``seq`` (no default: a sequence without a policy is refused), and pairs whose
rows would not be the same datapoints under them (maps of different sizes under
``"channels"``, cross-layer pairs of ``pairs="all"``) by the fallbacks, one row per input; see
:mod:`repsim.policies`. With keyword inputs, an ``"attention_mask"`` ``(N, T)`` among them
leaves padding tokens out of ``"tokens"`` and ``"mean"``.

**Undefined values are NaN with a reason, never a crash and never a made-up number.** A
measure raises ValueError for input it cannot handle (CCA with ``d >= n``, too few datapoints
for debiased CKA, a dead layer with zero variance); that one row gets ``value = NaN`` and the
message in ``reason``, the other rows are computed, and one :class:`UndefinedSimilarityWarning`
says how many rows are NaN.

**Batching, streaming, ranks.** With one forward batch (the default for up to
:data:`repsim.capture.WHOLE_BATCH_LIMIT` inputs, and always for models whose batch norm uses
batch statistics) all activations are compared in memory. With several batches, the measures
of :data:`repsim.streamed.STREAMING_MEASURES` are accumulated batch by batch, exactly
(:mod:`repsim.streamed`); the others need every activation in memory, within
``memory_limit``. With ``distributed=True`` (under ``torchrun``) the batches are dealt out to
the ranks (:mod:`repsim.distributed`) and the accumulators all-reduced: every rank returns the
table of one process, to rounding.

Imports: :mod:`repsim.capture`, :mod:`repsim.distributed`, :mod:`repsim.policies`,
:mod:`repsim.progress`, :mod:`repsim.streamed` and :mod:`repsim.measures`; never files, plots or
:mod:`meta`.
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

from repsim.capture import (
    input_count,
    input_rows,
    iter_activations,
    resolve_batch_size,
    resolve_layers,
    uses_batch_statistics,
)
from repsim.distributed import rank_and_world, shard_rows
from repsim.policies import Pair, Policies, Reduction, plan_reductions, prepare, representation_size
from repsim.progress import progress_bar
from repsim.streamed import STREAMING_MEASURES, check_memory, compare_batched, estimate_memory

#: Values of the ``pairs`` argument.
PAIRS = ("diagonal", "all")
#: Columns of the DataFrame returned by :func:`compare_models`, in order.
COLUMNS = ("layer_a", "layer_b", "measure", "value", "conv", "seq", "n", "d_a", "d_b", "matched", "reason")
#: Default bound (bytes) on the float64 activations held for measures computed in memory.
DEFAULT_MEMORY_LIMIT = 4 * 2**30
#: The keyword input that marks real tokens (1) and padding (0).
MASK_KEY = "attention_mask"
#: The default policies: conv ``"channels"`` (the paper's), no sequence policy, mean fallbacks.
PAPER_POLICIES = Policies()

MeasureFn = Callable[..., Any]


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


def real_tokens(mask: torch.Tensor | None) -> int | None:
    """The number of real tokens of an attention mask (``None`` without one)."""
    return None if mask is None else int((mask != 0).sum())


def make_row(
    pair: Pair,
    measure: str,
    outcome: tuple[float, str],
    reduction: Reduction,
    shapes: tuple[Sequence[int], Sequence[int]],
    tokens: int | None = None,
) -> dict[str, Any]:
    """One result row (see :data:`COLUMNS`); ``shapes`` are those of the activations of all the
    inputs, ``tokens`` the real tokens of the attention mask (if any)."""
    n, d_a = representation_size(shapes[0], reduction, tokens)
    _, d_b = representation_size(shapes[1], reduction, tokens)
    row = {"layer_a": pair[0], "layer_b": pair[1], "measure": measure, "value": outcome[0], **reduction.columns}
    return {**row, "n": n, "d_a": d_a, "d_b": d_b, "matched": pair[2], "reason": outcome[1]}


def evaluate(fn: MeasureFn, x: Any, y: Any, *, conv: str | None, kwargs: Mapping[str, Any]) -> tuple[float, str]:
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
    policies: Policies = PAPER_POLICIES,
    mask: torch.Tensor | None = None,
    measure_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Result rows (:data:`COLUMNS`) for each pair and measure of captured activations
    ``{key: (N, ...)}``, all in memory, in pair order then measure order; each pair reduced as
    :func:`repsim.policies.plan_reductions` says (``ValueError`` where it refuses)."""
    measure_kwargs = measure_kwargs or {}
    shapes_a = {a: tuple(acts_a[a].shape) for a, _, _ in pairs}
    shapes_b = {b: tuple(acts_b[b].shape) for _, b, _ in pairs}
    plan = plan_reductions(pairs, shapes_a, shapes_b, policies)
    tokens = real_tokens(mask)
    rows = []
    with progress_bar(total=len(pairs) * len(measures), desc="similarity", unit="measure", enabled=progress) as bar:
        for pair in pairs:
            a, b, _ = pair
            reduction = plan[a, b]
            try:
                x, y = prepare(acts_a[a], reduction, mask, name=a), prepare(acts_b[b], reduction, mask, name=b)
            except ValueError as err:
                x = y = str(err)
            for m, fn in measures.items():
                kwargs = measure_kwargs.get(m, {})
                outcome = (
                    (math.nan, x) if isinstance(x, str) else evaluate(fn, x, y, conv=reduction.conv, kwargs=kwargs)
                )
                rows.append(make_row(pair, m, outcome, reduction, (shapes_a[a], shapes_b[b]), tokens))
                bar.update(1)
    return rows


def _select(acts: Mapping[str, torch.Tensor], names: Sequence[str]) -> dict[str, torch.Tensor]:
    """The entries of ``acts`` recorded for ``names`` (``name`` or ``name[i]``), in ``acts`` order."""
    wanted = set(names)
    return {k: v for k, v in acts.items() if k.split("[", 1)[0] in wanted}


Batch = tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], "torch.Tensor | None"]


def _paired_batches(
    model_a: nn.Module,
    model_b: nn.Module,
    inputs: Any,
    mask: torch.Tensor | None,
    names_a: list[str],
    names_b: list[str],
    **kw: Any,
) -> Iterator[Batch]:
    """Activations of both models batch by batch, with the batch's attention mask (or ``None``);
    one forward pass when the models are one object."""
    size = kw["batch_size"]
    masks = (None if mask is None else mask[start : start + size] for start in range(0, input_count(inputs), size))
    if model_b is model_a:
        union = names_a + [n for n in names_b if n not in names_a]
        with closing(iter_activations(model_a, inputs, union, **kw)) as gen:
            for acts, batch_mask in zip(gen, masks):
                yield _select(acts, names_a), _select(acts, names_b), batch_mask
        return
    with (
        closing(iter_activations(model_a, inputs, names_a, desc="model A forward", **kw)) as gen_a,
        closing(iter_activations(model_b, inputs, names_b, desc="model B forward", **kw)) as gen_b,
    ):
        yield from zip(gen_a, gen_b, masks)


def _as_tensors(inputs: Any) -> Any:
    """Inputs as a tensor, or a dict of tensors (keyword inputs), without changing dtypes."""
    if isinstance(inputs, Mapping):
        return {str(k): torch.as_tensor(v) for k, v in inputs.items()}
    return inputs if isinstance(inputs, torch.Tensor) else torch.as_tensor(inputs)


def _batch_size(models: Sequence[nn.Module], n: int, batch_size: int | None, train_mode: bool, world: int) -> int:
    """The forward batch size: :func:`repsim.capture.resolve_batch_size`; under ``world`` ranks,
    a default size is cut so that every rank gets a batch, unless batch norm uses the batch's
    statistics (then splitting would change the activations, and :func:`shard_rows` says so)."""
    size = max(resolve_batch_size(n, batch_size, m, train_mode=train_mode) for m in models)
    if world > 1 and batch_size is None and not any(uses_batch_statistics(m, train_mode=train_mode) for m in models):
        size = min(size, -(-n // world))
    return size


def _streamed_rows(
    plan: Sequence[Pair],
    measures: Sequence[str],
    outcomes: Mapping[tuple[str, str, str], tuple[float, str]],
    reductions: Mapping[tuple[str, str], Reduction],
    shapes: tuple[Mapping[str, Sequence[int]], Mapping[str, Sequence[int]]],
    n_inputs: int,
    tokens: int | None,
) -> dict[tuple[str, str, str], dict[str, Any]]:
    """The rows of the streamed measures, ``{(layer_a, layer_b, measure): row}``; ``shapes`` are
    those of one batch, the rows count all ``n_inputs``."""
    full_a, full_b = ({k: (n_inputs, *s[1:]) for k, s in side.items()} for side in shapes)
    return {
        (a, b, m): make_row((a, b, matched), m, outcomes[a, b, m], reductions[a, b], (full_a[a], full_b[b]), tokens)
        for a, b, matched in plan
        for m in measures
    }


def _this_rank(inputs: Any, mask: torch.Tensor | None, size: int, fns: Mapping[str, MeasureFn]) -> tuple[Any, Any]:
    """The inputs (and attention mask) of this rank's batches (:func:`repsim.distributed.shard_rows`);
    ``ValueError`` for measures that cannot be all-reduced."""
    held = [m for m in fns if m not in STREAMING_MEASURES]
    if held:
        raise ValueError(
            f"measures {held} need every activation in one process; across ranks use streaming measures"
            f" ({sorted(STREAMING_MEASURES)}), or run in one process"
        )
    mine = shard_rows(input_count(inputs), size, *rank_and_world())
    return input_rows(inputs, mine), None if mask is None else mask[mine]


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
    seq: str | None = None,
    conv_fallback: str | None = "mean",
    seq_fallback: str | None = "mean",
    batch_size: int | None = None,
    device: str | torch.device = "cpu",
    train_mode: bool = False,
    memory_limit: float = DEFAULT_MEMORY_LIMIT,
    measure_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    progress: bool = True,
    distributed: bool = False,
) -> pd.DataFrame:
    """Compare the representations of two models layer by layer on the same ``inputs``.

    Args:
        model_a, model_b: any modules (the same object is run once).
        inputs: ``(N, ...)`` tensor or array fed to both models, or keyword inputs (a mapping of
            names to ``(N, ...)`` arrays, passed as ``model(**batch)``; an ``"attention_mask"``
            among them leaves padding out of the sequence policies).
        layers_a: module paths or globs of model A (see :func:`repsim.capture.resolve_layers`:
            ``"conv*"`` matches the model's named layers ``conv1``.. before any sub-module).
        layers_b: those of model B; ``None`` uses ``layers_a`` and matches layers by name,
            otherwise the i-th layer of A matches the i-th of B.
        measures: names in :data:`repsim.measures.MEASURES` (sequence or comma-separated).
        pairs: ``"diagonal"`` (matched pairs) or ``"all"`` (every layer of A against every
            layer of B, as a heatmap needs).
        conv: policy for 4-D activations, one of :data:`repsim.CONV_POLICIES`; ``"channels"``
            (channels are neurons, every position of every input a datapoint) is the paper's.
        seq: policy for 3-D activations ``(N, T, D)``, one of
            :data:`repsim.measures.inputs.SEQ_POLICIES`; ``None`` refuses sequences.
        conv_fallback, seq_fallback: policies for the pairs whose datapoints differ under
            ``conv`` and ``seq`` (:mod:`repsim.policies`); ``None`` refuses such pairs.
        batch_size: inputs per forward pass; ``None`` is one batch where it matters or fits
            (see :mod:`repsim.capture`).
        device: where the models run (they are moved there in place, like ``Module.to``) and
            where the similarity is computed (activations stay on a non-CPU device).
        train_mode: forward in train mode (batch norm uses batch statistics; buffers restored).
        memory_limit: bytes allowed for activations of measures computed in memory.
        measure_kwargs: extra keyword arguments per measure name, e.g. ``{"svcca": {"keep": 0.99}}``.
        progress: show progress (:func:`repsim.progress.progress_bar`).
        distributed: split the batches across the ranks of the initialised default
            ``torch.distributed`` process group (every rank calls this with the same arguments
            and gets the same table); streaming measures only.

    Returns:
        DataFrame with :data:`COLUMNS` (module docstring), rows in pair order then measure order.
    """
    fns = resolve_measures(measures, measure_kwargs)
    policies = Policies(conv, seq, conv_fallback, seq_fallback)
    check_choice(pairs, PAIRS, "pairs")
    names_a = resolve_layers(model_a, layers_a)
    names_b = resolve_layers(model_b, layers_a if layers_b is None else layers_b)
    inputs = _as_tensors(inputs)
    n_inputs = input_count(inputs)
    mask = inputs.get(MASK_KEY) if isinstance(inputs, Mapping) else None
    size = _batch_size((model_a, model_b), n_inputs, batch_size, train_mode, rank_and_world()[1] if distributed else 1)
    here = _this_rank(inputs, mask, size, fns) if distributed else (inputs, mask)
    forward = {"batch_size": size, "device": device, "train_mode": train_mode, "progress": progress}
    batches = _paired_batches(
        model_a, model_b, *here, names_a, names_b, keep_on_device=torch.device(device).type != "cpu", **forward
    )
    options = {"policies": policies, "measure_kwargs": measure_kwargs, "progress": progress}
    with closing(batches):
        first_a, first_b, first_mask = next(batches)
        plan = layer_pairs(list(first_a), list(first_b), pairs, by_name=layers_b is None)
        shapes = ({k: tuple(v.shape) for k, v in first_a.items()}, {k: tuple(v.shape) for k, v in first_b.items()})
        reductions = plan_reductions(plan, *shapes, policies)
        held = [m for m in fns if m not in STREAMING_MEASURES or size >= n_inputs]
        if held:
            estimate = estimate_memory(*shapes, plan, reductions, held, n_inputs=n_inputs, tokens=real_tokens(mask))
            check_memory(estimate, memory_limit, held)
        if size >= n_inputs:
            return to_frame(pair_rows(first_a, first_b, plan, fns, mask=first_mask, **options))
        streamed = [m for m in fns if m not in held]
        outcomes, kept = compare_batched(
            chain([(first_a, first_b, first_mask)], batches),
            plan,
            reductions,
            {m: fns[m] for m in streamed},
            keep=bool(held),
            measure_kwargs=measure_kwargs or {},
            distributed=distributed,
        )
    rows = _streamed_rows(plan, streamed, outcomes, reductions, shapes, n_inputs, real_tokens(mask))
    if kept is not None:
        in_memory = pair_rows(*kept, plan, {m: fns[m] for m in held}, mask=mask, **options)
        rows.update({(r["layer_a"], r["layer_b"], r["measure"]): r for r in in_memory})
    return to_frame([rows[a, b, m] for a, b, _ in plan for m in fns])
