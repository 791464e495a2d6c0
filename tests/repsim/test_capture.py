"""Activation capture: values, hook hygiene, layer selection, repeated calls, modes, batching."""

from __future__ import annotations

import pytest
import torch
import toy_models
from torch import nn

from repsim.capture import (
    DEFAULT_BATCH_SIZE,
    BatchStatisticsWarning,
    LayerNotFoundError,
    RepeatedCallWarning,
    capture_activations,
    iter_activations,
    resolve_batch_size,
    resolve_layers,
    uses_batch_statistics,
)


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_capture_equals_manual_forward_of_submodules():
    model = toy_models.mlp(seed=0)
    x = toy_models.randn(10, 6)
    acts = capture_activations(model, x, ["fc1", "relu1", "fc2", "head"], progress=False)
    with torch.no_grad():
        h1 = model.fc1(x)
        h2 = model.fc2(torch.relu(h1))
        out = model(x)
    assert list(acts) == ["fc1", "relu1", "fc2", "head"]
    assert torch.equal(acts["fc1"], h1)
    assert torch.equal(acts["relu1"], torch.relu(h1))
    assert torch.equal(acts["fc2"], h2)
    assert torch.equal(acts["head"], out)
    assert not acts["fc2"].requires_grad and acts["fc2"].device.type == "cpu"


def test_capture_conv_block_with_batch_statistics():
    model = toy_models.convnet(seed=1)
    x = toy_models.randn(7, 1, 8, 8)
    acts = capture_activations(model, x, ["conv1", "conv2.0"], progress=False)
    with torch.no_grad():
        c1 = model.conv1(x)  # BN without running stats: batch statistics in any mode
        expected = model.conv2[0](c1)
    assert acts["conv1"].shape == (7, 4, 4, 4)
    assert torch.equal(acts["conv1"], c1)
    assert torch.equal(acts["conv2.0"], expected)


def test_hooks_removed_after_success_and_after_exception():
    model = toy_models.mlp(seed=0)
    capture_activations(model, toy_models.randn(4, 6), "fc*", progress=False)
    assert _hook_count(model) == 0

    boom = toy_models.Boom()
    with pytest.raises(ValueError, match="cannot take inputs of shape .*RuntimeError: boom"):
        capture_activations(boom, toy_models.randn(4, 6), ["fc1", "head"], progress=False)
    assert _hook_count(boom) == 0
    assert boom.training  # mode restored after the exception too


def test_hooks_removed_when_iteration_stops_early():
    model = toy_models.mlp(seed=0)
    gen = iter_activations(model, toy_models.randn(9, 6), ["fc1"], batch_size=3, progress=False)
    next(gen)
    assert _hook_count(model) == 1
    gen.close()
    assert _hook_count(model) == 0


def test_grad_mode_is_not_leaked_to_the_consumer():
    a, b = toy_models.mlp(seed=0), toy_models.mlp(seed=1)
    x = toy_models.randn(9, 6)
    gen_a = iter_activations(a, x, ["fc1"], batch_size=3, progress=False)
    gen_b = iter_activations(b, x, ["fc1"], batch_size=3, progress=False)
    for acts_a, _ in zip(gen_a, gen_b):
        assert torch.is_grad_enabled()
        assert not acts_a["fc1"].requires_grad
    gen_b.close()  # generators finished out of order
    assert torch.is_grad_enabled()


def test_unknown_layer_lists_existing_names():
    model = toy_models.mlp()
    with pytest.raises(LayerNotFoundError, match="nope") as info:
        resolve_layers(model, ["fc1", "nope"])
    message = str(info.value)
    for name in ("fc1", "relu1", "fc2", "relu2", "head"):
        assert name in message
    assert isinstance(info.value, ValueError)
    with pytest.raises(LayerNotFoundError, match=r"conv\*"):
        resolve_layers(model, "conv*")


