"""meta.core.convolution.conv2d: the convolution whose derivatives of every order are grouped kernels;
meta.core.models.images_layout: the channels-last input layout."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from meta.core.convolution import conv2d
from meta.core.models import conv4, images_layout

# (groups, in channels per group, out channels per group, side, stride): the Omniglot blocks
# (stride 2 with even and odd sides: 28 -> 14, 7 -> 4) and the miniImageNet blocks (stride 1).
SHAPES = [(3, 1, 4, 8, 2), (2, 3, 4, 7, 2), (2, 2, 3, 5, 1), (1, 2, 3, 6, 2)]


def _inputs(groups, c_in, c_out, side, bias, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, groups * c_in, side, side, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(groups * c_out, c_in, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(groups * c_out, generator=g, dtype=torch.float64, requires_grad=True) if bias else None
    return x, w, b


@pytest.mark.parametrize("groups, c_in, c_out, side, stride", SHAPES)
def test_values_equal_torch_conv2d(groups, c_in, c_out, side, stride):
    x, w, b = _inputs(groups, c_in, c_out, side, bias=True)
    ours = conv2d(x, w, b, stride=stride, padding=1, groups=groups)
    torch.testing.assert_close(ours, F.conv2d(x, w, b, stride=stride, padding=1, groups=groups), rtol=0, atol=1e-12)


@pytest.mark.parametrize("groups, c_in, c_out, side, stride", SHAPES)
@pytest.mark.parametrize("bias", [False, True])
def test_first_and_second_derivatives_match_finite_differences(groups, c_in, c_out, side, stride, bias):
    """gradcheck / gradgradcheck in float64: every derivative the three kernels form (first order:
    input and weight gradients; second order: the derivatives of those) against finite
    differences."""
    x, w, b = _inputs(groups, c_in, c_out, side, bias)
    inputs = (x, w) if b is None else (x, w, b)

    def f(*args):
        return conv2d(*args, stride=stride, padding=1, groups=groups)

    assert torch.autograd.gradcheck(f, inputs)
    assert torch.autograd.gradgradcheck(f, inputs)


def test_third_derivative_equals_torch_autograd():
    """A third-order derivative (a scalar of the weight built from two nested gradients)
    equals torch's own autograd of F.conv2d."""

    def third(conv):
        x, w, _ = _inputs(2, 3, 4, 7, bias=False, seed=1)
        y = conv(x, w)
        (gw,) = torch.autograd.grad((y**2).sum(), w, create_graph=True)
        (gx,) = torch.autograd.grad((gw**2).sum(), x, create_graph=True)
        (gww,) = torch.autograd.grad((gx**3).sum(), w)
        return gww

    ours = third(lambda x, w: conv2d(x, w, stride=2, padding=1, groups=2))
    reference = third(lambda x, w: F.conv2d(x, w, stride=2, padding=1, groups=2))
    torch.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-10)


def test_images_layout_is_channels_last():
    one_channel = torch.rand(5, 1, 6, 6)
    moved = images_layout(one_channel)
    assert moved.stride() == (36, 1, 6, 1)  # forced, though C = 1 is "contiguous" either way
    assert torch.equal(moved, one_channel)
    three = torch.rand(5, 3, 4, 4)
    assert images_layout(three).is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(images_layout(three), three)
    assert images_layout(moved) is moved


def test_the_body_gives_the_same_values_and_gradients_in_either_layout():
    """``model(x)`` runs channels-last; block by block (the modules keep the layout they are
    given) it runs channels-first. Same values and gradients (float64)."""
    torch.manual_seed(0)
    model = conv4(5).double()
    x = torch.rand(12, 1, 28, 28, dtype=torch.float64)
    labels = torch.arange(12) % 5

    def by_blocks(images):
        for name in ("conv1", "conv2", "conv3", "conv4"):
            images = getattr(model, name)(images)
        assert images.is_contiguous()
        return model.head(model.read_out(images))

    results = []
    for forward in (model, by_blocks):
        model.zero_grad()
        logits = forward(x)
        F.cross_entropy(logits, labels).backward()
        results.append((logits.detach(), [p.grad.clone() for p in model.parameters()]))
    (cl_logits, cl_grads), (cf_logits, cf_grads) = results
    torch.testing.assert_close(cl_logits, cf_logits, rtol=1e-12, atol=1e-12)
    for a, b in zip(cl_grads, cf_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
