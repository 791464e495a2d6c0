"""The built-in glyphs data set: size, splits, determinism, distinctness, distortion, cache, inputs.

The full set is generated once per test session into a temporary cache folder; the other tests
read it from there.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from meta.data import glyphs
from meta.data.base import FewShotSplit
from meta.data.glyphs import (
    ALPHABETS,
    DUPLICATE_THRESHOLD,
    N_DRAWINGS,
    SPLITS,
    Alphabet,
    character_templates,
    generate_glyphs,
    glyph_distance,
    glyph_features,
    load_glyphs,
)


@pytest.fixture(scope="session")
def glyph_cache(tmp_path_factory: pytest.TempPathFactory):
    return tmp_path_factory.mktemp("glyph-cache")


@pytest.fixture(scope="session")
def full_set(glyph_cache) -> dict[str, FewShotSplit]:
    """The three splits for seed 0, generated (once) through the cache."""
    return {split: load_glyphs(split, cache_dir=glyph_cache, progress=False) for split in SPLITS}


def _all_names(full_set: dict[str, FewShotSplit]) -> list[str]:
    return [name for split in SPLITS for name in full_set[split].class_names]


def _all_images(full_set: dict[str, FewShotSplit]) -> np.ndarray:
    return np.concatenate([full_set[split].images for split in SPLITS])


def _fake_generator(calls: list[int]):
    """A stand-in for generate_glyphs: one tiny class per split, counting its calls."""

    def fake(seed: int = 0, progress: bool = True) -> dict[str, FewShotSplit]:
        calls.append(seed)
        images = np.zeros((1, N_DRAWINGS, 1, 28, 28), np.uint8)
        images[..., 10:18, 10:18] = 255
        return {
            split: FewShotSplit(
                name=f"glyphs/{split}",
                images=images + i,
                class_names=(f"Fake{i}/U+0041",),
                groups=(f"Fake{i}",),
                info={"split": split, "seed": seed},
            )
            for i, split in enumerate(SPLITS)
        }

    return fake


def test_sizes_and_image_format(full_set):
    images = _all_images(full_set)
    groups = {group for split in SPLITS for group in full_set[split].groups}
    assert images.shape[0] >= 1000
    assert len(groups) >= 20
    assert images.shape[1:] == (N_DRAWINGS, 1, 28, 28) and images.dtype == np.uint8
    # ink high on a blank background: every drawing peaks at 255, most pixels are 0, and even
    # a filled square (22 px of 28 at most, dilated) leaves a quarter of its frame blank
    assert np.all(images.max(axis=(-2, -1)) == 255)
    blank = np.mean(images == 0, axis=(-2, -1))
    assert blank.mean() > 0.6 and blank.min() > 0.25
    # the distortion keeps the glyph inside the frame: the outer ring of pixels is blank
    ring = np.concatenate([images[..., 0, :], images[..., -1, :], images[..., :, 0], images[..., :, -1]], axis=-1)
    assert ring.max() == 0
    for split in SPLITS:
        s = full_set[split]
        assert s.name == f"glyphs/{split}"
        for name, group in zip(s.class_names, s.groups):
            match = re.fullmatch(r"(.+)/U\+([0-9A-F]{4,6})", name)
            assert match is not None and match[1] == group


def test_splits_are_disjoint_by_alphabet_and_cover_every_alphabet(full_set):
    groups = {split: set(full_set[split].groups) for split in SPLITS}
    assert not groups["train"] & groups["val"] and not groups["train"] & groups["test"]
    assert not groups["val"] & groups["test"]
    assert set.union(*groups.values()) == {alphabet.name for alphabet in ALPHABETS}
    for alphabet in ALPHABETS:
        assert alphabet.name in groups[alphabet.split]
    names = _all_names(full_set)
    assert len(names) == len(set(names))
    total = len(names)
    fractions = {split: full_set[split].n_classes / total for split in SPLITS}
    assert fractions == pytest.approx({"train": 0.7, "val": 0.1, "test": 0.2}, abs=0.03)
    assert full_set["train"].info["split_fractions"] == pytest.approx(fractions)


def test_alphabets_are_disjoint_ranges_of_code_points():
    owner: dict[int, str] = {}
    for alphabet in ALPHABETS:
        for code_point in alphabet.code_points():
            assert code_point not in owner, f"U+{code_point:04X} in {owner.get(code_point)} and {alphabet.name}"
            owner[code_point] = alphabet.name
    assert len({alphabet.name for alphabet in ALPHABETS}) == len(ALPHABETS)


def test_info_records_how_the_set_was_made(full_set):
    import matplotlib

    info = full_set["val"].info
    assert json.loads(json.dumps(info)) == info
    assert info["split"] == "val" and info["seed"] == 0
    assert info["generator_version"] == glyphs.GENERATOR_VERSION
    assert info["matplotlib_version"] == matplotlib.__version__
    assert re.fullmatch(r"[0-9a-f]{64}", info["font_fingerprint"])
    assert info["font_fingerprint"] == glyphs.font_fingerprint()
    assert sum(info["alphabet_sizes"].values()) == len(_all_names(full_set))
    assert info["mean_faces_per_class"] >= 2


def test_same_seed_same_bytes_other_seed_other_drawings(full_set):
    """A subset of alphabets, generated afresh, is byte-identical to the same classes of the
    full set (so neither the batch nor the other characters affect a drawing); another seed
    draws the same characters differently."""
    wanted = ["Greek", "Hebrew"]  # Latin, Cyrillic and Armenian are screened but not drawn
    again = generate_glyphs(0, progress=False, alphabets=wanted)
    for split in SPLITS:
        full = full_set[split]
        rows = [i for i, group in enumerate(full.groups) if group in wanted]
        assert again[split].class_names == tuple(full.class_names[i] for i in rows)
        np.testing.assert_array_equal(again[split].images, full.images[rows])
    assert set(again["train"].groups) == set(wanted)
    other = generate_glyphs(1, progress=False, alphabets=["Greek"])["train"]
    greek = again["train"].images[: other.n_classes]
    assert other.class_names == again["train"].class_names[: other.n_classes]
    assert other.n_classes > 0 and np.all(np.any(other.images != greek, axis=(2, 3, 4)))


def test_kept_characters_are_not_near_duplicates(full_set):
    names = _all_names(full_set)
    features = glyph_features(character_templates(names))
    gram = features @ features.T
    distance = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * gram))  # unit-norm features
    np.fill_diagonal(distance, np.inf)
    assert distance.min() >= DUPLICATE_THRESHOLD - 1e-9


def test_distance_flags_constructed_near_duplicates(full_set):
    latin_o, cyrillic_o, greek_o, latin_q = "Latin/U+004F", "Cyrillic/U+041E", "Greek/U+039F", "Latin/U+0051"
    t = character_templates([latin_o, cyrillic_o, greek_o, latin_q, "Latin/U+006C", "Latin/U+0049"])
    assert glyph_distance(t[0], t[1]) < DUPLICATE_THRESHOLD
    assert glyph_distance(t[0], t[2]) < DUPLICATE_THRESHOLD
    assert glyph_distance(t[4], t[5]) < DUPLICATE_THRESHOLD  # l and I
    assert glyph_distance(t[0], t[3]) > DUPLICATE_THRESHOLD  # O and Q are different characters
    names = set(_all_names(full_set))
    assert latin_o in names and latin_q in names and "Latin/U+0049" in names
    assert cyrillic_o not in names and greek_o not in names and "Latin/U+006C" not in names


def test_distance_is_a_brightness_invariant_symmetric_measure(rng):
    a, b = rng.random((2, 28, 28))
    assert glyph_distance(a, a) == pytest.approx(0.0, abs=1e-12)
    assert glyph_distance(a, 3.0 * a) == pytest.approx(0.0, abs=1e-12)
    assert glyph_distance(a, b) == pytest.approx(glyph_distance(b, a), abs=1e-15)
    assert 0.0 < glyph_distance(a, b) <= np.sqrt(2.0)
    square = np.zeros((28, 28))
    square[6:22, 6:22] = 1.0
    y, x = np.mgrid[:28, :28]
    disc = ((y - 13.5) ** 2 + (x - 13.5) ** 2 <= 9.0**2).astype(float)
    assert glyph_distance(square, disc) > DUPLICATE_THRESHOLD  # filled shapes differ by edges
    batch = rng.random((5, 28, 28))
    np.testing.assert_array_equal(glyph_features(batch)[3], glyph_features(batch[3]))


def test_drawings_differ_but_cluster_by_character(full_set, rng):
    images = _all_images(full_set)[:, :, 0]
    flat = images.reshape(images.shape[0], N_DRAWINGS, -1)
    for drawings in flat:
        assert len({d.tobytes() for d in drawings}) == N_DRAWINGS
    chosen = rng.choice(images.shape[0], size=200, replace=False)
    features = glyph_features(images[chosen].astype(np.float64))  # (200, 20, d)

    def mean_distance(f: np.ndarray, g: np.ndarray) -> float:
        return float(np.sqrt(np.maximum(0.0, 2.0 - 2.0 * f @ g.T)).mean())

    within = np.array([mean_distance(f, f) * N_DRAWINGS / (N_DRAWINGS - 1) for f in features])
    others = np.array([mean_distance(features[i], features[(i + 1) % len(chosen)]) for i in range(len(chosen))])
    assert within.min() > 0.1  # the distortion is real
    assert within.mean() < others.mean()
    assert np.mean(within < others) > 0.95


def test_second_load_reads_the_cache(full_set, glyph_cache, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the cached glyphs were regenerated")

    monkeypatch.setattr(glyphs, "generate_glyphs", fail)
    for split in SPLITS:
        again = load_glyphs(split, seed=np.int64(0), cache_dir=glyph_cache, progress=False)  # numpy ints are seeds
        assert again.class_names == full_set[split].class_names
        np.testing.assert_array_equal(again.images, full_set[split].images)
        assert again.info == full_set[split].info


def test_corrupt_cache_is_rebuilt_and_root_is_a_cache_folder(tmp_path, monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(glyphs, "generate_glyphs", _fake_generator(calls))
    first = load_glyphs("test", root=tmp_path, seed=3, progress=False)
    assert calls == [3] and first.class_names == ("Fake2/U+0041",)
    (entry,) = tmp_path.glob("glyphs-seed3-*.npz")
    assert load_glyphs("val", root=tmp_path, seed=3, progress=False).groups == ("Fake1",)
    assert calls == [3]
    entry.write_bytes(entry.read_bytes()[:200])  # truncated: not a readable .npz any more
    with pytest.warns(UserWarning, match="rebuilding"):
        rebuilt = load_glyphs("test", root=tmp_path, seed=3, progress=False)
    assert calls == [3, 3]
    np.testing.assert_array_equal(rebuilt.images, first.images)
    load_glyphs("train", root=tmp_path, seed=4, progress=False)  # another seed, another entry
    assert calls == [3, 3, 4] and len(list(tmp_path.glob("glyphs-seed*.npz"))) == 2
    elsewhere = tmp_path / "explicit"
    load_glyphs("train", root=tmp_path, cache_dir=elsewhere, seed=3, progress=False)
    assert calls == [3, 3, 4, 3] and len(list(elsewhere.glob("glyphs-seed3-*.npz"))) == 1


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: load_glyphs("training"), "split 'training'"),
        (lambda: load_glyphs("train", seed=-1), "seed"),
        (lambda: load_glyphs("train", seed=1.5), "seed"),
        (lambda: load_glyphs("train", seed=True), "seed"),
        (lambda: generate_glyphs(-2), "seed"),
        (lambda: generate_glyphs(0, alphabets=["Klingon"]), "Klingon"),
        (lambda: generate_glyphs(0, alphabets="Latin"), "string 'Latin'"),
        (lambda: generate_glyphs(0, alphabets=[]), "alphabet"),
        (lambda: character_templates(["Latin/O"]), "Latin/O"),
        (lambda: character_templates(["Latin/U+0020"]), "U+0020"),
        (lambda: glyph_distance(np.zeros((28, 28)), np.ones((28, 28))), "no ink"),
        (lambda: glyph_features(np.full((28, 28), np.nan)), "finite"),
        (lambda: Alphabet("Latin", "training", ((65, 90),)), "split 'training'"),
        (lambda: Alphabet("Latin", "train", ((90, 65),)), "ranges"),
    ],
)
def test_bad_inputs_raise_value_error_naming_the_problem(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()
