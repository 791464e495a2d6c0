"""Input handling shared by every measure: conversion, convolutional policies, validation.

A *representation* is a 2-D array ``(n_datapoints, n_neurons)``. Measures accept numpy arrays or
torch tensors (CPU or CUDA) and compute in float64 unless told otherwise. Convolutional
activations ``(N, C, H, W)`` must be reduced by an explicit policy (see :data:`CONV_POLICIES`),
and so must sequences ``(N, T, D)`` (see :data:`SEQ_POLICIES`, :func:`reduce_sequence`).
Everything here raises :class:`ValueError` naming the problem; nothing returns NaN silently.

**Every magnitude.** Every measure here is invariant to the scale of either side, so a side
whose largest entry is outside ``2^-60 .. 2^60`` is scaled by a power of two (exactly: only the
exponent changes) before anything is summed, so that its largest entry lies in ``[0.5, 1)``.
Products of the data then neither overflow (data near ``1e300``) nor underflow (near
``1e-300``), and the computation at any magnitude is the computation at magnitude 1, bit for
bit up to the powers of two.

Imports: nothing of ``repsim`` (numpy and torch only).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

#: How a 4-D activation ``(N, C, H, W)`` becomes a 2-D representation.
#:
#: - ``"channels"``: channels are neurons and every spatial position of every input is a
#:   datapoint, ``(N*H*W, C)`` (the choice of Raghu et al. 2017/2020 for CCA on conv layers).
#: - ``"flatten"``: every (channel, position) is a neuron, ``(N, C*H*W)`` (Kornblith et al. 2019).
#: - ``"mean"``: spatial average per channel, ``(N, C)``.
CONV_POLICIES = ("channels", "flatten", "mean")


def to_tensor(x: Any, *, name: str = "X", dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Convert a numpy array, torch tensor or nested sequence to a tensor of ``dtype``.

    Tensors keep their device; numpy arrays are shared without a copy where the dtype allows.
    Gradients are detached: measures are evaluation tools, not losses.
    """
    if isinstance(x, torch.Tensor):
        t = x.detach()
    elif isinstance(x, np.ndarray):
        if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
            raise ValueError(f"{name} has non-numeric dtype {x.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(x))
    else:
        try:
            t = torch.as_tensor(np.asarray(x, dtype=np.float64))
        except (TypeError, ValueError) as err:
            raise ValueError(f"{name} cannot be read as a numeric array: {err}") from None
    if t.is_complex():
        raise ValueError(f"{name} is complex; representations must be real")
    return t.to(dtype)


def finite_max_abs(t: torch.Tensor, name: str = "X") -> float:
    """``max |t|``, after checking in the same pass that every entry is finite (``ValueError``
    counting the NaN and infinite entries otherwise): one ``aminmax``, whose extremes are NaN or
    infinite exactly when some entry is."""
    low, high = torch.aminmax(t)
    low, high = float(low), float(high)
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"{name} contains {int((~torch.isfinite(t)).sum())} NaN or infinite value(s)")
    return max(-low, high)


def max_abs(t: torch.Tensor) -> float:
    """``max |t|`` without an ``|t|`` temporary (one pass of ``aminmax``)."""
    low, high = torch.aminmax(t)
    return max(-float(low), float(high))


def source_eps(x: Any) -> float:
    """Rounding unit of ``x`` as given: ``finfo(dtype).eps`` for floating arrays and tensors,
    0 for integer data and Python numbers (exact, or float64 at most once converted)."""
    dtype = getattr(x, "dtype", None)
    if isinstance(dtype, torch.dtype):
        return torch.finfo(dtype).eps if dtype.is_floating_point else 0.0
    if dtype is not None and np.issubdtype(dtype, np.floating):
        return float(np.finfo(dtype).eps)
    return 0.0


def reduce_conv(t: torch.Tensor, policy: str | None, *, name: str = "X") -> torch.Tensor:
    """Reduce a 4-D activation ``(N, C, H, W)`` to 2-D by ``policy`` (see :data:`CONV_POLICIES`)."""
    if policy not in CONV_POLICIES:
        raise ValueError(
            f"{name} is 4-D {tuple(t.shape)} (N, C, H, W): choose conv= one of {CONV_POLICIES} (got {policy!r})"
        )
    n, c, h, w = t.shape
    if policy == "channels":
        return t.permute(0, 2, 3, 1).reshape(n * h * w, c)
    if policy == "flatten":
        return t.reshape(n, c * h * w)
    return t.mean(dim=(2, 3))


