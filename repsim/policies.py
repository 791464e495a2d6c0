"""How each compared pair of activations becomes two representations: the convolutional policy
for 4-D ``(N, C, H, W)`` activations, the sequence policy for 3-D ``(N, T, D)`` ones, and the
fallbacks for pairs whose rows would not be the same datapoints.

**Datapoints.** Under ``conv="channels"`` every position of an ``H x W`` map is a datapoint;
under ``seq="tokens"`` every (real) token; under the other policies, and for 2-D activations,
each input is one. The rows of two representations must be the same datapoints: two maps of one
size, two sequences of one length, or one row per input on both sides. A pair where they are
not (conv1 at 14x14 against conv2 at 7x7 under ``"channels"``, a map against the head's
``(N, ways)``, tokens against a pooled ``(N, D)``) gets the **fallbacks**, which give one row
per input: ``conv_fallback`` (``"mean"`` or ``"flatten"``) for its 4-D side and ``seq_fallback``
(``"mean"``, ``"first"`` or ``"flatten"``) for its 3-D side. The policy each row used is in its
``conv`` and ``seq`` columns. With a fallback of ``None`` such a pair is refused, before
anything is computed, by a ``ValueError`` that names the pairs and the options.

A 3-D activation with no sequence policy (``seq=None``) is refused the same way: there is no
default for sequences.

Imports: :mod:`repsim.measures.inputs` only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from repsim.measures.inputs import CONV_POLICIES, SEQ_POLICIES, reduce_sequence

#: Fallback policies for pairs whose datapoints differ (one row per input), ``None``: refuse.
CONV_FALLBACKS = ("mean", "flatten")
SEQ_FALLBACKS = ("mean", "first", "flatten")
#: What the ``conv`` and ``seq`` columns say for a pair with no 4-D (3-D) activation.
NO_POLICY = "none"

Pair = tuple[str, str, bool]


@dataclass(frozen=True)
class Policies:
    """The policies asked for: ``conv`` and ``seq`` for every pair whose datapoints agree under
    them, ``conv_fallback`` and ``seq_fallback`` (or ``None``: refuse) for the others."""

    conv: str = "channels"
    seq: str | None = None
    conv_fallback: str | None = "mean"
    seq_fallback: str | None = "mean"

    def __post_init__(self) -> None:
        for what, value, choices in (
            ("conv", self.conv, CONV_POLICIES),
            ("seq", self.seq, (None, *SEQ_POLICIES)),
            ("conv_fallback", self.conv_fallback, (None, *CONV_FALLBACKS)),
            ("seq_fallback", self.seq_fallback, (None, *SEQ_FALLBACKS)),
        ):
            if value not in choices:
                raise ValueError(f"{what} must be one of {choices}; got {value!r}")


@dataclass(frozen=True)
class Reduction:
    """The policies one pair uses: ``conv`` for its 4-D sides, ``seq`` for its 3-D sides
    (``None`` where it has no such side)."""

    conv: str | None
    seq: str | None

    @property
    def columns(self) -> dict[str, str]:
        """The ``conv`` and ``seq`` columns of the pair's rows."""
        return {"conv": self.conv or NO_POLICY, "seq": self.seq or NO_POLICY}


def datapoints(shape: Sequence[int], conv: str | None, seq: str | None) -> tuple[Any, ...]:
    """What one input's rows are under the policies: ``("position", H, W)`` for a map under
    ``"channels"``, ``("token", T)`` for a sequence under ``"tokens"``, else ``("input",)``."""
    if len(shape) == 4 and conv == "channels":
        return ("position", shape[2], shape[3])
    if len(shape) == 3 and seq == "tokens":
        return ("token", shape[1])
    return ("input",)


def _needs(shape: Sequence[int], policy: str | None, rank: int) -> str | None:
    """``policy`` if an activation of ``shape`` has ``rank`` dimensions, else ``None``."""
    return policy if len(shape) == rank else None


