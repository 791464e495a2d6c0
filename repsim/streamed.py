"""Comparison over several forward batches: the streaming measures accumulate batch by batch
with the exact accumulators of :mod:`repsim.measures.streaming`, so the activations of all
inputs are never held at once; under ``torchrun`` the accumulators of every rank are then
all-reduced (:meth:`repsim.measures.MomentAccumulator.all_reduce`), in rank order.

The other measures (kernel CKA, Procrustes, RSA) need every activation in memory: they get the
concatenated activations, after :func:`check_memory` has compared the float64 size
(:func:`estimate_memory`) with the allowed ``memory_limit``.

Imports: :mod:`repsim.distributed`, :mod:`repsim.policies` and :mod:`repsim.measures`; never files,
plots or :mod:`meta`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from repsim.distributed import first_reasons
from repsim.measures.inputs import as_representation
from repsim.policies import Pair, Reduction, prepare, representation_size

#: Measures accumulated batch by batch, exactly, when the inputs span several forward batches
#: (see :func:`new_accumulator`).
STREAMING_MEASURES = frozenset({"cka", "linear_cka", "debiased_cka", "cca", "mean_cca", "svcca", "pwcca"})
#: Measures that build ``n x n`` matrices (their memory estimate includes two of them).
GRAM_MEASURES = frozenset({"kernel_cka", "rsa"})

Shapes = Mapping[str, Sequence[int]]
Key = tuple[str, str, str]


def estimate_memory(
    shapes_a: Shapes,
    shapes_b: Shapes,
    pairs: Sequence[Pair],
    reductions: Mapping[tuple[str, str], Reduction],
    measures: Sequence[str],
    *,
    n_inputs: int,
    tokens: int | None = None,
) -> int:
    """Bytes to hold, in float64, every activation the pairs use for ``n_inputs`` inputs (the
    shapes are those of one batch), plus two ``n x n`` float64 matrices for a Gram measure, with
    ``n`` the most datapoints a pair has after its reduction (``tokens``: real tokens)."""

    def total(shape: Sequence[int]) -> float:
        return math.prod(shape) / shape[0] * n_inputs * 8

    size = sum(total(shapes_a[k]) for k in {a for a, _, _ in pairs})
    size += sum(total(shapes_b[k]) for k in {b for _, b, _ in pairs})
    if GRAM_MEASURES & set(measures):
        rows = max(representation_size((n_inputs, *shapes_a[a][1:]), reductions[a, b], tokens)[0] for a, b, _ in pairs)
        size += 2 * 8 * rows**2
    return int(size)


def check_memory(estimate: int, limit: float, measures: Sequence[str]) -> None:
    """Raise ValueError when measures computed in memory would need more than ``limit`` bytes."""
    if estimate > limit:
        raise ValueError(
            f"measures {list(measures)} need all activations in memory: about {estimate / 2**30:.2f} GiB in"
            f" float64, above memory_limit={limit / 2**30:.2f} GiB. Use streaming measures only"
            f" ({sorted(STREAMING_MEASURES)}) with a batch size, fewer layers or inputs, or a larger memory_limit"
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
    """One exact streaming accumulator for one pair and measure; a ValueError during an update
    ends it and keeps the message as the row's reason."""

    def __init__(self, measure: str, kwargs: Mapping[str, Any]):
        self.measure = measure
        self.reason = ""
        self.accumulator = new_accumulator(measure, kwargs)

    def update(self, x: torch.Tensor | str, y: torch.Tensor | str) -> None:
        if self.reason:
            return
        if isinstance(x, str) or isinstance(y, str):
            self.reason = x if isinstance(x, str) else y
        elif x.shape[0] != y.shape[0]:
            self.reason = f"X and Y must describe the same datapoints: a batch gives {x.shape[0]} and {y.shape[0]} rows"
        else:
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


class _BatchRepresentations:
    """The 2-D float64 representations of one batch's activations, made once per layer and
    policy (or the ValueError message where one cannot be made)."""

    def __init__(self, acts: tuple[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor]], mask: Any):
        self.acts, self.mask = acts, mask
        self.made: dict[tuple[int, str, Reduction], torch.Tensor | str] = {}

    def get(self, side: int, key: str, reduction: Reduction) -> torch.Tensor | str:
        if (side, key, reduction) not in self.made:
            try:
                t = prepare(self.acts[side][key], reduction, self.mask, name=key)
                self.made[side, key, reduction] = as_representation(t, name=key, conv=reduction.conv)
            except ValueError as err:
                self.made[side, key, reduction] = str(err)
        return self.made[side, key, reduction]


def compare_batched(
    batches: Iterable[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], Any]],
    plan: Sequence[Pair],
    reductions: Mapping[tuple[str, str], Reduction],
    fns: Mapping[str, Any],
    *,
    keep: bool,
    measure_kwargs: Mapping[str, Mapping[str, Any]],
    distributed: bool = False,
) -> tuple[dict[Key, tuple[float, str]], tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]] | None]:
    """Accumulate the streaming measures ``fns`` of every pair over ``batches``
    (``(acts_a, acts_b, mask)``), all-reduced across ranks when ``distributed``.

    Returns ``{(layer_a, layer_b, measure): (value, reason)}`` and, when ``keep``, the
    concatenated activations ``(acts_a, acts_b)`` of every used layer (for the measures computed
    in memory), else ``None``.
    """
    streams = {(a, b, m): _Stream(m, measure_kwargs.get(m, {})) for a, b, _ in plan for m in fns}
    used = ({a for a, _, _ in plan}, {b for _, b, _ in plan})
    stored: tuple[dict[str, list[torch.Tensor]], dict[str, list[torch.Tensor]]] = ({}, {})
    for acts_a, acts_b, mask in batches:
        reps = _BatchRepresentations((acts_a, acts_b), mask)
        for (a, b, _), stream in streams.items():
            reduction = reductions[a, b]
            stream.update(reps.get(0, a, reduction), reps.get(1, b, reduction))
        if keep:
            for side, acts in enumerate((acts_a, acts_b)):
                for key in used[side]:
                    stored[side].setdefault(key, []).append(acts[key])
    if distributed:
        reduce_streams(list(streams.values()))
    outcomes = {key: stream.value() for key, stream in streams.items()}
    kept = tuple({k: torch.cat(v) for k, v in side.items()} for side in stored) if keep else None
    return outcomes, kept  # type: ignore[return-value]


def reduce_streams(streams: Sequence[_Stream]) -> None:
    """Every rank's streams, combined in place on every rank (a collective: every rank calls it
    with the streams of the same pairs and measures, in the same order): a stream that failed on
    some rank takes the first such reason, in rank order; the others are all-reduced."""
    for stream, reason in zip(streams, first_reasons([s.reason for s in streams])):
        stream.reason = reason
        if not reason:
            stream.accumulator.all_reduce()
