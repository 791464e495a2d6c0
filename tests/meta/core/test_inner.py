"""The inner loop and the meta-gradient, checked in float64 against a plain per-task autograd loop
(written independently of meta.core.models and meta.core.inner) and against finite differences, for every
regime, frozen set and execution path, through batch norm with batch statistics."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from meta.core import models
from meta.core.inner import InnerLoop, frozen_prefix, inner_loop, layer_params, module_forward
from meta.core.models import LAYERS, conv4
from meta.core.paths import PATHS, meta_gradient
from meta.core.procedures import evaluate_task

WAYS, SHOTS, QUERIES, TASKS, SIZE = 3, 2, 3, 3, 8

SETTINGS = {
    "maml": InnerLoop(3, 0.3),
    "fomaml": InnerLoop(3, 0.3, first_order=True),
    "anil": InnerLoop(3, 0.3, adapt=frozenset({"head"})),
    "frozen_conv12": InnerLoop(2, 0.3, adapt=frozenset({"conv3", "conv4", "head"})),
    "frozen_head": InnerLoop(2, 0.3, adapt=frozenset({"conv1", "conv2", "conv3", "conv4"})),
    "conv2_only": InnerLoop(2, 0.3, adapt=frozenset({"conv2"})),
    "anil_first_order": InnerLoop(2, 0.3, adapt=frozenset({"head"}), first_order=True),
    "maml_adapt_norm": InnerLoop(2, 0.3, adapt_norm=True),
}


# --------------------------------------------------------------------------------------------
# The plain reference: conv4 as a function of a parameter dict, MAML as a per-task autograd loop
# --------------------------------------------------------------------------------------------


def reference_forward(params: dict, x: torch.Tensor, batch_norm: bool = True) -> torch.Tensor:
    """conv4 (Omniglot variant) written out: 4 x [conv3x3 stride 2, batch norm with the batch's
    statistics, ReLU], spatial mean, linear head."""
    for i in range(1, 5):
        x = F.conv2d(x, params[f"conv{i}.conv.weight"], params.get(f"conv{i}.conv.bias"), stride=2, padding=1)
        if batch_norm:
            mean = x.mean(dim=(0, 2, 3), keepdim=True)
            var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
            x = (x - mean) / torch.sqrt(var + 1e-3) + params[f"conv{i}.norm.bias"].view(1, -1, 1, 1)
        x = torch.relu(x)
    return x.mean(dim=(2, 3)) @ params["head.weight"].T + params["head.bias"]


def reference_adapt(params: dict, x, y, inner: InnerLoop, create_graph: bool, batch_norm: bool = True) -> list[dict]:
    """Clone-and-update: the parameters after each step (first entry: the initial ones). The
    loss is the reference MAML code's: cross-entropies summed over the support set, divided by
    the shots; batch-norm shifts adapt only with ``inner.adapt_norm``."""
    names = [
        k
        for k in params
        if (inner.adapt is None or k.split(".")[0] in inner.adapt) and (inner.adapt_norm or ".norm." not in k)
    ]
    shots = len(y) // int(y.max() + 1)
    history = [dict(params)]
    for _ in range(inner.steps):
        fast = history[-1]
        loss = F.cross_entropy(reference_forward(fast, x, batch_norm), y, reduction="sum") / shots
        grads = torch.autograd.grad(loss, [fast[k] for k in names], create_graph=create_graph)
        history.append({**fast, **{k: fast[k] - inner.lr * g for k, g in zip(names, grads)}})
    return history


def reference_meta_loss(params: dict, tasks, inner: InnerLoop, batch_norm: bool = True) -> torch.Tensor:
    """(1/T) sum_t CE(query_t; adapted_t), second order unless ``inner.first_order``."""
    total = 0.0
    for t in range(len(tasks.support_x)):
        x, y = tasks.support_x[t], tasks.support_y[t]
        adapted = reference_adapt(params, x, y, inner, not inner.first_order, batch_norm)[-1]
        if inner.first_order:  # d adapted / d params = I: the inner gradients are constants
            adapted = {k: params[k] + (v - params[k]).detach() for k, v in adapted.items()}
        total = total + F.cross_entropy(reference_forward(adapted, tasks.query_x[t], batch_norm), tasks.query_y[t])
    return total / len(tasks.support_x)


def reference_meta_gradient(model, tasks, inner: InnerLoop, batch_norm: bool = True) -> dict:
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(reference_meta_loss(params, tasks, inner, batch_norm), list(params.values()))
    return dict(zip(params, grads))


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


def make_tasks(seed: int, dtype=torch.float64) -> SimpleNamespace:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(WAYS)
    return SimpleNamespace(
        support_x=torch.rand(TASKS, WAYS * SHOTS, 2, SIZE, SIZE, generator=g, dtype=dtype),
        support_y=labels.repeat_interleave(SHOTS).expand(TASKS, -1),
        query_x=torch.rand(TASKS, WAYS * QUERIES, 2, SIZE, SIZE, generator=g, dtype=dtype),
        query_y=labels.repeat_interleave(QUERIES).expand(TASKS, -1),
    )


def first_episode(tasks: SimpleNamespace) -> SimpleNamespace:
    return SimpleNamespace(**{k: v[0] for k, v in vars(tasks).items()})


def small_model(batch_norm: str = "batch", seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = conv4(WAYS, in_channels=2, filters=4, image_size=SIZE, batch_norm=batch_norm).double()
    with torch.no_grad():
        model.head.weight.mul_(0.3)
        for name in ("conv1", "conv2", "conv3", "conv4"):
            norm = getattr(model, name).norm
            if norm is not None:  # away from the zero initialisation, so every term counts
                norm.bias.uniform_(-0.3, 0.3)
    return model


def assert_grads_close(model, expected: dict, rtol: float = 1e-9) -> None:
    for name, p in model.named_parameters():
        scale = float(expected[name].abs().max()) + 1e-12
        assert p.grad is not None, name
        err = float((p.grad - expected[name]).abs().max())
        assert err <= rtol * scale, f"{name}: max error {err:.3e} vs scale {scale:.3e}"


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


def test_model_forward_equals_the_plain_reference():
    model = small_model()
    x = make_tasks(0).support_x[0]
    torch.testing.assert_close(model(x), reference_forward(dict(model.named_parameters()), x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("path,loop_from", [(path, 7) for path in PATHS] + [("hybrid", 4)])
@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_meta_gradient_equals_the_plain_autograd_loop(setting, path, loop_from):
    """Every regime and frozen set, on every execution path (support sets have 6 examples:
    "hybrid" adapts them side by side with ``loop_from=7``, task by task with 4; ``chunk=2``
    splits 3 tasks unevenly)."""
    model, tasks, inner = small_model(), make_tasks(1), SETTINGS[setting]
    expected = reference_meta_gradient(model, tasks, inner)
    metrics = meta_gradient(model, tasks, inner, path=path, chunk=2, loop_from=loop_from)
    assert_grads_close(model, expected)
    reference_loss = reference_meta_loss(dict(model.named_parameters()), tasks, inner).detach()
    assert metrics["loss"] == pytest.approx(float(reference_loss), rel=1e-12)


@pytest.mark.parametrize("path", [p for p in PATHS if p != "compiled"])
@pytest.mark.parametrize("setting", ["maml", "fomaml", "anil", "frozen_conv12"])
def test_meta_gradient_with_batch_norm_folded_into_every_convolution(setting, path, monkeypatch):
    """The folded conv + batch norm route (normally conv1 of large batches only), forced on every
    block and batch size, gives the same meta-gradient, second order included. (Not "compiled":
    it builds its program in a child process, which this monkeypatch does not reach.)"""
    monkeypatch.setattr(models, "FOLD_MAX_PATCH_FRACTION", 100.0)
    monkeypatch.setattr(models, "FOLD_MIN_BATCH", 1)
    model, tasks, inner = small_model(), make_tasks(11), SETTINGS[setting]
    expected = reference_meta_gradient(model, tasks, inner)
    meta_gradient(model, tasks, inner, path=path, chunk=2, loop_from=7)
    assert_grads_close(model, expected)


# A fresh interpreter: every path's meta-gradient, then the modules it loaded. (Where sympy came
# in, through torch.autograd.backward's check of explicit output gradients, it added about 20 MB
# of resident memory and a second to the first iteration, and to our side of the benchmark. The
# "compiled" path compiles in a child process and only loads the result: the compiler, inductor
# and dynamo with sympy, would add about 200 MB.)
_NO_SYMPY = """
import sys, torch
from types import SimpleNamespace
from meta.core.paths import PATHS, meta_gradient
from meta.core.inner import InnerLoop
from meta.core.models import conv4
model = conv4(3, in_channels=1, filters=4, image_size=8)
tasks = SimpleNamespace(support_x=torch.rand(2, 3, 1, 8, 8), support_y=torch.arange(3).expand(2, -1),
                        query_x=torch.rand(2, 6, 1, 8, 8), query_y=torch.arange(3).repeat(2).expand(2, -1))
