"""conv4: the four-block convolutional network of MAML (Finn et al. 2017), as used by "Rapid
Learning or Feature Reuse?" (Raghu et al. 2020), with its layers named ``conv1``..``conv4`` and
``head``.

Architecture (checked against cbfinn/maml ``maml.py``/``utils.py``):

- Each block ``convI`` is a 3x3 convolution, batch norm, ReLU and, for miniImageNet, a 2x2 max
  pool. Omniglot (28x28 inputs): 64 filters, stride-2 convolutions (28 -> 14 -> 7 -> 4 -> 2),
  then the final feature map is **averaged over space** (``tf.reduce_mean(hidden4, [1, 2])``)
  into 64 features. miniImageNet (84x84): 32 filters, stride 1 and 2x2 max-pooling
  (84 -> 42 -> 21 -> 10 -> 5), **flattened** into 32*5*5 = 800 features.
- ``head`` is a linear layer from those features to ``ways`` logits.

Padding (``padding=``, :data:`PADDINGS`): ``"same"`` is TensorFlow's ``SAME``, as in the
reference (cbfinn/maml ``utils.py``, ``conv_block``, lines 26-33: ``tf.nn.conv2d(..., 'SAME')``):
a total of ``max((ceil(H / s) - 1) s + 3 - H, 0)`` rows, the smaller half before and the extra
row after, likewise for columns; so a stride-2 convolution of an even-sized map pads only the
bottom and right (0 before, 1 after) and samples rows 1, 3, 5, ... (:func:`same_padding`).
``"symmetric"`` pads 1 on every side (PyTorch's usual ``padding=1``): the same output sizes, the
stride-2 sampling grid one pixel up and left. The factory's default is ``"symmetric"``, so that
run folders written before the option existed load unchanged; the paper defaults, and so every
run of ``meta train``, ask for ``"same"`` and record it in the model spec.

Differences from the TensorFlow reference, deliberate and small:

- Convolutions have no bias when followed by batch norm (the reference's bias is subtracted out
  exactly by batch statistics: its gradient is zero, adapting it changes nothing).

Batch norm is the reference's ``tf.contrib.layers.batch_norm`` defaults: a learnt shift
(``<layer>.norm.bias``), no scale, ``eps = 1e-3``. The reference creates the shift outside the
weights its inner loop adapts, so it is learnt in the outer loop only; :class:`meta.core.inner.InnerLoop`
does the same unless ``adapt_norm=True``.
- Initialisation follows the reference: Glorot-uniform convolutions, zero biases, unit/zero batch
  norm, Glorot-uniform head for miniImageNet and a standard-normal head for Omniglot.

Batch norm semantics (recorded in snapshots as ``batch_norm``):

- ``"batch"`` (default): batch statistics of the batch given, in the inner loop **and at test
  time**, as in the original MAML code; no running statistics exist, so ``model.eval()``
  changes nothing and activations depend on which inputs share a forward pass (the toolkit
  always passes a task's support set and its query set as two separate batches).
- ``"none"``: no normalisation (convolutions then have a bias); an ablation.

Forward in stages. ``model(x, start=None, stop=None)`` runs the layers ``start`` .. ``stop``
(inclusive, in the order of ``model.layers``); the output of the ``conv4`` stage is the
penultimate feature matrix ``(n, feature_dim)`` (conv4's feature map averaged or flattened),
which is also what the ``head`` stage takes. ``model.features(x)`` is the body alone. The
*modules* ``conv1``..``conv4`` output feature maps ``(n, C, h, w)`` (what forward hooks see).

Imports: :mod:`meta.core` only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from meta.core.convolution import conv2d as grouped_conv2d
from meta.core.names import BODY, LAYERS
from meta.validation import check_choice, check_int

BATCH_NORM_MODES: tuple[str, ...] = ("batch", "none")
#: How the head's weights start: standard normal (the reference Omniglot conv4), Glorot-uniform
#: (the reference miniImageNet conv4) or zero (an ablation: every class starts equal).
HEAD_INITS: tuple[str, ...] = ("normal", "xavier", "zero")
BN_EPS = 1e-3
#: How a 3x3 convolution pads its input (see the module docstring).
PADDINGS: tuple[str, ...] = ("same", "symmetric")


@dataclass(frozen=True)
class Variant:
    """One data set's conv4: filters, input size, how blocks downsample, how features are read."""

    filters: int
    image_size: int
    downsample: str  # "stride": stride-2 convolution; "maxpool": stride 1 then 2x2 max-pool
    readout: str  # "mean": average the final map over space; "flatten": flatten it


