"""conv4: architecture of the MAML reference code, staged forward, task-batched forward, factory."""

from __future__ import annotations

import json

import pytest
import torch

from meta.core.models import BN_EPS, BODY, LAYERS, conv4, conv_batch_norm_folded, from_task_groups, to_task_groups


@pytest.fixture
def omniglot_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return conv4(5)


def test_omniglot_shapes_follow_the_maml_code(omniglot_model):
    """64 filters, stride 2: 28 -> 14 -> 7 -> 4 -> 2, then the spatial mean: 64 features."""
    shapes = {}
    hooks = [
        getattr(omniglot_model, name).register_forward_hook(lambda m, i, o, n=name: shapes.__setitem__(n, o.shape))
        for name in LAYERS
    ]
    logits = omniglot_model(torch.rand(6, 1, 28, 28))
    for hook in hooks:
        hook.remove()
    assert shapes == {
        "conv1": (6, 64, 14, 14),
        "conv2": (6, 64, 7, 7),
        "conv3": (6, 64, 4, 4),
        "conv4": (6, 64, 2, 2),
        "head": (6, 5),
    }
    assert logits.shape == (6, 5) and omniglot_model.feature_dim == 64
    assert omniglot_model.layers == LAYERS == ("conv1", "conv2", "conv3", "conv4", "head")


def test_miniimagenet_shapes_follow_the_maml_code():
    """32 filters, 2x2 max-pool: 84 -> 42 -> 21 -> 10 -> 5, flattened: 32*5*5 = 800 features."""
    model = conv4(5, in_channels=3, variant="miniimagenet")
    maps = {}
    model.conv4.register_forward_hook(lambda m, i, o: maps.__setitem__("conv4", o.shape))
    features = model.features(torch.rand(2, 3, 84, 84))
    assert maps["conv4"] == (2, 32, 5, 5)
    assert features.shape == (2, 800) and model.head.in_features == 800
    assert conv4(5, in_channels=3, variant="miniimagenet", image_size=32).feature_dim == 32 * 2 * 2


def test_readout_is_the_spatial_mean_for_omniglot_and_flatten_for_miniimagenet(omniglot_model):
    x = torch.rand(4, 1, 28, 28)
    conv4_map = omniglot_model(x, stop="conv3")
    conv4_map = omniglot_model.conv4(conv4_map)
    torch.testing.assert_close(omniglot_model.features(x), conv4_map.mean(dim=(2, 3)))
    mini = conv4(5, in_channels=3, variant="miniimagenet", image_size=32)
    y = torch.rand(3, 3, 32, 32)
    torch.testing.assert_close(mini.features(y), mini.conv4(mini(y, stop="conv3")).flatten(1))


def test_no_submodule_is_registered_twice(omniglot_model):
    """functional_call would leave a weight swapped if one module had two names."""
    every = list(omniglot_model.named_modules(remove_duplicate=False))
    assert len({id(module) for _, module in every}) == len(every)
    params = list(omniglot_model.named_parameters(remove_duplicate=False))
    assert len({id(p) for _, p in params}) == len(params)


def test_parameters_belong_to_named_layers_and_conv_bias_only_without_batch_norm(omniglot_model):
    names = [name for name, _ in omniglot_model.named_parameters()]
    assert all(name.split(".")[0] in LAYERS for name in names)
    assert "conv1.conv.bias" not in names and "conv1.norm.bias" in names
    assert "conv1.norm.weight" not in names  # the reference's batch norm has a shift, no scale
    plain = [name for name, _ in conv4(5, batch_norm="none").named_parameters()]
    assert "conv1.conv.bias" in plain and not any(".norm." in name for name in plain)


def test_batch_statistics_at_train_and_test_time(omniglot_model):
    """ "batch" semantics: eval() changes nothing; an example's output depends on its batch."""
    x = torch.rand(8, 1, 28, 28)
    train_out = omniglot_model.train()(x)
    eval_out = omniglot_model.eval()(x)
    torch.testing.assert_close(train_out, eval_out)
    assert not torch.allclose(omniglot_model(x[:4])[0], train_out[0])
    assert not any(name.endswith("running_mean") for name, _ in omniglot_model.named_buffers())


def test_staged_forward_composes(omniglot_model):
    x = torch.rand(5, 1, 28, 28)
    full = omniglot_model(x)
    torch.testing.assert_close(omniglot_model(omniglot_model(x, stop="conv2"), start="conv3"), full)
    torch.testing.assert_close(omniglot_model(omniglot_model.features(x), start="head"), full)
    torch.testing.assert_close(omniglot_model.head(omniglot_model.features(x)), full)
    with pytest.raises(ValueError, match="comes after"):
        omniglot_model(x, start="conv3", stop="conv2")
    with pytest.raises(ValueError, match="unknown layer"):
        omniglot_model(x, stop="conv9")


