"""Regimes, NIL, presets, and short training runs that really learn on easy synthetic tasks."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from meta.core.inner import InnerLoop
from meta.core.models import conv4
from meta.core.names import REGIMES
from meta.core.nil import nil_accuracy, nil_log_probs, nil_loss
from meta.core.procedures import evaluate_task
from meta.core.regimes import MetaLearning, Multiclass, make_regime
from meta.data import EpisodeSampler, FewShotSplit
from meta.run.cpu import configure_cpu
from meta.run.paper_defaults import PAPER_DEFAULTS, paper_defaults

# --------------------------------------------------------------------------------------------
# NIL
# --------------------------------------------------------------------------------------------


def test_nil_probabilities_are_the_matching_networks_formula():
    """p(y|q) = sum_i softmax_i(cos(f(q), f(s_i))) onehot(y_i), written out with loops."""
    g = torch.Generator().manual_seed(0)
    support, query = (
        torch.randn(6, 4, generator=g, dtype=torch.float64),
        torch.randn(3, 4, generator=g, dtype=torch.float64),
    )
    labels = torch.tensor([0, 1, 2, 0, 1, 1])
    got = nil_log_probs(support, labels, query, ways=4).exp()
    for q in range(3):
        cos = torch.tensor(
            [float(F.cosine_similarity(query[q], support[i], dim=0)) for i in range(6)], dtype=torch.float64
        )
        weights = torch.softmax(cos, dim=0)
        expected = [float(weights[labels == c].sum()) for c in range(4)]
        torch.testing.assert_close(got[q], torch.tensor(expected, dtype=torch.float64))
    assert float(got[:, 3].max()) == 0.0  # a class with no support example


def test_nil_loss_is_the_mean_negative_log_probability():
    g = torch.Generator().manual_seed(1)
    support, query = torch.randn(2, 4, 5, generator=g), torch.randn(2, 3, 5, generator=g)
    sy, qy = torch.tensor([[0, 1, 0, 1], [1, 0, 1, 0]]), torch.tensor([[0, 1, 1], [1, 1, 0]])
    probs = nil_log_probs(support, sy, query, 2).exp()
    expected = -torch.log(probs.gather(-1, qy.unsqueeze(-1))).mean()
    torch.testing.assert_close(nil_loss(support, sy, query, qy, 2), expected)


class _Identity(torch.nn.Module):
    """Features = the flattened input, so the NIL answer can be worked out by hand."""

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def test_nil_accuracy_on_a_constructed_task():
    """Support: the two axes. Queries: three near their class's axis, one nearer the other
    class's axis -> accuracy 3/4; scaling a feature vector changes nothing (cosine)."""
    support_x = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(2, 1, 1, 2)
    query_x = torch.tensor([[5.0, 1.0], [0.2, 3.0], [0.1, 0.05], [1.0, 2.0]]).view(4, 1, 1, 2)
    episode = type("E", (), {})()
    episode.support_x, episode.support_y = support_x, torch.tensor([0, 1])
    episode.query_x, episode.query_y = query_x, torch.tensor([0, 1, 0, 0])
    assert nil_accuracy(_Identity(), episode) == pytest.approx(0.75)


def test_nil_rejects_mismatched_features():
    with pytest.raises(ValueError, match="dimensions"):
        nil_log_probs(torch.zeros(3, 4), torch.zeros(3, dtype=torch.long), torch.zeros(2, 5), 2)


# --------------------------------------------------------------------------------------------
# Presets, regimes
# --------------------------------------------------------------------------------------------


