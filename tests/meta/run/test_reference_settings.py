"""The paper defaults pinned against the reference code, cbfinn/maml at commit a7f45f1 (the
file and line of each setting are cited in meta/run/paper_defaults.py and meta/core/models.py):
iterations, query counts, meta-gradient clipping and TensorFlow's SAME padding, each recorded in
config.json and each a named option."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from meta.core.models import conv4, same_padding
from meta.run.config import RunConfig, resolve
from meta.run.paper_defaults import PAPER_DEFAULTS
from meta.run.state import load_tensors
from meta.run.train import clip_meta_gradient, train

OMNIGLOT = [p for (dataset, _, _), p in PAPER_DEFAULTS.items() if dataset == "omniglot"]
MINIIMAGENET = [p for (dataset, _, _), p in PAPER_DEFAULTS.items() if dataset == "miniimagenet"]


def test_every_setting_trains_for_60000_iterations():  # main.py lines 11-20
    assert {p.iterations for p in PAPER_DEFAULTS.values()} == {60000}


def test_omniglot_draws_k_queries_per_class_at_training_and_test():  # main.py line 251: 2K per class
    assert all(p.queries == p.shots and p.test_queries == p.shots for p in OMNIGLOT)


def test_miniimagenet_draws_15_queries_at_training_and_k_at_test():  # main.py lines 247 and 249
    assert all(p.queries == 15 and p.test_queries == p.shots for p in MINIIMAGENET)


def test_only_miniimagenet_clips_the_meta_gradient_to_10():  # maml.py lines 147-148
    assert {p.grad_clip for p in MINIIMAGENET} == {10.0} and {p.grad_clip for p in OMNIGLOT} == {0.0}


def test_clipping_is_tf_clip_by_value_on_every_entry():
    model = torch.nn.Linear(3, 2)
    model.weight.grad = torch.tensor([[-30.0, 5.0, 10.5], [0.0, -10.0, 12.0]])
    model.bias.grad = None
    clip_meta_gradient(model, 10.0)
    assert model.weight.grad.tolist() == [[-10.0, 5.0, 10.0], [0.0, -10.0, 10.0]]
    clip_meta_gradient(model, 0.0)  # 0: no clipping
    assert model.weight.grad.abs().max() == 10.0


def test_same_padding_is_tensorflows_formula():
    # total = max((ceil(H / s) - 1) s + k - H, 0), the extra row after (tf.nn.conv2d 'SAME')
    assert [same_padding(h, 2) for h in (28, 14, 7, 4)] == [(0, 1), (0, 1), (1, 1), (0, 1)]
    assert same_padding(84, 1) == same_padding(21, 1) == (1, 1)


def test_same_padding_pads_only_bottom_and_right_of_even_maps():
    """conv1 of the Omniglot conv4 with 'same' padding is a convolution of the image padded by one
    zero row and column at the bottom and right: it samples rows 1, 3, ..., 27 of the image."""
    torch.manual_seed(0)
    same, symmetric = conv4(5, padding="same").double(), conv4(5, padding="symmetric").double()
    symmetric.load_state_dict(same.state_dict())
    x = torch.randn(6, 1, 28, 28, dtype=torch.float64)
    weight = same.conv1.conv.weight
    by_hand = F.conv2d(F.pad(x, (0, 1, 0, 1)), weight, stride=2)
    by_hand = F.relu(F.batch_norm(by_hand, None, None, training=True, eps=1e-3) + same.conv1.norm.bias.view(-1, 1, 1))
    torch.testing.assert_close(same(x, stop="conv1"), by_hand)
    assert not torch.allclose(symmetric(x, stop="conv1"), by_hand)
    assert same(x).shape == symmetric(x).shape == (6, 5)


def test_the_paper_defaults_resolve_into_the_config_and_are_options():
    resolved, _ = resolve(RunConfig(dataset="omniglot", ways=20, shots=1))
    assert (resolved.iterations, resolved.queries, resolved.test_queries) == (60000, 1, 1)
    assert (resolved.grad_clip, resolved.padding) == (0.0, "same")
    mini, _ = resolve(RunConfig(dataset="miniimagenet", ways=5, shots=5))
    assert (mini.queries, mini.test_queries, mini.grad_clip) == (15, 5, 10.0)
    chosen, _ = resolve(RunConfig(queries=15, test_queries=15, grad_clip=1.0, padding="symmetric"))
    assert (chosen.queries, chosen.test_queries, chosen.grad_clip, chosen.padding) == (15, 15, 1.0, "symmetric")
    with pytest.raises(ValueError, match="padding"):
        resolve(RunConfig(padding="valid"))


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    config = RunConfig(
        dataset="synthetic",
        ways=3,
        iterations=2,
        meta_batch_size=2,
        val_every=2,
        val_tasks=2,
        filters=4,
        progress=False,
    )
    train(config, out)
    return json.loads((out / "config.json").read_text())


def test_config_json_records_every_reference_setting(recorded):
    c = recorded["config"]
    assert (c["queries"], c["test_queries"], c["grad_clip"], c["padding"]) == (1, 1, 0.0, "same")
    assert recorded["model"]["kwargs"]["padding"] == "same"


def test_the_trainer_clips_the_meta_gradient(tmp_path):
    """Clipping at a bound no entry reaches changes nothing; at a tiny bound it changes the
    second Adam step (the first is sign(g) either way)."""

    def final(grad_clip: float, name: str) -> dict[str, torch.Tensor]:
        config = RunConfig(
            dataset="synthetic", ways=3, iterations=3, meta_batch_size=2, val_every=3, val_tasks=2, filters=4,
            grad_clip=grad_clip, progress=False,
        )  # fmt: skip
        return load_tensors(Path(train(config, tmp_path / name).final))[0]

    unclipped, loose, tight = final(0.0, "none"), final(1e9, "loose"), final(1e-9, "tight")
    assert all(torch.equal(unclipped[k], loose[k]) for k in unclipped)
    assert any(not torch.equal(unclipped[k], tight[k]) for k in unclipped)