@pytest.mark.parametrize(
    "start,stop", [(None, None), (None, "conv2"), ("conv3", None), ("head", None), (None, "conv4"), ("conv2", "conv3")]
)
def test_task_batched_forward_equals_one_forward_per_task(start, stop):
    """Grouped convolutions with per-task weights and batch norm == T separate forwards."""
    torch.manual_seed(1)
    model = conv4(3, in_channels=2, filters=4, image_size=12).double()
    tasks, n = 3, 5
    own = dict(model.named_parameters())
    per_task = {  # conv2 stays shared: mixed per-task and shared parameters
        k: v + 0.1 * torch.randn(tasks, *v.shape, dtype=v.dtype) for k, v in own.items() if not k.startswith("conv2")
    }
    images = torch.rand(tasks, n, 2, 12, 12, dtype=torch.float64)

    def single(t: int, x: torch.Tensor) -> torch.Tensor:
        params = {**own, **{k: v[t] for k, v in per_task.items()}}
        return torch.func.functional_call(model, params, (x,), {"start": start, "stop": stop})

    inputs = [model(images[t], stop=LAYERS[LAYERS.index(start) - 1]) if start else images[t] for t in range(tasks)]
    expected = torch.stack([single(t, inputs[t]) for t in range(tasks)])
    got = model.forward_tasks(per_task, torch.stack(inputs), start=start, stop=stop)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_task_groups_round_trip():
    x = torch.rand(3, 4, 2, 5, 5)
    grouped = to_task_groups(x)
    assert grouped.shape == (4, 6, 5, 5)
    torch.testing.assert_close(grouped[1, 2:4], x[1, 1])
    torch.testing.assert_close(from_task_groups(grouped, 3), x)


def test_factory_from_a_json_spec():
    spec = json.loads(
        '{"factory": "meta.core.models:conv4", "kwargs": {"ways": 20, "in_channels": 1, "variant": "omniglot"}}'
    )
    module, name = spec["factory"].split(":")
    model = getattr(__import__(module, fromlist=[name]), name)(**spec["kwargs"])
    assert model.head.out_features == 20
    assert set(model.state_dict()) == {name for name, _ in model.named_parameters()}
    assert LAYERS[:4] == BODY


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"ways": 0}, "ways"),
        ({"ways": 5, "variant": "cifar"}, "variant"),
        ({"ways": 5, "batch_norm": "running"}, "batch_norm"),
        ({"ways": 5, "filters": 2.5}, "filters"),
        ({"ways": 5, "variant": "miniimagenet", "image_size": 8}, "too small"),
    ],
)
def test_factory_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        conv4(**kwargs)


def test_initialisation_follows_the_reference():
    """Glorot-uniform convolutions (bound sqrt(6 / (fan_in + fan_out))), zero biases, standard
    normal Omniglot head, Glorot miniImageNet head."""
    torch.manual_seed(0)
    model = conv4(20).requires_grad_(False)
    w = model.conv2.conv.weight
    bound = (6 / (64 * 9 + 64 * 9)) ** 0.5
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound
    assert 0.9 < float(model.head.weight.std()) < 1.1 and float(model.head.bias.abs().max()) == 0
    mini = conv4(5, in_channels=3, variant="miniimagenet")
    assert mini.head.weight.abs().max() <= (6 / (800 + 5)) ** 0.5


@pytest.mark.parametrize("stride,groups,channels", [(2, 1, 1), (1, 1, 3), (2, 3, 2)])
def test_batch_norm_folded_into_the_convolution_is_exact(stride, groups, channels):
    """conv + batch norm (batch statistics, shift only) == one conv with folded weights and bias,
    per group."""
    g = torch.Generator().manual_seed(stride + groups)
    x = torch.rand(7, groups * channels, 9, 9, generator=g, dtype=torch.float64)
    weight = torch.randn(groups * 5, channels, 3, 3, generator=g, dtype=torch.float64)
    beta = torch.randn(groups * 5, generator=g, dtype=torch.float64)
    conv = torch.nn.functional.conv2d(x, weight, stride=stride, padding=1, groups=groups)
    expected = torch.cat(
        [
            torch.nn.functional.batch_norm(part, None, None, None, beta.view(groups, 5)[i], training=True, eps=BN_EPS)
            for i, part in enumerate(conv.split(5, dim=1))
        ],
        dim=1,
    )
    got = conv_batch_norm_folded(x, weight, beta, stride=stride, groups=groups)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_the_omniglot_first_block_takes_the_folded_route_for_large_batches(monkeypatch):
    calls = []
    original = conv_batch_norm_folded
    monkeypatch.setattr(
        "meta.core.models.conv_batch_norm_folded", lambda *a, **k: calls.append(a[0].shape[0]) or original(*a, **k)
    )
    model = conv4(5)
    model(torch.rand(20, 1, 28, 28))
    model(torch.rand(5, 1, 28, 28))
    assert calls == [20]
