"""A 2-d convolution whose derivatives of every order are single grouped convolution kernels.

Why: MAML's meta-gradient differentiates the inner loop's gradient, so every convolution of a
support set is differentiated twice. For a grouped convolution (``groups = T`` tasks side by
side, :meth:`meta.core.models.Conv4.forward_tasks`) torch 2.13's double backward
(``_convolution_double_backward``) computes the weight gradient *group by group*: ``T`` small
convolutions of transposed tensors (with the output gradient as a dilated kernel) and a ``cat``.
:func:`conv2d` instead writes each derivative as one of three first-order kernels, each one call
for all groups:

- ``conv(x, w)``: the convolution, ``y = x * w``;
- ``conv_input(g, w)``: its input gradient ``d<conv(x, w), g>/dx``, a transposed convolution;
- ``conv_weight(x, g)``: its weight gradient ``d<conv(x, w), g>/dw`` (the backward-weights
  kernel).

All three are bilinear, and their derivatives are the three again::

    <h, conv(x, w)>        : d/dx = conv_input(h, w),   d/dw = conv_weight(x, h)
    <h, conv_input(g, w)>  : d/dg = conv(h, w),         d/dw = conv_weight(h, g)
    <H, conv_weight(x, g)> : d/dx = conv_input(g, H),   d/dg = conv(x, H)

so the graph of any order is made of them. Exact: the same sums as torch's own derivatives, in a
different order (checked in float64 against torch's autograd,
``tests/meta/core/test_convolution.py``). On CPUs it makes the second-order inner loop of a
chunk of tasks faster, while for ``groups == 1`` torch's own double backward is the faster one
(``benchmarks/README.md``), so :func:`meta.core.models.conv3x3` uses it for grouped convolutions
only.

Imports: nothing of :mod:`meta` (torch only).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd import Function

__all__ = ["conv2d"]


def conv2d(
    x: Tensor, weight: Tensor, bias: Tensor | None = None, *, stride: int = 1, padding: int = 0, groups: int = 1
) -> Tensor:
    """``F.conv2d(x, weight, bias, stride, padding, groups=groups)`` (dilation 1), differentiable
    to any order through the kernels of the module docstring.

    Args:
        x: input ``(n, groups * C_in, H, W)``.
        weight: ``(groups * C_out, C_in, kH, kW)``.
        bias: ``(groups * C_out,)`` or ``None``.

    Returns:
        ``(n, groups * C_out, H_out, W_out)``.
    """
    y = _Conv.apply(x, weight, stride, padding, groups)
    return y if bias is None else y + bias.view(1, -1, 1, 1)


def _output_padding(
    size: tuple[int, ...], out: tuple[int, ...], kernel: tuple[int, ...], stride: int, padding: int
) -> tuple[int, ...]:
    """The ``output_padding`` that makes a transposed convolution of a map of side ``out`` give
    back side ``size`` (a strided convolution maps several input sides to one output side)."""
    return tuple(s - ((o - 1) * stride - 2 * padding + k) for s, o, k in zip(size, out, kernel))


class _Conv(Function):
    """``conv(x, w)``."""

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, stride: int, padding: int, groups: int) -> Tensor:
        ctx.save_for_backward(x, w)
        ctx.config = (stride, padding, groups)
        return F.conv2d(x, w, None, stride, padding, 1, groups)

    @staticmethod
    def backward(ctx, h: Tensor):
        x, w = ctx.saved_tensors
        gx = _ConvInput.apply(h, w, tuple(x.shape[-2:]), *ctx.config) if ctx.needs_input_grad[0] else None
        gw = _ConvWeight.apply(x, h, w.detach(), *ctx.config) if ctx.needs_input_grad[1] else None
        return gx, gw, None, None, None


class _ConvInput(Function):
    """``conv_input(g, w)``: a transposed convolution back to the input side ``size``."""

    @staticmethod
    def forward(ctx, g: Tensor, w: Tensor, size: tuple[int, int], stride: int, padding: int, groups: int) -> Tensor:
        ctx.save_for_backward(g, w)
        ctx.config = (stride, padding, groups)
        output_padding = _output_padding(size, tuple(g.shape[-2:]), tuple(w.shape[-2:]), stride, padding)
        return F.conv_transpose2d(g, w, None, stride, padding, output_padding, groups)

    @staticmethod
    def backward(ctx, h: Tensor):
        g, w = ctx.saved_tensors
        gg = _Conv.apply(h, w, *ctx.config) if ctx.needs_input_grad[0] else None
        gw = _ConvWeight.apply(h, g, w.detach(), *ctx.config) if ctx.needs_input_grad[1] else None
        return gg, gw, None, None, None, None


class _ConvWeight(Function):
    """``conv_weight(x, g)``; ``like`` is a weight tensor that only gives the shape (not
    differentiated)."""

    @staticmethod
    def forward(ctx, x: Tensor, g: Tensor, like: Tensor, stride: int, padding: int, groups: int) -> Tensor:
        ctx.save_for_backward(x, g)
        ctx.config = (stride, padding, groups)
        return torch.ops.aten.convolution_backward(
            g, x, like, None, [stride] * 2, [padding] * 2, [1, 1], False, [0, 0], groups, [False, True, False]
        )[1]

    @staticmethod
    def backward(ctx, h: Tensor):
        x, g = ctx.saved_tensors
        gx = _ConvInput.apply(g, h, tuple(x.shape[-2:]), *ctx.config) if ctx.needs_input_grad[0] else None
        gg = _Conv.apply(x, h, *ctx.config) if ctx.needs_input_grad[1] else None
        return gx, gg, None, None, None, None