#: How a 3-D activation ``(N, T, D)`` of a sequence model (N inputs of T tokens of D features)
#: becomes 2-D; a ``mask`` ``(N, T)`` (the attention mask: 1 for real tokens, 0 for padding)
#: leaves padding out where it says so.
#:
#: - ``"tokens"``: every token of every input is a datapoint, ``(number of real tokens, D)``
#:   (padding excluded);
#: - ``"mean"``: the mean over each input's tokens, ``(N, D)`` (padding excluded);
#: - ``"first"``: the first token (BERT's ``[CLS]``), ``(N, D)`` (the mask is not consulted);
#: - ``"flatten"``: ``(N, T*D)`` (padding positions included: they are neurons here).
SEQ_POLICIES = ("tokens", "mean", "first", "flatten")


def reduce_sequence(t: torch.Tensor, policy: str | None, *, mask: Any = None, name: str = "X") -> torch.Tensor:
    """Reduce a 3-D activation ``(N, T, D)`` to 2-D by ``policy`` (see :data:`SEQ_POLICIES`), in its
    own dtype (the mean is taken in float64 and rounded once).

    ``mask`` ``(N, T)``, nonzero for real tokens, excludes padding from ``"tokens"`` and
    ``"mean"``. ``ValueError`` for an unknown policy, a mask of another shape, or (``"mean"``) an
    input without any real token.

    Examples:
        >>> t = torch.arange(12.0).reshape(2, 3, 2)  # 2 inputs, 3 tokens, 2 features
        >>> mask = torch.tensor([[1, 1, 0], [1, 1, 1]])  # the first input's last token is padding
        >>> reduce_sequence(t, "tokens", mask=mask).shape, reduce_sequence(t, "flatten").shape
        (torch.Size([5, 2]), torch.Size([2, 6]))
        >>> reduce_sequence(t, "mean", mask=mask).tolist(), reduce_sequence(t, "first").tolist()
        ([[1.0, 2.0], [8.0, 9.0]], [[0.0, 1.0], [6.0, 7.0]])
    """
    if policy not in SEQ_POLICIES:
        raise ValueError(
            f"{name} is 3-D {tuple(t.shape)} (N, T, D), a sequence: choose one of {SEQ_POLICIES} for how it"
            f" becomes (datapoints, neurons) (got {policy!r})"
        )
    n, length, d = t.shape
    if policy == "first":
        return t[:, 0]
    if policy == "flatten":
        return t.reshape(n, length * d)
    keep = _token_mask(mask, (n, length), t.device, name)
    if policy == "tokens":
        return t.reshape(n * length, d) if keep is None else t[keep]
    if keep is None:
        return t.to(torch.float64).mean(dim=1).to(t.dtype)
    counts = keep.sum(dim=1)
    if not bool(counts.all()):
        raise ValueError(f"{name}: input {int((counts == 0).nonzero()[0])} has no real token in its attention mask")
    weights = keep.to(torch.float64).unsqueeze(-1)
    return ((t.to(torch.float64) * weights).sum(dim=1) / counts.unsqueeze(-1)).to(t.dtype)


def _token_mask(mask: Any, shape: tuple[int, int], device: torch.device, name: str) -> torch.Tensor | None:
    """The attention mask as a bool tensor ``(N, T)`` on ``device`` (``None`` stays ``None``)."""
    if mask is None:
        return None
    keep = torch.as_tensor(mask, device=device) != 0
    if tuple(keep.shape) != shape:
        raise ValueError(
            f"{name}: the attention mask is {tuple(keep.shape)} but the activation has (N, T) = {shape}; a layer"
            " that changes the sequence length cannot be masked: use 'first' or 'flatten'"
        )
    return keep


def as_representation(
    x: Any,
    *,
    name: str = "X",
    conv: str | None = None,
    dtype: torch.dtype = torch.float64,
    check_finite: bool = True,
) -> torch.Tensor:
    """Validate ``x`` and return it as a 2-D tensor ``(n, d)`` of ``dtype``.

    2-D input is used as it is; 4-D input ``(N, C, H, W)`` is reduced by ``conv``; 3-D input
    ``(N, T, D)`` (sequences) must be reduced by the caller (:func:`reduce_sequence`). Raises ``ValueError`` for
    non-numeric, 1-D, empty or non-finite input.
    """
    t = to_tensor(x, name=name, dtype=dtype)
    if t.ndim == 4:
        t = reduce_conv(t, conv, name=name)
    elif t.ndim == 3:
        raise ValueError(
            f"{name} is 3-D {tuple(t.shape)}: a sequence (N, T, D) must first become (datapoints, neurons)"
            f" by a policy, one of {SEQ_POLICIES}: repsim.measures.inputs.reduce_sequence(x, policy, mask=...)"
            " (compare_models(seq=...), --seq on the command line)"
        )
    elif t.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D (n_datapoints, n_neurons) or 4-D (N, C, H, W); got shape"
            f" {tuple(t.shape)}" + (" (reshape a single neuron to (n, 1))" if t.ndim == 1 else "")
        )
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(t.shape)}")
    if check_finite:
        finite_max_abs(t, name)
    return t


