"""meta's data sets as repsim input sets: declared in the `repsim.input_sets` entry points, found
by repsim without importing meta, every image of a split as uint8 (M, C, H, W)."""

from __future__ import annotations

from importlib.metadata import entry_points

import numpy as np

from meta.data import input_sets
from meta.data.registry import load_split
from repsim.input_sets import InputRequest, load_set


def test_every_set_is_declared_and_points_here():
    declared = {e.name: e for e in entry_points(group="repsim.input_sets")}
    for name in ("glyphs", "omniglot", "miniimagenet", "synthetic"):
        assert declared[name].value == f"meta.data.input_sets:{name}"
        assert declared[name].load() is getattr(input_sets, name)


def test_a_split_is_every_image_in_class_order():
    images = input_sets.synthetic("test", progress=False)
    split = load_split("synthetic", "test", progress=False)
    assert images.dtype == np.uint8 and images.shape == (split.n_classes * split.n_per_class, 1, 28, 28)
    assert np.array_equal(images[: split.n_per_class], split.images[0])
    assert input_sets.synthetic("test", image_size=14).shape[2:] == (14, 14)


def test_repsim_draws_from_it_with_a_seed():
    drawn = load_set("synthetic", "test", InputRequest(n=50, seed=7))
    again = load_set("synthetic", "test", InputRequest(n=50, seed=7))
    assert drawn.inputs.shape == (50, 1, 28, 28) and float(drawn.inputs.max()) <= 1.0
    assert np.array_equal(drawn.inputs.numpy(), again.inputs.numpy())
    assert drawn.source == {**again.source, "available": 320, "n": 50, "seed": 7}