def test_presets_are_the_maml_papers():
    assert (
        paper_defaults("omniglot", 5, 1).train_inner == InnerLoop(1, 0.4)
        and paper_defaults("omniglot", 5, 1).meta_batch_size == 32
    )
    assert paper_defaults("omniglot", 5, 1).test_inner == InnerLoop(3, 0.4)
    assert (
        paper_defaults("omniglot", 20, 1).train_inner == InnerLoop(5, 0.1)
        and paper_defaults("omniglot", 20, 1).meta_batch_size == 16
    )
    mini1, mini5 = paper_defaults("miniimagenet", 5, 1), paper_defaults("miniimagenet", 5, 5)
    assert mini1.train_inner == InnerLoop(5, 0.01) and mini1.test_inner == InnerLoop(10, 0.01)
    assert (mini1.meta_batch_size, mini5.meta_batch_size) == (4, 2)
    assert all(p.meta_lr == 1e-3 for p in PAPER_DEFAULTS.values())
    assert conv4(**mini1.model_kwargs()).feature_dim == 800
    with pytest.raises(ValueError, match="no paper defaults"):
        paper_defaults("omniglot", 7, 1)


def test_regimes_by_name_and_their_configs_are_json():
    for name in REGIMES:
        regime = make_regime(name, inner=InnerLoop(2, 0.1))
        assert regime.name == name
        json.dumps(regime.config())
    assert make_regime("anil", inner=InnerLoop(2, 0.1)).inner.adapt == frozenset({"head"})
    assert make_regime("fomaml", inner=InnerLoop(2, 0.1)).inner.first_order
    with pytest.raises(ValueError, match="inner loop"):
        make_regime("maml")
    with pytest.raises(ValueError, match="unknown regime"):
        make_regime("reptile", inner=InnerLoop(1, 0.1))


# --------------------------------------------------------------------------------------------
# Synthetic few-shot data: class = a fixed random blocky prototype + noise
# --------------------------------------------------------------------------------------------


def synthetic_split(name: str, n_classes: int, seed: int, signal: float, per_class: int = 20) -> FewShotSplit:
    """``signal * prototype + (1 - signal) * uniform noise``, prototypes random 7x7 binary
    patterns upsampled to 28x28."""
    rng = np.random.default_rng(seed)
    prototypes = rng.random((n_classes, 1, 1, 7, 7)) > 0.5
    prototypes = prototypes.repeat(4, axis=-1).repeat(4, axis=-2)  # 28 x 28
    noise = rng.random((n_classes, per_class, 1, 28, 28))
    images = (255 * (signal * prototypes + (1 - signal) * noise)).astype(np.uint8)
    names = tuple(f"{name}/{i}" for i in range(n_classes))
    return FewShotSplit(name, images, names, names)


@pytest.fixture(scope="module")
def splits() -> tuple[FewShotSplit, FewShotSplit]:
    """Hard enough that an untrained conv4 is near chance with NIL (about 0.23)."""
    return synthetic_split("synthetic/train", 40, seed=0, signal=0.3), synthetic_split(
        "synthetic/test", 20, seed=1, signal=0.3
    )


@pytest.fixture(scope="module")
def easy_splits() -> tuple[FewShotSplit, FewShotSplit]:
    return synthetic_split("easy/train", 40, seed=0, signal=0.6), synthetic_split("easy/test", 20, seed=1, signal=0.6)


def train(regime, model, sampler, iterations: int, lr: float = 3e-3) -> list[dict]:
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history = []
    for i in range(iterations):
        optimizer.zero_grad(set_to_none=True)
        history.append(regime.step(model, regime.batch(sampler, i)))
        optimizer.step()
    return history


def held_out_nil(model, test_split, tasks: int = 20) -> float:
    sampler = EpisodeSampler(test_split, ways=5, shots=1, queries=5, seed=123)
    return float(np.mean([nil_accuracy(model, sampler.episode(i)) for i in range(tasks)]))


def held_out_adapted(model, test_split, inner: InnerLoop, tasks: int = 20) -> float:
    sampler = EpisodeSampler(test_split, ways=5, shots=1, queries=5, seed=123)
    return float(np.mean([evaluate_task(model, sampler.episode(i), inner).accuracy for i in range(tasks)]))