VARIANTS: dict[str, Variant] = {
    "omniglot": Variant(filters=64, image_size=28, downsample="stride", readout="mean"),
    "miniimagenet": Variant(filters=32, image_size=84, downsample="maxpool", readout="flatten"),
}


def same_padding(size: int, stride: int, kernel: int = 3) -> tuple[int, int]:
    """TensorFlow's ``SAME`` padding of one axis: ``(before, after)`` with
    ``before + after = max((ceil(size / stride) - 1) stride + kernel - size, 0)`` and
    ``before = total // 2``.

    Examples:
        >>> same_padding(28, 2), same_padding(7, 2), same_padding(84, 1)
        ((0, 1), (1, 1), (1, 1))
    """
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def padded(x: Tensor, stride: int, padding: str) -> tuple[Tensor, int]:
    """``x`` ``(n, C, H, W)`` ready for a 3x3 convolution of ``stride``: ``(x, 1)`` where the
    padding is 1 on every side (the convolution pads), else ``(F.pad(x, ...), 0)`` (TensorFlow's
    asymmetric ``SAME`` padding done here, the convolution pads nothing)."""
    if padding == "symmetric":
        return x, 1
    rows, columns = same_padding(x.shape[-2], stride), same_padding(x.shape[-1], stride)
    if rows == columns == (1, 1):
        return x, 1
    return F.pad(x, (*columns, *rows)), 0


def block_forward(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    norm_shift: Tensor | None,
    *,
    stride: int,
    pool: bool,
    groups: int = 1,
    padding: str = "symmetric",
) -> Tensor:
    """One conv4 block: ``maxpool?(relu(bn(conv3x3(x))))``, ``bn(z)_c = (z_c - mean_c) /
    sqrt(var_c + eps) + shift_c`` with batch statistics (``norm_shift is None``: no
    normalisation), the convolution padded as ``padding`` says (:data:`PADDINGS`).

    ``x`` is ``(n, groups * C_in, H, W)``; with ``groups > 1`` each group of channels is a
    separate task (a grouped convolution with per-group weights ``(groups * C_out, C_in, 3, 3)``),
    and batch norm, computed per channel over ``(n, H, W)``, is then per task as well. Narrow
    inputs take the folded route of :func:`conv_batch_norm_folded` (same function, fewer passes over memory).
    """
    x, pad = padded(x, stride, padding)
    if norm_shift is not None and bias is None and _fold_pays(x, weight, groups):
        x = conv_batch_norm_folded(x, weight, norm_shift, stride=stride, groups=groups, pad=pad)
    else:
        x = conv3x3(x, weight, bias, stride=stride, groups=groups, pad=pad)
        if norm_shift is not None:
            x = shift_batch_norm(x, norm_shift)
    x = F.relu(x)
    return F.max_pool2d(x, 2) if pool else x


# Fold batch norm into the convolution when a 3x3 patch has at most this fraction of the
# output channels and the batch (all groups together) has at least FOLD_MIN_BATCH examples:
# where the fold pays on conv1 of the Omniglot conv4 (1 input channel), as measured for
# benchmarks/README.md (faster for a 75-image query set, slower for a 5-image support set).
FOLD_MAX_PATCH_FRACTION = 0.5
FOLD_MIN_BATCH = 16