def test_glob_selection_order_and_deduplication():
    model = toy_models.convnet()
    assert resolve_layers(model, "conv?") == ["conv1", "conv2"]
    assert resolve_layers(model, ["head", "conv*.0"]) == ["head", "conv1.0", "conv2.0"]
    assert resolve_layers(model, ["conv1", "conv?"]) == ["conv1", "conv2"]
    # a glob matches the named layers (top-level children) before any sub-module ...
    assert resolve_layers(model, "conv*") == ["conv1", "conv2"]
    assert resolve_layers(model, "conv1*") == ["conv1"]
    # ... and only a glob that matches none of them every module path (where * crosses dots)
    assert resolve_layers(model, "conv1.*") == ["conv1.0", "conv1.1", "conv1.2", "conv1.3"]
    assert resolve_layers(model, "*.1") == ["conv1.1", "conv2.1"]


def test_globs_of_conv4_match_its_declared_layers():
    from meta.core.models import conv4

    model = conv4(ways=5, in_channels=1, variant="omniglot")
    assert resolve_layers(model, "conv*") == ["conv1", "conv2", "conv3", "conv4"]
    assert resolve_layers(model, ["conv*", "head"]) == ["conv1", "conv2", "conv3", "conv4", "head"]
    assert resolve_layers(model, "*") == ["conv1", "conv2", "conv3", "conv4", "head"]
    assert resolve_layers(model, "conv1.*") == ["conv1.conv", "conv1.norm"]
    # its own batch norm keeps no running statistics: a batch's activations depend on the batch
    assert uses_batch_statistics(model) and resolve_batch_size(2000, None, model) == 2000
    plain = conv4(ways=5, in_channels=1, variant="omniglot", batch_norm="none")
    assert not uses_batch_statistics(plain) and resolve_batch_size(2000, None, plain) == 256


def test_a_declared_layers_attribute_comes_before_the_children():
    class Declared(torch.nn.Module):
        layers = ("block.inner", "out")

        def __init__(self):
            super().__init__()
            self.block = torch.nn.Sequential()
            self.block.add_module("inner", torch.nn.Linear(2, 2))
            self.out = torch.nn.Linear(2, 1)

    assert resolve_layers(Declared(), "*") == ["block.inner", "out"]
    Declared.layers = ("block.inner", "missing")  # not all module paths: the children instead
    assert resolve_layers(Declared(), "*") == ["block", "out"]
    with pytest.raises(LayerNotFoundError, match=r"named layers are: block, out; every module path: block, "):
        resolve_layers(Declared(), "nothing*")


def test_module_called_twice_is_recorded_per_call_with_a_warning():
    model = toy_models.reuse(seed=3)
    x = toy_models.randn(5, 6)
    with pytest.warns(RepeatedCallWarning, match="shared"):
        acts = capture_activations(model, x, ["shared", "head"], batch_size=2, progress=False)
    assert list(acts) == ["shared[0]", "shared[1]", "head"]
    with torch.no_grad():
        first = model.shared(model.fc1(x))
        second = model.shared(torch.tanh(first))
    torch.testing.assert_close(acts["shared[0]"], first, rtol=0, atol=1e-6)
    torch.testing.assert_close(acts["shared[1]"], second, rtol=0, atol=1e-6)
    assert acts["shared[0]"].shape == (5, 8)


def test_batches_concatenate_to_the_whole_batch_result():
    model = toy_models.mlp(seed=0)
    x = toy_models.randn(11, 6)
    whole = capture_activations(model, x, ["fc2"], progress=False)
    batched = capture_activations(model, x, ["fc2"], batch_size=4, progress=False)
    torch.testing.assert_close(batched["fc2"], whole["fc2"], rtol=0, atol=1e-6)


