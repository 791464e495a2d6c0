"""The procedures pinned against independent formulas, not only by their outcomes.

Mutation checks found three blind spots that "it learns" thresholds cannot see: NIL with the
support and query sets in one forward pass (with batch statistics the features change), the
multitask loss without its support term, and the Omniglot MAML split, checked only against the
real archives. Each is pinned here against a formula written out independently, in float64, and
each test first shows that the planted bug would change the number it checks."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from reference_split import cbfinn_maml_split

from meta.core.models import conv4
from meta.core.nil import nil_accuracy
from meta.core.regimes import Multiclass, Multitask, NILTraining, RandomFeatures
from meta.core.tasks import TaskBatch, as_tasks
from meta.data.episodes import EpisodeSampler
from meta.data.omniglot import OFFICIAL_ALPHABETS, _chosen_characters
from meta.data.synthetic import synthetic_split

WAYS, SHOTS, QUERIES = 5, 2, 6


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return conv4(WAYS, filters=8, padding="same").double()


@pytest.fixture(scope="module")
def tasks() -> list[tuple[torch.Tensor, ...]]:
    """Four synthetic tasks ``(support_x, support_y, query_x, query_y)``, images in float64."""
    t = as_tasks(EpisodeSampler(synthetic_split("test"), WAYS, SHOTS, QUERIES, seed=11).batch(0, 4))
    return [(t.support_x[i].double(), t.support_y[i], t.query_x[i].double(), t.query_y[i]) for i in range(len(t))]


def nil_log_probs_by_hand(support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """log p(y | q) = log sum_{i: y_i = y} softmax_i(cos(f(q), f(s_i))), written out."""
    cos = (query / query.norm(dim=1, keepdim=True)) @ (support / support.norm(dim=1, keepdim=True)).T
    attention = torch.exp(cos) / torch.exp(cos).sum(dim=1, keepdim=True)
    probs = torch.stack([attention[:, support_y == y].sum(dim=1) for y in range(WAYS)], dim=1)
    return probs.log()


class _Episode:
    def __init__(self, sx, sy, qx, qy):
        self.support_x, self.support_y, self.query_x, self.query_y = sx, sy, qx, qy


def test_nil_testing_uses_separate_forward_passes(model, tasks):
    differs = 0
    for sx, sy, qx, qy in tasks:
        with torch.no_grad():
            separate = nil_log_probs_by_hand(model.features(sx), sy, model.features(qx)).argmax(1)
            joint_features = model.features(torch.cat([sx, qx]))
            joint = nil_log_probs_by_hand(joint_features[: len(sx)], sy, joint_features[len(sx) :]).argmax(1)
        differs += int((separate != joint).sum())
        expected = float((separate == qy).double().mean())
        assert nil_accuracy(model, _Episode(sx, sy, qx, qy)) == expected
    assert differs > 0  # one shared pass would change predictions: the check above can see it


def test_nil_training_loss_and_gradient_are_the_formula_on_separate_passes(model, tasks):
    regime = NILTraining(len(tasks))
    model.zero_grad(set_to_none=True)
    metrics = regime.step(model, _stacked(tasks))
    got = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    losses, joint_losses = [], []
    for sx, sy, qx, qy in tasks:
        log_probs = nil_log_probs_by_hand(model.features(sx), sy, model.features(qx))
        losses.append(-log_probs[torch.arange(len(qy)), qy].mean())
        with torch.no_grad():
            f = model.features(torch.cat([sx, qx]))
            joint = nil_log_probs_by_hand(f[: len(sx)], sy, f[len(sx) :])
            joint_losses.append(-joint[torch.arange(len(qy)), qy].mean())
    loss = torch.stack(losses).mean()
    loss.backward()
    assert metrics["loss"] == pytest.approx(loss.item(), rel=1e-12)
    assert abs(float(torch.stack(joint_losses).mean()) - loss.item()) > 1e-6  # a shared pass is visible
    for k, p in model.named_parameters():
        if k in got:
            torch.testing.assert_close(got[k], p.grad, rtol=1e-10, atol=1e-12)
    assert "head.weight" not in got  # the head is unused


def test_multitask_loss_is_the_mean_of_support_and_query_cross_entropies(model, tasks):
    regime = Multitask(len(tasks))
    model.zero_grad(set_to_none=True)
    metrics = regime.step(model, _stacked(tasks))
    got = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    per_task, query_only = [], []
    for sx, sy, qx, qy in tasks:
        support_ce = -F.log_softmax(model(sx), dim=1)[torch.arange(len(sy)), sy].mean()
        query_ce = -F.log_softmax(model(qx), dim=1)[torch.arange(len(qy)), qy].mean()
        per_task.append((support_ce + query_ce) / 2)
        query_only.append(query_ce.detach())
    loss = torch.stack(per_task).mean()
    loss.backward()
    assert metrics["loss"] == pytest.approx(loss.item(), rel=1e-12)
    assert abs(float(torch.stack(query_only).mean()) - loss.item()) > 1e-6  # dropping the support term shows
    for k, p in model.named_parameters():
        torch.testing.assert_close(got[k], p.grad, rtol=1e-10, atol=1e-12)


def test_multiclass_loss_is_the_cross_entropy_over_all_classes():
    torch.manual_seed(1)
    split = synthetic_split("train")
    net = conv4(split.n_classes, filters=4).double()
    regime = Multiclass(16, seed=3)
    x, y = regime.batch(split, 0)
    metrics = regime.step(net, (x.double(), y))
    by_hand = -F.log_softmax(net(x.double()), dim=1)[torch.arange(len(y)), y].mean()
    assert metrics["loss"] == pytest.approx(by_hand.item(), rel=1e-12)


def test_random_features_never_change(model, tasks):
    model.zero_grad(set_to_none=True)
    RandomFeatures(len(tasks)).step(model, _stacked(tasks))
    assert all(p.grad is None for p in model.parameters())


def _stacked(tasks) -> TaskBatch:
    """The tasks as one meta-batch."""
    return TaskBatch(*(torch.stack([t[i] for t in tasks]) for i in range(4)))


def test_omniglot_maml_split_from_the_1623_character_names():
    """cbfinn/maml data_generator.py: list the character folders, random.seed(1),
    random.shuffle, 1100 train (1200 - 100), 100 val, the rest test; here the folders sorted
    first (os.listdir's order is the file system's). No data needed: the official names are
    <alphabet>/characterNN, NN from 01 to the alphabet's count."""
    names = [
        f"{a}/character{i:02d}"
        for part in OFFICIAL_ALPHABETS.values()
        for a, n in part.items()
        for i in range(1, n + 1)
    ]
    assert len(names) == len(set(names)) == 1623
    expected = cbfinn_maml_split(names)
    shuffled = random.Random(2).sample(names, len(names))  # the input order must not matter
    for split, chosen in expected.items():
        assert _chosen_characters("maml", split, shuffled) == chosen
    assert (len(expected["train"]), len(expected["val"]), len(expected["test"])) == (1100, 100, 423)
