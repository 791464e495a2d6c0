"""miniImageNet readers on small generated files in both common forms (CSV + images, pickle),
the safe unpickler, the cache and every bad-input path."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from meta.data import DatasetError, load_split, miniimagenet
from meta.data.miniimagenet import load_miniimagenet, safe_load_pickle

LABELS = ("n03000001", "n01000002", "n02000003")  # deliberately not in sorted order
PER_CLASS = 4


def pixels(rng: np.random.Generator, size: tuple[int, int] = (84, 84)) -> np.ndarray:
    """A random RGB image ``(H, W, 3)`` uint8."""
    return rng.integers(0, 256, (*size, 3), dtype=np.uint8)


def write_csv(path: Path, rows: list[tuple[str, str]]) -> None:
    path.write_text("filename,label\n" + "".join(f"{f},{label}\n" for f, label in rows))


def make_csv_split(
    root: Path, split: str, rng: np.random.Generator, *, size=(84, 84), fmt="PNG", nested=False
) -> dict[str, list[np.ndarray]]:
    """Write ``<split>.csv`` and its images; return the original pixels by label."""
    images_dir = root / "images"
    originals: dict[str, list[np.ndarray]] = {}
    rows = []
    for label in LABELS:
        for i in range(PER_CLASS):
            name = f"{label}{i:08d}.{'jpg' if fmt == 'JPEG' else 'png'}"
            target = images_dir / label / name if nested else images_dir / name
            target.parent.mkdir(parents=True, exist_ok=True)
            array = pixels(rng, size)
            Image.fromarray(array).save(target, format=fmt)
            originals.setdefault(label, []).append(array)
            rows.append((name, label))
    write_csv(root / f"{split}.csv", rows)
    return originals


def make_pickle(path: Path, images: np.ndarray, class_dict: dict, protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
    with open(path, "wb") as stream:
        pickle.dump({"image_data": images, "class_dict": class_dict}, stream, protocol=protocol)


def load(root: Path, split: str = "train", **kwargs):
    return load_miniimagenet(split, root=root, cache_dir=root / "cache", progress=False, **kwargs)


# ----------------------------------------------------------------------------------------------
# CSV + images


def test_csv_png_form_keeps_pixels_and_sorts_classes(tmp_path: Path, rng) -> None:
    originals = make_csv_split(tmp_path, "train", rng)
    split = load(tmp_path)
    assert split.name == "miniimagenet/ravi/train"
    assert split.class_names == tuple(sorted(LABELS)) and split.groups == ("train",) * 3
    assert split.images.shape == (3, PER_CLASS, 3, 84, 84)
    for c, label in enumerate(split.class_names):
        for i in range(PER_CLASS):
            np.testing.assert_array_equal(split.images[c, i], originals[label][i].transpose(2, 0, 1))


def test_csv_jpeg_form_is_resized_with_lanczos(tmp_path: Path, rng) -> None:
    make_csv_split(tmp_path, "val", rng, size=(100, 130), fmt="JPEG", nested=True)
    split = load(tmp_path, "val")
    assert split.images.shape == (3, PER_CLASS, 3, 84, 84)
    for c, label in enumerate(split.class_names):
        for i in range(PER_CLASS):
            with Image.open(tmp_path / "images" / label / f"{label}{i:08d}.jpg") as image:
                reference = np.asarray(image.convert("RGB").resize((84, 84), Image.Resampling.LANCZOS))
            np.testing.assert_array_equal(split.images[c, i], reference.transpose(2, 0, 1))


def test_csv_other_image_size(tmp_path: Path, rng) -> None:
    make_csv_split(tmp_path, "test", rng)
    split = load(tmp_path, "test", image_size=32)
    assert split.images.shape == (3, PER_CLASS, 3, 32, 32) and split.info["image_size"] == 32


def test_csv_and_pickle_forms_agree(tmp_path: Path, rng) -> None:
    originals = make_csv_split(tmp_path / "csv", "train", rng)
    flat = np.stack([img for label in LABELS for img in originals[label]])
    order = rng.permutation(len(flat))  # store the images shuffled; class_dict points at them
    where = np.argsort(order)
    class_dict = {label: [int(where[c * PER_CLASS + i]) for i in range(PER_CLASS)] for c, label in enumerate(LABELS)}
    (tmp_path / "pkl").mkdir()
    make_pickle(tmp_path / "pkl" / "mini-imagenet-cache-train.pkl", flat[order], class_dict)
    from_csv, from_pickle = load(tmp_path / "csv"), load(tmp_path / "pkl")
    assert from_csv.class_names == from_pickle.class_names
    np.testing.assert_array_equal(from_csv.images, from_pickle.images)
    assert (from_csv.info["format"], from_pickle.info["format"]) == ("csv", "pickle")


def test_csv_is_preferred_when_both_forms_exist(tmp_path: Path, rng) -> None:
    make_csv_split(tmp_path, "train", rng)
    make_pickle(tmp_path / "mini-imagenet-cache-train.pkl", np.zeros((1, 84, 84, 3), np.uint8), {"x": [0]})
    assert load(tmp_path).info["format"] == "csv"


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_pickle_form_every_protocol(tmp_path: Path, rng, protocol: int) -> None:
    images = rng.integers(0, 256, (6, 84, 84, 3), dtype=np.uint8)
    class_dict = {"b": np.array([5, 1, 3]), "a": [np.int64(0), 2, 4]}
    make_pickle(tmp_path / "mini-imagenet-cache-test.pkl", images, class_dict, protocol)
    split = load(tmp_path, "test")
    assert split.class_names == ("a", "b")
    np.testing.assert_array_equal(split.images[0], images[[0, 2, 4]].transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(split.images[1], images[[5, 1, 3]].transpose(0, 3, 1, 2))


def test_load_split_finds_root_from_environment(tmp_path: Path, rng, monkeypatch) -> None:
    make_csv_split(tmp_path, "train", rng)
    monkeypatch.setenv("MINIIMAGENET_DIR", str(tmp_path))
    split = load_split("miniimagenet", "train", cache_dir=tmp_path / "cache", progress=False)
    assert split.n_classes == 3 and split.image_shape == (3, 84, 84)
    monkeypatch.delenv("MINIIMAGENET_DIR")
    with pytest.raises(ValueError, match=r"pass root= or set \$MINIIMAGENET_DIR"):
        load_split("miniimagenet", "train")


# ----------------------------------------------------------------------------------------------
# Safe unpickling


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Evaluates:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


@pytest.mark.parametrize("payload", ["system", "eval", "nested"])
def test_malicious_pickle_is_refused(tmp_path: Path, payload: str) -> None:
    marker = tmp_path / "pwned"
    evil = {"system": _RunsCode(marker), "eval": _Evaluates(), "nested": {"x": [1, _RunsCode(marker)]}}[payload]
    data = {"image_data": np.zeros((1, 84, 84, 3), np.uint8), "class_dict": {"a": [0]}, "evil": evil}
    path = tmp_path / "mini-imagenet-cache-train.pkl"
    path.write_bytes(pickle.dumps(data))
    with pytest.raises(DatasetError, match="refusing to unpickle (posix|nt|builtins)"):
        load(tmp_path)
    assert not marker.exists()


def test_safe_loader_refuses_any_other_class(tmp_path: Path) -> None:
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps({"p": Path("/etc")}))
    with pytest.raises(DatasetError, match="refusing to unpickle pathlib"):
        safe_load_pickle(path)
    path.write_bytes(pickle.dumps({"a": np.arange(3), "s": {1, 2}, "b": bytearray(b"xy"), "c": 1j}))
    loaded = safe_load_pickle(path)
    np.testing.assert_array_equal(loaded["a"], np.arange(3))
    assert loaded["s"] == {1, 2} and loaded["b"] == bytearray(b"xy") and loaded["c"] == 1j


# ----------------------------------------------------------------------------------------------
# The cache (CSV form)


def test_second_csv_load_does_not_decode(tmp_path: Path, rng, monkeypatch) -> None:
    make_csv_split(tmp_path, "train", rng)
    first = load(tmp_path)

    def fail(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(miniimagenet, "decode_image", fail)
    np.testing.assert_array_equal(load(tmp_path).images, first.images)


def test_changed_image_rebuilds(tmp_path: Path, rng, monkeypatch) -> None:
    make_csv_split(tmp_path, "train", rng)
    load(tmp_path)
    replaced = tmp_path / "images" / f"{LABELS[0]}{0:08d}.png"
    new = pixels(rng)
    Image.fromarray(new).save(replaced, format="PNG")
    os.utime(replaced, ns=(10**9, 10**9))
    with pytest.warns(UserWarning, match="stale"):
        split = load(tmp_path)
    np.testing.assert_array_equal(split.images[split.class_names.index(LABELS[0]), 0], new.transpose(2, 0, 1))


# ----------------------------------------------------------------------------------------------
# Bad input


def test_missing_split_raises(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="neither .*val.csv nor .*mini-imagenet-cache-val.pkl"):
        load(tmp_path, "val")


@pytest.mark.parametrize(
    "damage, message",
    [
        ("missing-image", "image n0100000200000001.png of class n01000002 not found"),
        ("unbalanced", "classes have different numbers of images"),
        ("header", "expected a header line 'filename,label'"),
        ("short-row", "line 3 is not 'filename,label'"),
        ("bad-image", "n0100000200000002.png: not a readable image"),
        ("no-images-dir", "no images/ folder"),
    ],
)
def test_bad_csv_form_raises(tmp_path: Path, rng, damage: str, message: str) -> None:
    make_csv_split(tmp_path, "train", rng)
    csv_path, images = tmp_path / "train.csv", tmp_path / "images"
    lines = csv_path.read_text().splitlines()
    if damage == "missing-image":
        (images / "n0100000200000001.png").unlink()
    elif damage == "unbalanced":
        csv_path.write_text("\n".join(lines[:-1]) + "\n")
    elif damage == "header":
        csv_path.write_text("\n".join(["file,class"] + lines[1:]) + "\n")
    elif damage == "short-row":
        csv_path.write_text("\n".join(lines[:2] + ["only-one-column"] + lines[2:]) + "\n")
    elif damage == "bad-image":
        (images / "n0100000200000002.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    else:
        for path in images.iterdir():
            path.unlink()
        images.rmdir()
    with pytest.raises(DatasetError, match=message):
        load(tmp_path)


@pytest.mark.parametrize(
    "data, message",
    [
        ([1, 2, 3], "expected a dict with keys 'image_data' and 'class_dict'"),
        ({"image_data": np.zeros((2, 84, 84, 3), np.float32), "class_dict": {"a": [0, 1]}}, "must be uint8"),
        (
            {"image_data": np.zeros((2, 84, 84), np.uint8), "class_dict": {"a": [0, 1]}},
            "must be uint8 \\(N, H, W, 3\\)",
        ),
        (
            {"image_data": np.zeros((2, 84, 84, 3), np.uint8), "class_dict": {"a": [0, 2]}},
            r"indices must be integers in \[0, 2\)",
        ),
        (
            {"image_data": np.zeros((3, 84, 84, 3), np.uint8), "class_dict": {"a": [0, 1], "b": [2]}},
            "different numbers of images",
        ),
        ({"image_data": np.zeros((2, 84, 84, 3), np.uint8), "class_dict": {}}, "class_dict must be a non-empty dict"),
        (
            {"image_data": np.zeros((2, 32, 32, 3), np.uint8), "class_dict": {"a": [0, 1]}},
            "holds 32x32 images; image_size=84",
        ),
    ],
)
def test_bad_pickle_raises(tmp_path: Path, data, message: str) -> None:
    (tmp_path / "mini-imagenet-cache-train.pkl").write_bytes(pickle.dumps(data))
    with pytest.raises(DatasetError, match=message):
        load(tmp_path)


def test_truncated_pickle_raises(tmp_path: Path, rng) -> None:
    path = tmp_path / "mini-imagenet-cache-train.pkl"
    make_pickle(path, rng.integers(0, 256, (2, 84, 84, 3), dtype=np.uint8), {"a": [0, 1]})
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DatasetError, match="not a readable pickle"):
        load(tmp_path)


def test_bad_arguments_raise_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown miniImageNet protocol"):
        load(tmp_path, protocol="vinyals")
    with pytest.raises(ValueError, match="unknown split"):
        load(tmp_path, "validation")
    with pytest.raises(ValueError, match="image_size must be an integer >= 1, got -84"):
        load(tmp_path, image_size=-84)
    with pytest.raises(ValueError, match="image_size must be an integer >= 1, got True"):
        load_split("miniimagenet", "train", root=tmp_path, image_size=True)
    with pytest.raises(ValueError, match="unknown miniimagenet protocol 'lake'; choose from ravi"):
        load_split("miniimagenet", "train", root=tmp_path, protocol="lake")
    with pytest.raises(ValueError, match="unknown data set 'cifar'"):
        load_split("cifar", "train", root=tmp_path)


def test_registry_passes_glyph_arguments_and_checks_image_size(tmp_path: Path, monkeypatch) -> None:
    from meta.data import FewShotSplit, glyphs

    calls = []

    def fake_load_glyphs(split, *, root=None, seed=0, cache_dir=None, progress=True):
        calls.append((split, root, cache_dir, progress))
        images = np.zeros((2, 3, 1, 28, 28), np.uint8)
        return FewShotSplit(f"glyphs/default/{split}", images, ("a", "b"), ("g", "g"))

    monkeypatch.setattr(glyphs, "load_glyphs", fake_load_glyphs)
    split = load_split("glyphs", "val", root=tmp_path, cache_dir=tmp_path / "c", progress=False)
    assert split.name == "glyphs/default/val" and calls == [("val", tmp_path, tmp_path / "c", False)]
    assert load_split("glyphs", "test", image_size=28).n_classes == 2
    with pytest.raises(ValueError, match="glyphs images are 28x28; image_size=84 is not available"):
        load_split("glyphs", "train", image_size=84)
    with pytest.raises(ValueError, match="unknown glyphs protocol 'maml'; choose from default"):
        load_split("glyphs", "train", protocol="maml")


def test_registry_checks_synthetic_arguments() -> None:
    assert load_split("synthetic", "val", image_size=np.int64(7)).image_shape == (1, 7, 7)
    with pytest.raises(ValueError, match="image_size must be an integer >= 7, got 6"):
        load_split("synthetic", "train", image_size=6)
    with pytest.raises(ValueError, match="image_size must be an integer >= 1, got 28.0"):
        load_split("synthetic", "train", image_size=28.0)
    with pytest.raises(ValueError, match="unknown split 'valid'; choose from train, val, test"):
        load_split("synthetic", "valid")