def as_pair(
    x: Any,
    y: Any,
    *,
    conv: str | None = None,
    dtype: torch.dtype = torch.float64,
    min_n: int = 2,
    measure: str = "this measure",
    check_finite: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate two representations of the same datapoints; return 2-D tensors on one device.

    Checks what :func:`as_representation` checks, plus: equal numbers of datapoints, at least
    ``min_n`` of them, both on the same device (the device of ``x`` wins for numpy ``y``).
    ``check_finite=False`` leaves the check for NaN and infinities to the caller, who reads the
    data anyway (:func:`finite_max_abs`).
    """
    tx = as_representation(x, name="X", conv=conv, dtype=dtype, check_finite=check_finite)
    ty = as_representation(y, name="Y", conv=conv, dtype=dtype, check_finite=check_finite)
    if tx.shape[0] != ty.shape[0]:
        raise ValueError(
            f"X and Y must describe the same datapoints: X has {tx.shape[0]} rows, Y has"
            f" {ty.shape[0]}" + (f" (after conv={conv!r})" if conv else "")
        )
    if tx.shape[0] < min_n:
        raise ValueError(f"{measure} needs at least {min_n} datapoints; got {tx.shape[0]}")
    if tx.device != ty.device:
        if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
            raise ValueError(f"X is on {tx.device} and Y on {ty.device}; put them on one device")
        device = tx.device if isinstance(x, torch.Tensor) else ty.device
        tx, ty = tx.to(device), ty.to(device)
    return tx, ty


#: Data whose largest entry is within ``2^-SAFE_EXPONENT .. 2^SAFE_EXPONENT`` are not scaled: no
#: product of the measures (up to fourth powers of the data, summed over ``n d^2`` terms) can
#: overflow or underflow there, and scaling by a power of two would change no result.
SAFE_EXPONENT = 60


def normalising_exponent(largest: float) -> int:
    """The exponent to scale data with ``max|t| = largest`` by (:func:`scale_exponent`'s), or 0
    within the safe range :data:`SAFE_EXPONENT`.

    Examples:
        >>> normalising_exponent(3.0), normalising_exponent(1e300), normalising_exponent(1e-300)
        (0, 997, -996)
    """
    exponent = math.frexp(largest)[1]
    return exponent if abs(exponent) > SAFE_EXPONENT else 0


def scale_exponent(t: torch.Tensor) -> int:
    """The exponent to scale ``t`` by (:func:`normalising_exponent` of ``max|t|``).

    Examples:
        >>> scale_exponent(torch.tensor([3.0, -0.5])), scale_exponent(torch.tensor([1e300], dtype=torch.float64))
        (0, 997)
    """
    return normalising_exponent(max_abs(t))


def scale_(t: torch.Tensor, exponent: int) -> torch.Tensor:
    """Multiply ``t`` by ``2^-exponent`` in place and return it: exact (a power of two), applied
    in two halves so that the factor itself never overflows."""
    half = exponent // 2
    return t.mul_(2.0 ** (-half)).mul_(2.0 ** (half - exponent))


def shares_memory(t: torch.Tensor, source: Any) -> bool:
    """Whether ``t`` may share memory with ``source`` (the data as the caller gave it), so that
    changing ``t`` in place would change the caller's data."""
    if isinstance(source, torch.Tensor):
        return t.device == source.device and t.untyped_storage().data_ptr() == source.untyped_storage().data_ptr()
    if isinstance(source, np.ndarray):
        return t.device.type == "cpu" and np.shares_memory(t.numpy(), source)
    return False


def centre(t: torch.Tensor, *, name: str = "X", exponent: int = 0, in_place: bool = False) -> torch.Tensor:
    """Subtract the column means of ``t`` ``(n, d)``: ``t - 1 mean(t)``, after scaling ``t`` by
    ``2^-exponent`` (exact; ``exponent=scale_exponent(t)`` brings an extreme ``max|t|`` into
    ``[0.5, 1)``, see the module docstring, for measures that do not depend on a side's scale). With ``in_place``
    (for a ``t`` the caller owns, e.g. a cast copy) ``t`` itself is changed and returned, else one
    new tensor is.

    Raises ``ValueError`` if the representation is constant, i.e. every centred entry is at the
    rounding level of the data (``max|c| <= 64 eps max|t|``).
    """
    c = t if in_place else t.clone()
    if exponent:
        scale_(c, exponent)
    largest = max_abs(c)
    c -= c.mean(dim=0, keepdim=True)
    if max_abs(c) <= 64 * torch.finfo(t.dtype).eps * largest:
        raise ValueError(f"{name} is constant: every neuron has zero variance over the datapoints")
    return c