def test_default_batch_size_keeps_batch_statistics_models_whole():
    assert resolve_batch_size(5000, None, toy_models.convnet()) == 5000
    assert resolve_batch_size(5000, None, toy_models.mlp()) == DEFAULT_BATCH_SIZE
    assert resolve_batch_size(500, None, toy_models.mlp()) == 500
    eval_bn = toy_models.convnet(running_stats=True)
    assert resolve_batch_size(5000, None, eval_bn) == DEFAULT_BATCH_SIZE
    assert resolve_batch_size(5000, None, eval_bn, train_mode=True) == 5000
    with pytest.warns(BatchStatisticsWarning, match="batch statistics"):
        resolve_batch_size(50, 10, toy_models.convnet())
    with pytest.raises(ValueError, match="batch_size"):
        resolve_batch_size(50, 0, toy_models.mlp())


def _bn_with_running_stats() -> nn.Module:
    model = toy_models.convnet(running_stats=True, seed=2)
    bn = model.conv1[1]
    with torch.no_grad():
        bn.running_mean.fill_(0.7)
        bn.running_var.fill_(3.0)
    return model


def test_train_mode_uses_batch_statistics_and_restores_the_model():
    model = _bn_with_running_stats()
    model.train(False)
    bn = model.conv1[1]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = toy_models.randn(6, 1, 8, 8)
    train = capture_activations(model, x, ["conv1.1"], train_mode=True, progress=False)["conv1.1"]
    evaluation = capture_activations(model, x, ["conv1.1"], progress=False)["conv1.1"]
    with torch.no_grad():
        z = model.conv1[0](x)
    mean = z.mean(dim=(0, 2, 3), keepdim=True)
    var = z.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    w, b = bn.weight.view(1, -1, 1, 1), bn.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(train, (z - mean) / torch.sqrt(var + bn.eps) * w + b)
    torch.testing.assert_close(evaluation, (z - 0.7) / torch.sqrt(torch.tensor(3.0) + bn.eps) * w + b)
    for key, value in model.state_dict().items():  # running stats and counter untouched
        assert torch.equal(value, before[key]), key
    assert not any(m.training for m in model.modules())


def test_batch_stats_flag_matches_train_mode_for_batch_norm():
    model = _bn_with_running_stats()
    x = toy_models.randn(6, 1, 8, 8)
    batch = capture_activations(model, x, ["head"], batch_stats=True, progress=False)["head"]
    train = capture_activations(model, x, ["head"], train_mode=True, progress=False)["head"]
    evaluation = capture_activations(model, x, ["head"], progress=False)["head"]
    assert torch.equal(batch, train)
    assert not torch.allclose(batch, evaluation)


def test_numpy_inputs_are_cast_to_the_model_dtype():
    model = toy_models.mlp(seed=0).double()
    x = toy_models.randn(4, 6).double()
    acts = capture_activations(model, x.float().numpy(), ["fc1"], progress=False)
    assert acts["fc1"].dtype == torch.float64


def test_layer_that_does_not_run_and_non_tensor_output_are_errors():
    model = toy_models.mlp()
    model.unused = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="'unused' was not called"):
        capture_activations(model, toy_models.randn(3, 6), ["unused"], progress=False)
    assert _hook_count(model) == 0

    class DictOut(nn.Module):
        def __init__(self, out):
            super().__init__()
            self.inner = nn.Module()
            self.inner.forward = out

        def forward(self, x):
            self.inner(x)
            return x

    x = toy_models.randn(3, 2)
    # a mapping's first tensor (a transformers model output's last_hidden_state) is the output
    got = capture_activations(DictOut(lambda x: {"name": "y", "y": 2 * x}), x, ["inner"], progress=False)
    assert torch.equal(got["inner"], 2 * x)
    with pytest.raises(ValueError, match="returned a dict"):
        capture_activations(DictOut(lambda x: {"name": "y"}), x, ["inner"], progress=False)
    with pytest.raises(ValueError, match="returned a str"):
        capture_activations(DictOut(lambda x: "y"), x, ["inner"], progress=False)