def small_conv4(ways: int, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return conv4(ways, filters=16)


def test_batches_are_pure_functions_of_the_iteration(splits):
    train_split, _ = splits
    sampler = EpisodeSampler(train_split, ways=5, shots=1, queries=5, seed=3)
    regime = make_regime("maml", inner=InnerLoop(1, 0.4), meta_batch_size=4)
    a, b = regime.batch(sampler, 7), regime.batch(sampler, 7)
    assert torch.equal(a.support_x, b.support_x) and a.support_x.shape == (4, 5, 1, 28, 28)
    assert not torch.equal(regime.batch(sampler, 8).support_x, a.support_x)
    multiclass = Multiclass(batch_size=16, seed=2)
    (x1, y1), (x2, y2) = multiclass.batch(sampler, 5), multiclass.batch(sampler, 5)
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and x1.shape == (16, 1, 28, 28)
    assert int(y1.max()) < train_split.n_classes and float(x1.max()) <= 1.0
    index = np.flatnonzero(
        (train_split.images[y1.numpy()] == (x1.numpy() * 255).round().astype(np.uint8)[:, None]).all(axis=(2, 3, 4))
    )
    assert len(index) >= 16  # every image is one of its labelled class's images


def test_random_features_leave_the_model_unchanged_and_are_above_chance(easy_splits):
    train_split, test_split = easy_splits
    model = small_conv4(5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train(make_regime("random"), model, EpisodeSampler(train_split, 5, 1, 5, seed=0), iterations=3)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert held_out_nil(model, test_split) > 0.4  # chance: 0.2


def test_multiclass_head_must_cover_the_classes(splits):
    train_split, _ = splits
    regime = Multiclass(batch_size=8)
    with pytest.raises(ValueError, match="all classes"):
        regime.step(small_conv4(5), regime.batch(EpisodeSampler(train_split, 5, 1, 5), 0))


# Inner learning rates are for the reference loss (summed over the support set, divided by the
# shots: 5 x the mean for 5-way).
TEST_INNER = {
    "maml": InnerLoop(3, 0.08),
    "fomaml": InnerLoop(3, 0.08),
    "anil": InnerLoop(5, 0.2, adapt=frozenset({"head"})),
}
LEARNERS = {
    "maml": lambda: MetaLearning(InnerLoop(1, 0.08), 4, name="maml"),
    "fomaml": lambda: make_regime("fomaml", inner=InnerLoop(1, 0.08), meta_batch_size=4),
    "anil": lambda: make_regime("anil", inner=InnerLoop(5, 0.2), meta_batch_size=4),
    "multiclass": lambda: Multiclass(batch_size=64),
    "multitask": lambda: make_regime("multitask", meta_batch_size=4),
    "nil": lambda: make_regime("nil", meta_batch_size=4),
}
# Held-out 5-way 1-shot accuracy after 60 iterations (chance 0.2, untrained about 0.23): NIL for
# every regime, the head-based test too for the MAML family. Multitask training learns the
# least, as in the paper's Table 5 (a shared head over tasks whose labels are arbitrary).
MIN_NIL = {"maml": 0.6, "fomaml": 0.6, "anil": 0.6, "multiclass": 0.6, "multitask": 0.3, "nil": 0.6}
MIN_ADAPTED = {"maml": 0.8, "fomaml": 0.8, "anil": 0.45}


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_short_training_learns(name, splits):
    """5-way 1-shot on held-out classes of hard synthetic tasks, a few seconds per regime."""
    configure_cpu()
    train_split, test_split = splits
    model = small_conv4(train_split.n_classes if name == "multiclass" else 5, seed=1)
    untrained = held_out_nil(model, test_split)
    history = train(LEARNERS[name](), model, EpisodeSampler(train_split, 5, 1, 5, seed=1), iterations=60)
    assert all(math.isfinite(h["loss"]) for h in history)
    assert np.mean([h["loss"] for h in history[-5:]]) < np.mean([h["loss"] for h in history[:5]])
    trained = held_out_nil(model, test_split)
    assert trained > MIN_NIL[name] and trained > untrained + 0.05
    if name in TEST_INNER:
        assert held_out_adapted(model, test_split, TEST_INNER[name]) > MIN_ADAPTED[name]