for path in PATHS:
    for inner in (InnerLoop(2, 0.1), InnerLoop(2, 0.1, adapt=frozenset({"head"}))):
        meta_gradient(model, tasks, inner, path=path, chunk=2, loop_from=4)
compiler = ("torch._inductor", "torch._dynamo")
print(sorted(m for m in sys.modules if m.split(".")[0] in ("sympy", "mpmath") or m.startswith(compiler)))
"""


def test_meta_gradient_loads_no_symbolic_algebra_or_compiler():
    done = subprocess.run(
        [sys.executable, "-c", _NO_SYMPY],
        cwd=Path(__file__).resolve().parents[3],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_meta_gradient_accumulates_into_existing_grads():
    model, tasks, inner = small_model(), make_tasks(2), SETTINGS["maml"]
    meta_gradient(model, tasks, inner, path="loop")
    once = {k: p.grad.clone() for k, p in model.named_parameters()}
    meta_gradient(model, tasks, inner, path="hybrid")
    for k, p in model.named_parameters():
        torch.testing.assert_close(p.grad, 2 * once[k], rtol=1e-12, atol=1e-14)


def test_meta_gradient_without_batch_norm():
    model, tasks = small_model(batch_norm="none"), make_tasks(3)
    expected = reference_meta_gradient(model, tasks, SETTINGS["maml"], batch_norm=False)
    meta_gradient(model, tasks, SETTINGS["maml"], path="grouped")
    assert_grads_close(model, expected)


@pytest.mark.parametrize("setting", ["maml", "anil", "frozen_conv12"])
def test_second_order_meta_gradient_matches_finite_differences(setting):
    """Directional derivative of the meta-loss (central differences, float64) == grad . v."""
    model, tasks, inner = small_model(), make_tasks(4), SETTINGS[setting]
    meta_gradient(model, tasks, inner, path="loop")
    params = dict(model.named_parameters())
    g = torch.Generator().manual_seed(5)
    direction = {k: torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in params.items()}
    analytic = sum(float((params[k].grad * direction[k]).sum()) for k in params)
    eps = 1e-6  # central differences: truncation ~eps^2, rounding ~1e-16/eps
    with torch.enable_grad():
        shifted = [
            {k: (v + sign * eps * direction[k]).detach().requires_grad_() for k, v in params.items()}
            for sign in (1, -1)
        ]
        plus, minus = (reference_meta_loss(p, tasks, inner) for p in shifted)
    numeric = float((plus - minus).detach()) / (2 * eps)
    assert analytic == pytest.approx(numeric, rel=1e-6, abs=1e-9)


def test_first_order_meta_gradient_is_the_query_gradient_at_the_adapted_parameters():
    model, tasks, inner = small_model(), make_tasks(6), SETTINGS["fomaml"]
    meta_gradient(model, tasks, inner, path="loop")
    expected = {k: torch.zeros_like(v) for k, v in model.named_parameters()}
    for t in range(TASKS):
        params = dict(model.named_parameters())
        adapted = reference_adapt(params, tasks.support_x[t], tasks.support_y[t], inner, False)[-1]
        adapted = {k: v.detach().requires_grad_() for k, v in adapted.items()}
        loss = F.cross_entropy(reference_forward(adapted, tasks.query_x[t]), tasks.query_y[t]) / TASKS
        for k, g in zip(adapted, torch.autograd.grad(loss, list(adapted.values()))):
            expected[k] += g
    assert_grads_close(model, expected)


@pytest.mark.parametrize("setting", ["maml", "anil", "conv2_only", "maml_adapt_norm"])
def test_steps_are_recorded_and_only_adapted_layers_change(setting):
    """Adapted layers' weights move; frozen layers and (unless adapt_norm) batch-norm shifts
    stay, as in the reference MAML code, whose batch-norm variables are outside its fast weights."""
    model, tasks, inner = small_model(), make_tasks(7), SETTINGS[setting]
    params = dict(model.named_parameters())
    x, y = tasks.support_x[0], tasks.support_y[0]
    adapted = inner_loop(module_forward(model), params, LAYERS, x, y, inner, meta_grad=False, record_steps=True)
    expected = reference_adapt(params, x, y, inner, create_graph=False)[1:]
    assert len(adapted.steps) == inner.steps
    moving = {k for k in layer_params(params, inner.adapted_layers(LAYERS)) if inner.adapt_norm or ".norm." not in k}
    assert any(".norm." in k for k in moving) == inner.adapt_norm
    for step, reference in zip(adapted.steps, expected):
        assert set(step) == set(params)
        for k, v in step.items():
            torch.testing.assert_close(v, reference[k].detach(), rtol=1e-12, atol=1e-14)
            assert not v.requires_grad
            assert torch.equal(v, params[k].detach()) == (k not in moving), k
    for k, v in adapted.params.items():
        assert torch.equal(v, adapted.steps[-1][k])


def test_test_time_adaptation_leaves_the_model_alone_and_scores_the_query_set():
    model, tasks, inner = small_model(), make_tasks(8), SETTINGS["maml"]
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    episode = first_episode(tasks)
    result = evaluate_task(model, episode, inner, record_steps=True)
    adapted = reference_adapt(dict(model.named_parameters()), episode.support_x, episode.support_y, inner, False)[-1]
    logits = reference_forward(adapted, episode.query_x).detach()
    assert result.loss == pytest.approx(float(F.cross_entropy(logits, episode.query_y)), rel=1e-10)
    assert result.accuracy == pytest.approx(float((logits.argmax(1) == episode.query_y).double().mean()))
    assert len(result.params_per_step) == inner.steps
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_zero_steps_is_the_unadapted_model():
    model, tasks = small_model(), make_tasks(9)
    episode = first_episode(tasks)
    result = evaluate_task(model, episode, InnerLoop(0, 0.5))
    with torch.no_grad():
        loss = F.cross_entropy(model(episode.query_x), episode.query_y)
    assert result.loss == pytest.approx(float(loss), rel=1e-12)


def test_frozen_prefix_is_computed_once_per_task():
    """ANIL: the body runs once on the support set and once on the query set of each task,
    however many steps; MAML runs it every step."""
    model, tasks = small_model(), make_tasks(10)
    calls = []
    model.conv1.register_forward_hook(lambda m, i, o: calls.append(o.shape[0]))
    meta_gradient(model, tasks, InnerLoop(4, 0.1, adapt=frozenset({"head"})), path="loop")
    assert calls == [WAYS * SHOTS, WAYS * QUERIES] * TASKS
    calls.clear()
    meta_gradient(model, tasks, InnerLoop(4, 0.1), path="loop")
    assert calls == ([WAYS * SHOTS] * 4 + [WAYS * QUERIES]) * TASKS
    assert frozen_prefix(LAYERS, ("head",)) == "conv4" and frozen_prefix(LAYERS, LAYERS) is None
    assert frozen_prefix(LAYERS, ("conv2", "head")) == "conv1"


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"steps": -1, "lr": 0.1}, "steps"),
        ({"steps": 1, "lr": -0.1}, "lr"),
        ({"steps": 1.5, "lr": 0.1}, "steps"),
        ({"steps": 1, "lr": 0.1, "adapt": "head"}, "string"),
    ],
)
def test_inner_loop_config_is_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        InnerLoop(**kwargs)


def test_unknown_adapted_layer_and_path_are_rejected():
    with pytest.raises(ValueError, match="unknown layers"):
        InnerLoop(1, 0.1, adapt=frozenset({"fc"})).adapted_layers(LAYERS)
    with pytest.raises(ValueError, match="path"):
        meta_gradient(small_model(), make_tasks(0), SETTINGS["maml"], path="vmap")


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@CUDA
@pytest.mark.parametrize("path", [p for p in PATHS if p != "compiled"])
@pytest.mark.parametrize("setting", ["maml", "fomaml", "anil"])
def test_meta_gradient_on_cuda_equals_the_float64_cpu_reference(setting, path):
    """Every GPU execution path ("compiled" is the CPU's): in float64 on the GPU to 1e-9 of the
    CPU reference, in float32 to float32's rounding (1e-4 of each gradient's scale)."""
    model, tasks, inner = small_model(), make_tasks(1), SETTINGS[setting]
    expected = reference_meta_gradient(model, tasks, inner)
    for dtype, rtol in ((torch.float64, 1e-9), (torch.float32, 1e-4)):
        gpu = small_model().to("cuda", dtype)
        moved = {k: v.to("cuda", dtype) if v.is_floating_point() else v.cuda() for k, v in vars(tasks).items()}
        batch = SimpleNamespace(**moved)
        meta_gradient(gpu, batch, inner, path=path, chunk=2, loop_from=7)
        assert_grads_close(gpu.cpu().double(), {k: v.to(dtype).double() for k, v in expected.items()}, rtol=rtol)