def pair_reduction(shape_a: Sequence[int], shape_b: Sequence[int], policies: Policies) -> Reduction | None:
    """The policies of one pair (activation shapes of one batch): ``conv``/``seq`` where both
    sides then have the same datapoints, else the fallbacks; ``None`` where a fallback is needed
    and is ``None`` (refused)."""
    has_conv = len(shape_a) == 4 or len(shape_b) == 4
    has_seq = len(shape_a) == 3 or len(shape_b) == 3
    primary = Reduction(policies.conv if has_conv else None, policies.seq if has_seq else None)
    if datapoints(shape_a, primary.conv, primary.seq) == datapoints(shape_b, primary.conv, primary.seq):
        return primary
    conv = (
        policies.conv_fallback if any(_needs(s, policies.conv, 4) == "channels" for s in (shape_a, shape_b)) else None
    )
    seq = policies.seq_fallback if any(_needs(s, policies.seq, 3) == "tokens" for s in (shape_a, shape_b)) else None
    if (conv is None and primary.conv == "channels") or (seq is None and primary.seq == "tokens"):
        return None
    return Reduction(conv or primary.conv, seq or primary.seq)


def plan_reductions(
    pairs: Sequence[Pair],
    shapes_a: Mapping[str, Sequence[int]],
    shapes_b: Mapping[str, Sequence[int]],
    policies: Policies,
) -> dict[tuple[str, str], Reduction]:
    """The reduction of every pair, ``{(layer_a, layer_b): Reduction}``.

    Raises ``ValueError`` naming the layers and the option to choose when a 3-D activation has
    no sequence policy, or when pairs need a fallback that is ``None``.
    """
    used = {**{a: shapes_a[a] for a, _, _ in pairs}, **{b: shapes_b[b] for _, b, _ in pairs}}
    sequences = {k: tuple(s) for k, s in used.items() if len(s) == 3}
    if sequences and policies.seq is None:
        raise ValueError(
            f"layers {sequences} output sequences (N, T, D); choose how they become (datapoints, neurons):"
            f" seq= one of {SEQ_POLICIES} ('tokens': every token a datapoint; 'mean': the mean over"
            " tokens; 'first': the first token; 'flatten': (N, T*D)); on the command line, --seq"
        )
    plan = {(a, b): pair_reduction(shapes_a[a], shapes_b[b], policies) for a, b, _ in pairs}
    refused = [f"{a} {tuple(shapes_a[a])} vs {b} {tuple(shapes_b[b])}" for (a, b), r in plan.items() if r is None]
    if refused:
        raise ValueError(
            f"{len(refused)} pair(s) have different datapoints under conv={policies.conv!r},"
            f" seq={policies.seq!r} (maps of different sizes, or a map or sequence against one row per"
            f" input), e.g. {refused[:3]}; name a fallback that gives one row per input (conv_fallback="
            f" one of {CONV_FALLBACKS}, seq_fallback= one of {SEQ_FALLBACKS}; --conv-fallback,"
            " --seq-fallback), or compare matched layers only (pairs='diagonal', --pairs diagonal)"
        )
    return plan  # type: ignore[return-value]


def prepare(t: torch.Tensor, reduction: Reduction, mask: Any = None, *, name: str = "X") -> torch.Tensor:
    """An activation as a measure takes it: a sequence reduced to 2-D by ``reduction.seq``
    (padding left out by ``mask``), anything else as it is (4-D maps are reduced by the measure,
    with ``conv=reduction.conv``)."""
    return reduce_sequence(t, reduction.seq, mask=mask, name=name) if t.ndim == 3 else t


def representation_size(shape: Sequence[int], reduction: Reduction, real_tokens: int | None = None) -> tuple[int, int]:
    """``(n, d)`` of an activation of ``shape`` (all ``N`` inputs) after ``reduction``;
    ``real_tokens`` is the number of real tokens of the attention mask, where there is one."""
    n = int(shape[0])
    if len(shape) == 4:
        _, c, h, w = shape
        return {"channels": (n * h * w, c), "flatten": (n, c * h * w), "mean": (n, c)}[reduction.conv]
    if len(shape) == 3:
        _, length, d = shape
        tokens = n * length if real_tokens is None else real_tokens
        return {"tokens": (tokens, d), "mean": (n, d), "first": (n, d), "flatten": (n, length * d)}[reduction.seq]
    return n, int(math.prod(shape[1:]))
