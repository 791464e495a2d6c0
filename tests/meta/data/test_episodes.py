"""The episode sampler: class balance, disjoint support/query, exact pixel values, reproducibility
from (seed, task index), resuming, fixed evaluation tasks, uniformity and every bad input."""

from __future__ import annotations

import hashlib
import itertools
import warnings

import numpy as np
import pytest
import torch

from meta.data import (
    MINIIMAGENET_MEAN,
    MINIIMAGENET_STD,
    EpisodeBatch,
    EpisodeSampler,
    FewShotSplit,
    fixed_task_seed,
    fixed_tasks,
)
from meta.data.episodes import task_rng


def tagged_split(n_classes: int = 30, n_per_class: int = 12, channels: int = 1, name: str = "toy/test") -> FewShotSplit:
    """Images whose first pixels say which they are: ``[0, 0, 0] = class % 256``,
    ``[0, 0, 1] = class // 256``, ``[0, 0, 2] = example``; other pixels random."""
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (n_classes, n_per_class, channels, 6, 6), dtype=np.uint8)
    images[:, :, 0, 0, 0] = (np.arange(n_classes) % 256)[:, None]
    images[:, :, 0, 0, 1] = (np.arange(n_classes) // 256)[:, None]
    images[:, :, 0, 0, 2] = np.arange(n_per_class)[None, :]
    names = tuple(f"c{i}" for i in range(n_classes))
    return FewShotSplit(name, images, names, ("g",) * n_classes)


def identity(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(class, example) of each image ``(..., C, H, W)`` of a [0, 1] tensor made from ``tagged_split``."""
    raw = torch.round(x[..., 0, 0, :3] * 255).to(torch.int64).numpy()
    return raw[..., 0] + 256 * raw[..., 1], raw[..., 2]


def assert_same_batch(a: EpisodeBatch, b: EpisodeBatch) -> None:
    for name in ("support_x", "support_y", "query_x", "query_y", "classes", "indices"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


@pytest.fixture
def split() -> FewShotSplit:
    return tagged_split()


def test_shapes_dtypes_and_labels(split: FewShotSplit) -> None:
    batch = EpisodeSampler(split, ways=5, shots=2, queries=3, seed=4).sample(7)
    assert batch.support_x.shape == (7, 10, 1, 6, 6) and batch.support_x.dtype == torch.float32
    assert batch.query_x.shape == (7, 15, 1, 6, 6) and batch.query_x.dtype == torch.float32
    assert batch.support_y.dtype == batch.query_y.dtype == batch.classes.dtype == torch.int64
    assert batch.support_y.shape == (7, 10) and batch.query_y.shape == (7, 15) and batch.classes.shape == (7, 5)
    assert torch.equal(batch.support_y[3], torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 4]))
    assert torch.equal(batch.query_y[0], torch.arange(5).repeat_interleave(3))
    assert torch.equal(batch.indices, torch.arange(7))
    assert len(batch) == 7


def test_class_balance_and_disjoint_support_query(split: FewShotSplit) -> None:
    ways, shots, queries = 6, 3, 4
    batch = EpisodeSampler(split, ways, shots, queries, seed=11).sample(50)
    for episode in batch:
        assert len(set(episode.classes.tolist())) == ways
        s_class, s_example = identity(episode.support_x)
        q_class, q_example = identity(episode.query_x)
        for label in range(ways):
            cls = int(episode.classes[label])
            s_rows, q_rows = episode.support_y == label, episode.query_y == label
            assert int(s_rows.sum()) == shots and int(q_rows.sum()) == queries
            assert (s_class[s_rows.numpy()] == cls).all() and (q_class[q_rows.numpy()] == cls).all()
            support, query = set(s_example[s_rows.numpy()]), set(q_example[q_rows.numpy()])
            assert len(support) == shots and len(query) == queries and not support & query


def test_pixels_are_uint8_over_255_exactly(split: FewShotSplit) -> None:
    sampler = EpisodeSampler(split, 4, 2, 2, seed=0)
    episode = sampler.episode(9)
    c, e = identity(episode.support_x)
    expected = torch.from_numpy(split.images[c, e].astype(np.float32) / np.float32(255))
    assert torch.equal(episode.support_x, expected)
    assert float(episode.query_x.min()) >= 0.0 and float(episode.query_x.max()) <= 1.0


def test_normalisation_per_channel() -> None:
    rgb = tagged_split(channels=3)
    plain = EpisodeSampler(rgb, 3, 1, 1, seed=2).episode(0)
    normed = EpisodeSampler(rgb, 3, 1, 1, seed=2, normalize=(MINIIMAGENET_MEAN, MINIIMAGENET_STD)).episode(0)
    mean = torch.tensor(MINIIMAGENET_MEAN, dtype=torch.float64).reshape(3, 1, 1)
    std = torch.tensor(MINIIMAGENET_STD, dtype=torch.float64).reshape(3, 1, 1)
    reference = (plain.support_x.double() - mean) / std
    torch.testing.assert_close(normed.support_x.double(), reference, rtol=0, atol=1e-6)
    assert torch.equal(plain.classes, normed.classes)


def test_same_seed_same_tensors_different_seed_different(split: FewShotSplit) -> None:
    a = EpisodeSampler(split, 5, 2, 3, seed=123).sample(6)
    b = EpisodeSampler(split, 5, 2, 3, seed=123).sample(6)
    assert_same_batch(a, b)
    c = EpisodeSampler(split, 5, 2, 3, seed=124).sample(6)
    assert not torch.equal(a.classes, c.classes)


def test_different_task_indices_give_different_tasks(split: FewShotSplit) -> None:
    indices = EpisodeSampler(split, 5, 2, 3, seed=0).indices(0, 200)
    keys = {(tuple(c), tuple(e.ravel())) for c, e in zip(indices.classes, indices.examples)}
    assert len(keys) == 200


def test_task_does_not_depend_on_tasks_before_it(split: FewShotSplit) -> None:
    streamed = EpisodeSampler(split, 5, 2, 3, seed=7)
    streamed.sample(3)
    streamed.sample(5)  # tasks 3..7
    later = streamed.sample(4)  # tasks 8..11
    alone = EpisodeSampler(split, 5, 2, 3, seed=7)
    assert_same_batch(later, alone.batch(8, 4))
    one = alone.episode(10)
    assert torch.equal(one.support_x, later[2].support_x) and torch.equal(one.query_x, later[2].query_x)
    assert one.index == later[2].index == 10
    assert_same_batch(EpisodeSampler(split, 5, 2, 3, seed=7, start=8).sample(4), later)


def test_meta_batch_size_does_not_change_the_stream(split: FewShotSplit) -> None:
    big = EpisodeSampler(split, 4, 1, 2, seed=5).sample(12)
    small = EpisodeSampler(split, 4, 1, 2, seed=5)
    parts = [small.sample(n) for n in (5, 1, 6)]
    for name in ("support_x", "query_x", "classes", "indices"):
        assert torch.equal(getattr(big, name), torch.cat([getattr(p, name) for p in parts]))


def test_resume_from_state_dict(split: FewShotSplit) -> None:
    first = EpisodeSampler(split, 5, 1, 1, seed=9)
    first.sample(10)
    state = first.state_dict()
    assert state == {"next_index": 10, "seed": 9}
    expected = first.sample(3)
    resumed = EpisodeSampler(split, 5, 1, 1, seed=9)
    resumed.load_state_dict(state)
    assert_same_batch(resumed.sample(3), expected)
    with pytest.raises(ValueError, match="state is for seed 9, this sampler has seed 1"):
        EpisodeSampler(split, 5, 1, 1, seed=1).load_state_dict(state)


def test_documented_generator_derivation(split: FewShotSplit) -> None:
    """Task i's generator is the i-th spawned child of SeedSequence(seed); classes are the
    ``ways`` smallest of ``rng.random(n_classes)`` in increasing order."""
    seed, index = 31, 17
    child = np.random.SeedSequence(seed).spawn(index + 1)[index]
    a, b = task_rng(seed, index), np.random.Generator(np.random.PCG64(child))
    np.testing.assert_array_equal(a.random(5), b.random(5))
    u = np.random.Generator(np.random.PCG64(child)).random(split.n_classes)
    expected = np.argsort(u)[:5]
    got = EpisodeSampler(split, 5, 1, 1, seed=seed).indices(index, 1).classes[0]
    np.testing.assert_array_equal(got, expected)


def test_label_assignment_is_uniform() -> None:
    """With 3 classes and 3 ways each of the 6 label orders is equally likely (chi-square)."""
    split = tagged_split(n_classes=3, n_per_class=4)
    classes = EpisodeSampler(split, 3, 1, 1, seed=0).indices(0, 6000).classes
    counts = np.array([np.all(classes == np.array(p), axis=1).sum() for p in itertools.permutations(range(3))])
    chi2 = ((counts - 1000.0) ** 2 / 1000.0).sum()
    assert counts.sum() == 6000 and chi2 < 20.5  # 5 d.o.f.: P(chi2 > 20.5) = 0.001


def test_class_and_example_frequencies_are_uniform(split: FewShotSplit) -> None:
    indices = EpisodeSampler(split, 5, 2, 2, seed=3).indices(0, 3000)
    class_counts = np.bincount(indices.classes.ravel(), minlength=split.n_classes)
    expected = 3000 * 5 / split.n_classes
    assert ((class_counts - expected) ** 2 / expected).sum() < 58.3  # 29 d.o.f., P = 0.001
    support = np.bincount(indices.examples[:, :, :2].ravel(), minlength=split.n_per_class)
    expected = 3000 * 5 * 2 / split.n_per_class
    assert ((support - expected) ** 2 / expected).sum() < 31.3  # 11 d.o.f., P = 0.001


def test_whole_split_in_one_task() -> None:
    split = tagged_split(n_classes=4, n_per_class=5)
    episode = EpisodeSampler(split, 4, 2, 3, seed=0).episode(0)
    assert sorted(episode.classes.tolist()) == [0, 1, 2, 3]
    c, e = identity(torch.cat([episode.support_x, episode.query_x]))
    assert sorted(zip(c.tolist(), e.tolist())) == [(i, j) for i in range(4) for j in range(5)]


def test_read_only_images_need_no_copy_and_raise_no_warning() -> None:
    split = tagged_split()
    split.images.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batch = EpisodeSampler(split, 5, 1, 1, seed=0).sample(2)
    batch.support_x.add_(1.0)  # outputs are fresh, writable tensors
    assert split.images.flags.writeable is False


def test_episode_batch_iteration_and_device_move(split: FewShotSplit) -> None:
    batch = EpisodeSampler(split, 3, 1, 2, seed=0).sample(4)
    episodes = list(batch)
    assert [e.index for e in episodes] == [0, 1, 2, 3]
    assert all(torch.equal(e.query_x, batch.query_x[i]) for i, e in enumerate(episodes))
    moved = batch.to("cpu")
    assert_same_batch(moved, batch)
    assert episodes[1].to("cpu").index == 1 and (episodes[1].ways, episodes[1].shots, episodes[1].queries) == (3, 1, 2)


# ----------------------------------------------------------------------------------------------
# Fixed evaluation tasks


def test_fixed_tasks_identical_across_calls(split: FewShotSplit) -> None:
    a = fixed_tasks(split, 5, 1, 5, n_tasks=40)
    b = fixed_tasks(split, 5, 1, 5, n_tasks=40)
    ia, ib = a.indices(), b.indices()
    np.testing.assert_array_equal(ia.classes, ib.classes)
    np.testing.assert_array_equal(ia.examples, ib.examples)
    assert len(a) == 40
    assert torch.equal(a[17].support_x, b[17].support_x) and torch.equal(a[-1].query_x, b[39].query_x)
    batches = list(a.batches(16))
    assert [len(x) for x in batches] == [16, 16, 8]
    assert torch.equal(batches[1][1].support_x, a[17].support_x)
    assert torch.equal(torch.cat([x.indices for x in batches]), torch.arange(40))


def test_fixed_task_seed_is_the_documented_hash(split: FewShotSplit) -> None:
    digest = hashlib.sha256(b"fixed-tasks:omniglot/maml/test").digest()
    assert fixed_task_seed("omniglot/maml/test") == int.from_bytes(digest[:8], "little")
    assert fixed_tasks(split, 5, 1, 1).sampler.seed == fixed_task_seed("toy/test")
    other = tagged_split(name="toy/val")
    assert not np.array_equal(
        fixed_tasks(other, 5, 1, 1, 10).indices().classes, fixed_tasks(split, 5, 1, 1, 10).indices().classes
    )
    explicit = fixed_tasks(split, 5, 1, 1, n_tasks=3, seed=5)
    assert_same_batch(next(explicit.batches(3)), EpisodeSampler(split, 5, 1, 1, seed=5).batch(0, 3))


def test_fixed_tasks_index_errors(split: FewShotSplit) -> None:
    tasks = fixed_tasks(split, 5, 1, 1, n_tasks=3)
    with pytest.raises(IndexError, match="task 3 out of range for 3"):
        tasks[3]
    with pytest.raises(ValueError, match="n_tasks must be an integer >= 1"):
        fixed_tasks(split, 5, 1, 1, n_tasks=0)
    with pytest.raises(ValueError, match="size must be an integer >= 1"):
        next(tasks.batches(0))


# ----------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"ways": 31}, "ways=31 is more than the 30 classes of toy/test"),
        ({"shots": 6, "queries": 7}, "shots \\+ queries = 13 is more than the 12 examples per class"),
        ({"ways": 0}, "ways must be an integer >= 1, got 0"),
        ({"shots": -1}, "shots must be an integer >= 1, got -1"),
        ({"queries": 0}, "queries must be an integer >= 1, got 0"),
        ({"ways": 2.0}, "ways must be an integer >= 1, got 2.0"),
        ({"shots": True}, "shots must be an integer >= 1, got True"),
        ({"seed": -3}, "seed must be an integer >= 0, got -3"),
        ({"start": -1}, "start must be an integer >= 0"),
        ({"normalize": ((0.5, 0.5), (1.0,))}, "normalize needs 1 means and stds, got 2 and 1"),
        ({"normalize": ((0.5,), (0.0,))}, "std must be positive"),
    ],
)
def test_bad_sampler_arguments(split: FewShotSplit, kwargs, message: str) -> None:
    arguments = {"ways": 5, "shots": 1, "queries": 1, **kwargs}
    ways, shots, queries = arguments.pop("ways"), arguments.pop("shots"), arguments.pop("queries")
    with pytest.raises(ValueError, match=message):
        EpisodeSampler(split, ways, shots, queries, **arguments)


def test_numpy_integers_are_accepted(split: FewShotSplit) -> None:
    sampler = EpisodeSampler(split, np.int64(5), np.int32(1), np.uint8(2), seed=np.uint64(3), start=np.int16(4))
    assert (sampler.ways, sampler.shots, sampler.queries, sampler.seed, sampler.next_index) == (5, 1, 2, 3, 4)
    assert all(type(value) is int for value in sampler.state_dict().values())
    assert_same_batch(sampler.batch(np.int64(1), np.int64(2)), EpisodeSampler(split, 5, 1, 2, seed=3).batch(1, 2))


def test_bad_call_arguments(split: FewShotSplit) -> None:
    sampler = EpisodeSampler(split, 5, 1, 1)
    with pytest.raises(ValueError, match="count must be an integer >= 1, got 0"):
        sampler.sample(0)
    with pytest.raises(ValueError, match="start must be an integer >= 0, got -2"):
        sampler.batch(-2, 1)
    with pytest.raises(ValueError, match="next_index must be an integer >= 0"):
        sampler.load_state_dict({"next_index": -1, "seed": 0})