def _fold_pays(x: Tensor, weight: Tensor, groups: int) -> bool:
    patch = weight.shape[1] * weight.shape[2] * weight.shape[3]
    return patch <= FOLD_MAX_PATCH_FRACTION * (weight.shape[0] // groups) and x.shape[0] * groups >= FOLD_MIN_BATCH


def conv_batch_norm_folded(
    x: Tensor, weight: Tensor, norm_shift: Tensor, *, stride: int, groups: int = 1, pad: int = 1
) -> Tensor:
    """``batch_norm(conv2d(x, weight))`` with batch statistics, as one convolution with folded
    weights and bias.

    The convolution is linear in the input patches ``p`` (the ``k = 9 * C_in`` values under the
    kernel, zero padding included), so the batch mean and variance of output channel ``c`` are
    ``w_c . mu`` and ``w_c^T Sigma w_c``, with ``mu``, ``Sigma`` the mean and (biased) covariance
    of the patches over every output position of the batch. Then::

        bn(conv(x))_c = conv(x; a_c w_c) + (beta_c - a_c w_c . mu),   a_c = 1 / sqrt(var_c + eps)

    Exact in exact arithmetic and differentiable to any order. It replaces the several passes of
    batch norm's forward and backward over the (large) output by a ``k x k`` covariance of the
    (small) patches: worth it when ``k`` is small (conv1 on images). The patch statistics and the
    folding are computed in float64 (they are small), so in float32 the result is as accurate as
    the convolution. Per task for ``groups > 1``. ``pad``: zero padding on every side.
    """
    n, dtype = x.shape[0], x.dtype
    c_out, k = weight.shape[0] // groups, weight.shape[1] * weight.shape[2] * weight.shape[3]
    patches = F.unfold(x, weight.shape[2:], padding=pad, stride=stride)  # (n, groups * k, L)
    patches = patches.view(n, groups, k, -1).permute(1, 0, 3, 2).reshape(groups, -1, k).double()
    mu = patches.mean(dim=1, keepdim=True)  # (groups, 1, k)
    centred = patches - mu
    covariance = centred.transpose(1, 2) @ centred / patches.shape[1]  # (groups, k, k)
    w = weight.reshape(groups, c_out, k).double()
    mean = (w @ mu.transpose(1, 2)).squeeze(-1)  # (groups, c_out)
    var = ((w @ covariance) * w).sum(dim=-1)
    scale = torch.rsqrt(var + BN_EPS)
    folded_weight = (w * scale.unsqueeze(-1)).reshape(weight.shape).to(dtype)
    folded_bias = (norm_shift.view(groups, c_out) - scale * mean).reshape(-1).to(dtype)
    return conv3x3(x, folded_weight, folded_bias, stride=stride, groups=groups, pad=pad)


def conv3x3(x: Tensor, weight: Tensor, bias: Tensor | None, *, stride: int, groups: int = 1, pad: int = 1) -> Tensor:
    """3x3 convolution with zero padding ``pad`` on every side: ``x`` ``(n, groups * C_in, H, W)``, ``weight``
    ``(groups * C_out, C_in, 3, 3)``. Grouped ones (tasks side by side) go through
    :func:`meta.core.convolution.conv2d`, whose derivatives of every order are single grouped kernels
    (torch's double backward splits them group by group); ``groups == 1`` uses ``F.conv2d``."""
    if groups > 1:
        return grouped_conv2d(x, weight, bias, stride=stride, padding=pad, groups=groups)
    return F.conv2d(x, weight, bias, stride=stride, padding=pad)


def shift_batch_norm(z: Tensor, shift: Tensor) -> Tensor:
    """``(z - mean) / sqrt(var + eps) + shift`` per channel of ``z`` ``(n, C, H, W)``, with the
    batch's statistics. (The shift is added outside ``F.batch_norm``: its double backward fails
    for a bias without a weight in torch 2.13.)"""
    return F.batch_norm(z, None, None, training=True, eps=BN_EPS) + shift.view(-1, 1, 1)


class ShiftBatchNorm(nn.Module):
    """Batch norm with batch statistics and a learnt shift, no scale (TensorFlow's
    ``batch_norm(center=True, scale=False)``): ``(z - mean) / sqrt(var + eps) + bias`` per
    channel of ``(n, C, H, W)``. Holds no running statistics."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, z: Tensor) -> Tensor:
        return shift_batch_norm(z, self.bias)


class ConvBlock(nn.Module):
    """conv 3x3 (padded as ``padding`` says) -> batch norm (batch statistics, shift only) -> ReLU
    [-> 2x2 max-pool]. ``conv`` is an ``nn.Conv2d`` holding the weights (its own padding unused)."""

    def __init__(
        self, in_channels: int, out_channels: int, downsample: str, batch_norm: str, padding: str = "symmetric"
    ) -> None:
        super().__init__()
        self.stride = 2 if downsample == "stride" else 1
        self.pool = downsample == "maxpool"
        self.padding = padding
        normalised = batch_norm == "batch"
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride=self.stride, padding=1, bias=not normalised)
        self.norm = ShiftBatchNorm(out_channels) if normalised else None

    def forward(self, x: Tensor) -> Tensor:
        norm = self.norm
        return block_forward(
            x,
            self.conv.weight,
            self.conv.bias,
            None if norm is None else norm.bias,
            stride=self.stride,
            pool=self.pool,
            padding=self.padding,
        )


class Conv4(nn.Module):
    """conv4 body (``conv1``..``conv4``) and linear ``head``; see the module docstring.

    Attributes:
        layers: ``("conv1", "conv2", "conv3", "conv4", "head")``, forward order.
        feature_dim: size of the penultimate features (64 Omniglot, 800 miniImageNet).
        readout: ``"mean"`` or ``"flatten"`` (how conv4's map becomes features).
        batch_norm: ``"batch"`` or ``"none"``.
        padding: ``"same"`` or ``"symmetric"`` (:data:`PADDINGS`).
    """

    layers: tuple[str, ...] = LAYERS

    def __init__(
        self,
        ways: int,
        in_channels: int,
        variant: Variant,
        batch_norm: str,
        head_init: str,
        padding: str = "symmetric",
    ) -> None:
        super().__init__()
        self.ways, self.variant, self.batch_norm, self.readout = ways, variant, batch_norm, variant.readout
        self.padding = padding
        channels = [in_channels] + [variant.filters] * 4
        for i in range(4):
            block = ConvBlock(channels[i], channels[i + 1], variant.downsample, batch_norm, padding)
            self.add_module(f"conv{i + 1}", block)
        self.final_size = _final_size(variant)
        self.feature_dim = variant.filters * (self.final_size**2 if variant.readout == "flatten" else 1)
        self.head = nn.Linear(self.feature_dim, ways)
        self._init_weights(head_init)

    def _init_weights(self, head_init: str) -> None:
        for name in BODY:
            block = getattr(self, name)
            nn.init.xavier_uniform_(block.conv.weight)
            if block.conv.bias is not None:
                nn.init.zeros_(block.conv.bias)
        if head_init == "normal":
            nn.init.normal_(self.head.weight)
        elif head_init == "xavier":
            nn.init.xavier_uniform_(self.head.weight)
        else:
            nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def read_out(self, x: Tensor) -> Tensor:
        """conv4's map ``(n, C, h, w)`` -> features ``(n, feature_dim)``."""
        return x.mean(dim=(2, 3)) if self.readout == "mean" else x.flatten(1)

    def forward(self, x: Tensor, *, start: str | None = None, stop: str | None = None) -> Tensor:
        """Run layers ``start`` .. ``stop`` (inclusive; defaults: the first and the last).

        ``x`` is images ``(n, C, H, W)`` when ``start`` is ``conv1``, the previous stage's
        output otherwise (features ``(n, feature_dim)`` for ``start="head"``). Returns logits
        ``(n, ways)`` when the head runs, features ``(n, feature_dim)`` when ``stop="conv4"``,
        and the feature map ``(n, C, h, w)`` of an earlier block.
        """
        names = stage_names(self.layers, start, stop)
        if names[0] == "conv1":
            x = images_layout(x)
        for name in names:
            x = self.head(x) if name == "head" else getattr(self, name)(x)
            if name == "conv4":
                x = self.read_out(x)
        return x

    def features(self, x: Tensor) -> Tensor:
        """The body alone: images ``(n, C, H, W)`` -> penultimate features ``(n, feature_dim)``."""
        return self(x, stop="conv4")

    def forward_tasks(
        self,
        params: Mapping[str, Tensor],
        x: Tensor,
        *,
        start: str | None = None,
        stop: str | None = None,
    ) -> Tensor:
        """Stages ``start`` .. ``stop`` for ``T`` tasks at once, each with its own weights.

        Mathematically ``T`` independent calls of :meth:`forward` (one per task, batch norm per
        task), computed as grouped convolutions (the tasks side by side in the channel
        dimension, :func:`to_task_groups`).

        Args:
            params: parameter name -> tensor, either per task ``(T, *shape)`` or shared
                (``shape``, used by every task); names absent use the model's own tensors.
            x: stage input with a leading task dimension: images or maps ``(T, n, C, H, W)``,
                features ``(T, n, feature_dim)`` when ``start="head"``.

        Returns:
            Logits ``(T, n, ways)``, features ``(T, n, feature_dim)`` after ``conv4``, or maps
            ``(T, n, C, h, w)`` after an earlier block.
        """
        tasks = x.shape[0]
        own = dict(self.named_parameters())
        full = {k: _per_task(params.get(k, v), v, tasks) for k, v in own.items()}
        names = stage_names(self.layers, start, stop)
        if names[0] != "head":
            x = to_task_groups(x)
        for name in names:
            if name == "head":
                x = torch.baddbmm(full["head.bias"].unsqueeze(1), x, full["head.weight"].transpose(1, 2))
                continue
            x = self._block_tasks(name, full, x, tasks)
            if name == "conv4":
                n, _, h, w = x.shape
                x = self.read_out(x.reshape(n * tasks, -1, h, w)).reshape(n, tasks, -1).transpose(0, 1)
        return from_task_groups(x, tasks) if names[-1] not in ("conv4", "head") else x

    def _block_tasks(self, name: str, params: Mapping[str, Tensor], x: Tensor, tasks: int) -> Tensor:
        block = getattr(self, name)
        flat = {
            key: params[f"{name}.{key}"].flatten(0, 1) if f"{name}.{key}" in params else None for key in _BLOCK_KEYS
        }
        return block_forward(
            x,
            flat["conv.weight"],
            flat["conv.bias"],
            flat["norm.bias"],
            stride=block.stride,
            pool=block.pool,
            groups=tasks,
            padding=block.padding,
        )


_BLOCK_KEYS = ("conv.weight", "conv.bias", "norm.bias")


def _per_task(value: Tensor, own: Tensor, tasks: int) -> Tensor:
    """``value`` as ``(tasks, *own.shape)``: per-task tensors as they are, shared ones expanded."""
    if value.shape == own.shape:
        return value.expand(tasks, *own.shape)
    if value.shape != (tasks, *own.shape):
        raise ValueError(f"parameter of shape {tuple(value.shape)} is neither {tuple(own.shape)} nor per task")
    return value


def images_layout(x: Tensor) -> Tensor:
    """Images ``(n, C, H, W)`` in the memory layout the body runs fastest in on CPUs:
    channels-last, strides ``(H*W*C, 1, W*C, C)`` (forced even for ``C = 1``, where torch would
    keep the channels-first strides). Same values; only the strides differ. Other devices:
    unchanged.

    On CPUs the forward and backward of a query set are faster this way for both conv4 variants
    (oneDNN returns conv2's input gradient channels-last, and a channels-first conv1 copies it
    back) and no slower for small support sets (``benchmarks/README.md``). Grouped task batches
    (:meth:`Conv4.forward_tasks`) stay channels-first: there every fast weight would be
    reordered, and MAML was slower.
    """
    if x.device.type != "cpu" or x.dim() != 4:
        return x
    if x.stride(1) == 1 and x.is_contiguous(memory_format=torch.channels_last):
        return x
    out = torch.empty_like(x, memory_format=torch.channels_last)
    return out.copy_(x)


def to_task_groups(x: Tensor) -> Tensor:
    """Maps of ``T`` tasks ``(T, n, C, H, W)`` -> task-grouped layout ``(n, T * C, H, W)``."""
    t, n, c, h, w = x.shape
    return x.transpose(0, 1).reshape(n, t * c, h, w)


def from_task_groups(x: Tensor, tasks: int) -> Tensor:
    """Inverse of :func:`to_task_groups`: ``(n, T * C, H, W)`` -> ``(T, n, C, H, W)``."""
    n, tc, h, w = x.shape
    return x.reshape(n, tasks, tc // tasks, h, w).transpose(0, 1)


def stage_names(layers: tuple[str, ...], start: str | None, stop: str | None) -> tuple[str, ...]:
    """The layers from ``start`` to ``stop`` inclusive (``None``: first / last)."""
    first = 0 if start is None else _layer_index(layers, start)
    last = len(layers) - 1 if stop is None else _layer_index(layers, stop)
    if first > last:
        raise ValueError(f"start={start!r} comes after stop={stop!r} in {layers}")
    return layers[first : last + 1]


def _layer_index(layers: tuple[str, ...], name: str) -> int:
    if name not in layers:
        raise ValueError(f"unknown layer {name!r}; layers are {layers}")
    return layers.index(name)


def _final_size(variant: Variant) -> int:
    """Side of conv4's output map: four halvings (ceil for stride 2 with either padding, floor
    for 2x2 max-pooling)."""
    size = variant.image_size
    for _ in range(4):
        size = (size + 1) // 2 if variant.downsample == "stride" else size // 2
    if size < 1:
        raise ValueError(f"image_size={variant.image_size} is too small for four downsamplings")
    return size


def conv4(
    ways: int,
    in_channels: int = 1,
    variant: str = "omniglot",
    filters: int | None = None,
    image_size: int | None = None,
    batch_norm: str = "batch",
    padding: str = "symmetric",
    head_init: str | None = None,
) -> Conv4:
    """Build conv4 (factory for model specs: ``{"factory": "meta.core.models:conv4", "kwargs": ...}``).

    Args:
        ways: outputs of the head (``N`` for N-way tasks; the number of training classes for
            multiclass training).
        in_channels: 1 for Omniglot, 3 for miniImageNet.
        variant: ``"omniglot"`` (64 filters, stride 2, spatial mean, 28x28) or
            ``"miniimagenet"`` (32 filters, max-pool, flatten, 84x84).
        filters: override the variant's filter count (e.g. small test models).
        image_size: input side; only changes the head size for ``"miniimagenet"`` (flatten).
        batch_norm: ``"batch"`` (batch statistics always) or ``"none"``.
        padding: ``"same"`` (TensorFlow's, the reference's: the paper defaults ask for it) or
            ``"symmetric"`` (1 on every side; the default, so that older run folders load
            unchanged). See the module docstring.
        head_init: the head's initial weights, one of :data:`HEAD_INITS` (default: the
            variant's, ``"normal"`` for Omniglot and ``"xavier"`` for miniImageNet, as the
            reference); the bias starts at zero.
    """
    check_choice("variant", variant, sorted(VARIANTS))
    check_choice("batch_norm", batch_norm, BATCH_NORM_MODES)
    check_choice("padding", padding, PADDINGS)
    if head_init is not None:
        check_choice("head_init", head_init, HEAD_INITS)
    for name, value in (("ways", ways), ("in_channels", in_channels), ("filters", filters), ("image_size", image_size)):
        if value is not None:
            check_int(name, value, minimum=1)
    base = VARIANTS[variant]
    chosen = Variant(
        filters=base.filters if filters is None else filters,
        image_size=base.image_size if image_size is None else image_size,
        downsample=base.downsample,
        readout=base.readout,
    )
    head_init = head_init or ("normal" if variant == "omniglot" else "xavier")
    return Conv4(ways, in_channels, chosen, batch_norm, head_init=head_init, padding=padding)
