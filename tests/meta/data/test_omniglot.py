"""Omniglot: archive checks and errors (small fake archives), the exact resize, both protocols
and the decoded-image cache; counts and splits on the real archives where they are present."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import OMNIGLOT_DIR
from PIL import Image
from reference_split import cbfinn_maml_split

from meta.data import DatasetError, cache_root, load_split, omniglot
from meta.data.omniglot import (
    LAKE_VAL_ALPHABETS,
    OFFICIAL_ALPHABETS,
    load_omniglot,
    load_part,
    maml_character_split,
    nearest_indices,
    rotated_classes,
)

# ----------------------------------------------------------------------------------------------
# Small fake archives in the official layout (a patched, small table of alphabets)

FAKE_ALPHABETS = {"evaluation": {"Alpha": 2, "Beta_(x)": 3, "Gamma": 1}, "background": {"Delta": 2, "Eps": 1}}


@pytest.fixture
def fake_table(monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, int]]:
    """Make the loader expect the small :data:`FAKE_ALPHABETS` instead of the official counts."""
    for part, table in FAKE_ALPHABETS.items():
        monkeypatch.setitem(OFFICIAL_ALPHABETS, part, table)
    return FAKE_ALPHABETS


def png_bytes(ink: np.ndarray) -> bytes:
    """A mode-'1' PNG like the official ones: ink (True) black, background white."""
    buffer = io.BytesIO()
    Image.fromarray(~ink).convert("1").save(buffer, format="PNG")
    return buffer.getvalue()


def fake_members(part: str, rng: np.random.Generator) -> dict[str, bytes]:
    """``{"images_<part>/<alphabet>/characterNN/NNNN_MM.png": PNG bytes}`` for FAKE_ALPHABETS."""
    members = {}
    for alphabet, n_characters in FAKE_ALPHABETS[part].items():
        for c in range(1, n_characters + 1):
            for d in range(1, 21):
                ink = rng.random((105, 105)) < 0.1
                members[f"images_{part}/{alphabet}/character{c:02d}/{c:04d}_{d:02d}.png"] = png_bytes(ink)
    return members


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in sorted(members.items()):
            archive.writestr(name, data)
    return path


def write_folder(root: Path, members: dict[str, bytes]) -> Path:
    for name, data in members.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


@pytest.fixture
def fake_evaluation(fake_table, tmp_path: Path, rng: np.random.Generator) -> tuple[Path, dict[str, bytes]]:
    root = tmp_path / "omniglot"
    root.mkdir()
    members = fake_members("evaluation", rng)
    write_zip(root / "images_evaluation.zip", members)
    return root, members


def expected_ink(data: bytes, size: int = 28) -> np.ndarray:
    """Reference: Pillow's own resize (LANCZOS asked, NEAREST done for mode '1'), ink as True."""
    with Image.open(io.BytesIO(data)) as image:
        assert image.mode == "1"
        return ~np.asarray(image.resize((size, size), resample=Image.Resampling.LANCZOS))


# ----------------------------------------------------------------------------------------------
# Resizing


def test_nearest_indices_are_the_float_formula() -> None:
    for size in range(1, 320):
        reference = np.floor((np.arange(size) + 0.5) * 105 / size).astype(np.int64)
        np.testing.assert_array_equal(nearest_indices(size), reference)


@pytest.mark.parametrize("size", [28, 14, 35, 56, 84, 105, 150])
def test_decode_matches_pillow_on_fake_pngs(size: int, rng: np.random.Generator) -> None:
    for _ in range(5):
        data = png_bytes(rng.random((105, 105)) < 0.3)
        ink = omniglot.decode_drawing(data, "fake", nearest_indices(size))
        np.testing.assert_array_equal(ink, expected_ink(data, size))


# ----------------------------------------------------------------------------------------------
# Fake archives: layout, decoding, folder form, every error


def test_fake_zip_decodes_in_sorted_order(fake_evaluation, tmp_path: Path) -> None:
    root, members = fake_evaluation
    part = load_part(root, "evaluation", cache_dir=tmp_path / "cache", progress=False)
    assert part.images.shape == (6, 20, 1, 28, 28) and part.images.dtype == np.uint8
    assert part.characters == (
        "Alpha/character01",
        "Alpha/character02",
        "Beta_(x)/character01",
        "Beta_(x)/character02",
        "Beta_(x)/character03",
        "Gamma/character01",
    )
    assert set(np.unique(part.images)) <= {0, 255}
    for c, character in enumerate(part.characters):
        for d in range(20):
            number = int(character[-2:])
            data = members[f"images_evaluation/{character}/{number:04d}_{d + 1:02d}.png"]
            np.testing.assert_array_equal(part.images[c, d, 0] == 255, expected_ink(data))


def test_folder_form_equals_zip_form(fake_evaluation, tmp_path: Path) -> None:
    root, members = fake_evaluation
    folder_root = write_folder(tmp_path / "unpacked", members)
    from_zip = load_part(root, "evaluation", cache_dir=tmp_path / "cache", progress=False)
    from_folder = load_part(folder_root, "evaluation", cache_dir=tmp_path / "cache", progress=False)
    np.testing.assert_array_equal(from_zip.images, from_folder.images)
    assert from_zip.characters == from_folder.characters
    assert from_folder.source.endswith("images_evaluation")


def test_stray_files_outside_the_layout_are_ignored(fake_table, tmp_path: Path, rng) -> None:
    members = fake_members("evaluation", rng)
    members["__MACOSX/images_evaluation/._x.png"] = b"junk"
    members["images_evaluation/Alpha/character01/Thumbs.db"] = b"junk"
    write_zip(tmp_path / "images_evaluation.zip", members)
    part = load_part(tmp_path, "evaluation", cache_dir=tmp_path / "cache", progress=False)
    assert part.images.shape[0] == 6


def _drop(members: dict[str, bytes], prefix: str) -> dict[str, bytes]:
    return {name: data for name, data in members.items() if not name.startswith(prefix)}


def _corrupt_member(members: dict[str, bytes], name: str, data: bytes) -> dict[str, bytes]:
    return {**members, name: data}


FIRST = "images_evaluation/Alpha/character01/0001_01.png"


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda m: _drop(m, "images_evaluation/Gamma/"), r"missing \['Gamma'\]"),
        (lambda m: _drop(m, "images_evaluation/Beta_(x)/character02/"), r"Beta_\(x\) has 2 characters, expected 3"),
        (
            lambda m: _drop(m, "images_evaluation/Alpha/character02/0002_07.png"),
            "Alpha/character02 has 19 drawings, expected 20",
        ),
        (lambda m: {**m, "images_evaluation/Zeta/character01/0009_01.png": m[FIRST]}, r"unexpected \['Zeta'\]"),
        (lambda m: {**m, "images_evaluation/Alpha/character01/0001_21.png": m[FIRST]}, "has 21 drawings"),
        (
            lambda m: {**m, "images_evaluation/Alpha/loose.png": m[FIRST]},
            "unexpected PNG images_evaluation/Alpha/loose.png",
        ),
        (lambda m: _corrupt_member(m, FIRST, b"\x89PNG\r\n\x1a\n garbage"), "0001_01.png: not a readable PNG"),
        (lambda m: _corrupt_member(m, FIRST, m[FIRST][: len(m[FIRST]) // 2]), "0001_01.png: not a readable PNG"),
        (lambda m: _corrupt_member(m, FIRST, png_bytes(np.zeros((104, 105), bool))), "is 105x104, expected 105x105"),
    ],
    ids=[
        "missing-alphabet",
        "missing-character",
        "missing-drawing",
        "extra-alphabet",
        "extra-drawing",
        "bad-depth",
        "garbage-png",
        "truncated-png",
        "wrong-size",
    ],
)
def test_damaged_archive_raises_naming_the_problem(fake_table, tmp_path: Path, rng, damage, message) -> None:
    write_zip(tmp_path / "images_evaluation.zip", damage(fake_members("evaluation", rng)))
    with pytest.raises(DatasetError, match=message):
        load_part(tmp_path, "evaluation", cache_dir=tmp_path / "cache", progress=False)
    assert not list((tmp_path / "cache").glob("*.npz")), "a failed decode must not leave a cache entry"


def test_damaged_folder_raises_naming_the_problem(fake_table, tmp_path: Path, rng) -> None:
    members = _drop(fake_members("evaluation", rng), "images_evaluation/Alpha/character01/0001_03.png")
    write_folder(tmp_path, members)
    with pytest.raises(DatasetError, match="Alpha/character01 has 19 drawings"):
        load_part(tmp_path, "evaluation", cache_dir=tmp_path / "cache", progress=False)


def test_missing_archive_raises(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="images_background.zip nor the folder"):
        load_part(tmp_path, "background", cache_dir=tmp_path / "cache", progress=False)


def test_truncated_zip_raises(fake_evaluation, tmp_path: Path) -> None:
    root, _ = fake_evaluation
    archive = root / "images_evaluation.zip"
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DatasetError, match="not a readable zip archive"):
        load_part(root, "evaluation", cache_dir=tmp_path / "cache", progress=False)


def test_corrupt_member_data_raises(fake_table, tmp_path: Path, rng) -> None:
    """Flip bytes inside a stored member: the CRC check fails and the member is named."""
    members = fake_members("evaluation", rng)
    archive = tmp_path / "images_evaluation.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as out:
        for name, data in sorted(members.items()):
            out.writestr(name, data)
    with zipfile.ZipFile(archive) as z:
        info = z.getinfo(FIRST)
    raw = bytearray(archive.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    raw[start + 40 : start + 48] = b"\x00" * 8
    archive.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match="cannot read Alpha/character01/0001_01.png"):
        load_part(tmp_path, "evaluation", cache_dir=tmp_path / "cache", progress=False)


def test_bad_arguments_raise_value_error(fake_evaluation, tmp_path: Path) -> None:
    root, _ = fake_evaluation
    for image_size in (0, 28.0, True):
        with pytest.raises(ValueError, match=f"image_size must be an integer >= 1, got {image_size!r}"):
            load_part(root, "evaluation", image_size=image_size, cache_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="unknown Omniglot part"):
        load_part(root, "training", cache_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="unknown Omniglot protocol"):
        load_omniglot("train", root=root, protocol="vinyals", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown split"):
        load_omniglot("valid", root=root, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="no validation split; use protocol='lake-val'"):
        load_omniglot("val", root=root, protocol="lake", cache_dir=tmp_path)


# ----------------------------------------------------------------------------------------------
# Protocols on the fake archives (both parts)


@pytest.fixture
def fake_both(fake_table, tmp_path: Path, rng) -> Path:
    root = tmp_path / "omniglot"
    root.mkdir()
    for part in ("background", "evaluation"):
        write_zip(root / f"images_{part}.zip", fake_members(part, rng))
    return root


def test_rotated_classes_are_counter_clockwise_turns(rng: np.random.Generator) -> None:
    images = rng.integers(0, 256, (3, 2, 1, 5, 5), dtype=np.uint8)
    rotated = rotated_classes(images)
    assert rotated.shape == (12, 2, 1, 5, 5)
    for c in range(3):
        for k in range(4):
            expected = images[c].copy()
            for _ in range(k):  # one counter-clockwise turn: row r of the result is column W-1-r
                expected = expected[..., :, ::-1].swapaxes(-1, -2)
            np.testing.assert_array_equal(rotated[4 * c + k], expected)
    np.testing.assert_array_equal(rotated[1, 0, 0, 0, :], images[0, 0, 0, :, -1])


def test_lake_protocol_on_fake_archives(fake_both: Path, tmp_path: Path) -> None:
    train = load_split("omniglot", "train", root=fake_both, protocol="lake", cache_dir=tmp_path / "c", progress=False)
    test = load_split("omniglot", "test", root=fake_both, protocol="lake", cache_dir=tmp_path / "c", progress=False)
    assert train.name == "omniglot/lake/train" and train.n_classes == 3 and set(train.groups) == {"Delta", "Eps"}
    assert test.n_classes == 6 and set(test.groups) == {"Alpha", "Beta_(x)", "Gamma"}
    assert "rotations" not in train.info and "rot" not in "".join(train.class_names)


def test_maml_protocol_on_fake_archives(fake_both: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(omniglot, "MAML_TRAIN_CHARACTERS", 4)
    monkeypatch.setattr(omniglot, "MAML_VAL_CHARACTERS", 2)
    splits = {
        s: load_omniglot(s, root=fake_both, cache_dir=tmp_path / "c", image_size=12, progress=False)
        for s in ("train", "val", "test")
    }
    assert [splits[s].n_classes for s in ("train", "val", "test")] == [16, 8, 12]
    both = [
        load_part(fake_both, p, image_size=12, cache_dir=tmp_path / "c", progress=False)
        for p in ("background", "evaluation")
    ]
    by_name = {name: images for part in both for name, images in zip(part.characters, part.images)}
    for split in splits.values():
        assert split.image_shape == (1, 12, 12)
        for c, name in enumerate(split.class_names):
            character, rotation = name.rsplit("/", 1)
            k = int(rotation[3:]) // 90
            np.testing.assert_array_equal(split.images[c], np.rot90(by_name[character], k, axes=(-2, -1)))
            assert split.groups[c] == character.split("/")[0]
    characters = [{n.rsplit("/", 1)[0] for n in s.class_names} for s in splits.values()]
    assert set.union(*characters) == set(by_name) and sum(map(len, characters)) == len(by_name)


# ----------------------------------------------------------------------------------------------
# The cache


def test_second_load_does_not_decode(fake_evaluation, tmp_path: Path, monkeypatch) -> None:
    root, _ = fake_evaluation
    first = load_part(root, "evaluation", cache_dir=tmp_path / "cache", progress=False)

    def fail(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(omniglot, "decode_drawing", fail)
    second = load_part(root, "evaluation", cache_dir=tmp_path / "cache", progress=False)
    np.testing.assert_array_equal(first.images, second.images)
    assert first.characters == second.characters


def _count_decodes(monkeypatch) -> list[int]:
    calls = [0]
    real = omniglot.decode_drawing

    def counting(*args, **kwargs):
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(omniglot, "decode_drawing", counting)
    return calls


def test_changed_source_rebuilds_the_entry(fake_evaluation, tmp_path: Path, monkeypatch, rng) -> None:
    root, members = fake_evaluation
    cache = tmp_path / "cache"
    load_part(root, "evaluation", cache_dir=cache, progress=False)
    new = {**members, FIRST: png_bytes(np.ones((105, 105), bool))}
    write_zip(root / "images_evaluation.zip", new)
    os.utime(root / "images_evaluation.zip", ns=(1, 1))
    calls = _count_decodes(monkeypatch)
    with pytest.warns(UserWarning, match="stale"):
        rebuilt = load_part(root, "evaluation", cache_dir=cache, progress=False)
    assert calls[0] == 120
    assert (rebuilt.images[0, 0] == 255).all()
    assert len(list(cache.glob("*.npz"))) == 1, "the stale entry is replaced in place"


def test_touched_folder_file_rebuilds(fake_table, tmp_path: Path, rng, monkeypatch) -> None:
    root = write_folder(tmp_path / "unpacked", fake_members("evaluation", rng))
    load_part(root, "evaluation", cache_dir=tmp_path / "cache", progress=False)
    os.utime(root / FIRST, ns=(10**9, 10**9))
    calls = _count_decodes(monkeypatch)
    with pytest.warns(UserWarning, match="stale"):
        load_part(root, "evaluation", cache_dir=tmp_path / "cache", progress=False)
    assert calls[0] == 120


@pytest.mark.parametrize("damage", ["truncate", "flip-pixel", "garbage", "npy"])
def test_corrupt_cache_entry_is_rebuilt(fake_evaluation, tmp_path: Path, monkeypatch, damage: str) -> None:
    root, _ = fake_evaluation
    cache = tmp_path / "cache"
    good = load_part(root, "evaluation", cache_dir=cache, progress=False).images.copy()
    (entry,) = cache.glob("*.npz")
    raw = bytearray(entry.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "flip-pixel":  # the images member is stored uncompressed: find a pixel and flip it
        offset = raw.find(good.tobytes()[:64])
        assert offset > 0
        raw[offset + good.size // 2] ^= 0xFF
    elif damage == "npy":
        buffer = io.BytesIO()
        np.save(buffer, good)
        raw = bytearray(buffer.getvalue())
    else:
        raw = bytearray(b"not an npz at all")
    entry.write_bytes(bytes(raw))
    calls = _count_decodes(monkeypatch)
    with pytest.warns(UserWarning, match="unreadable|corrupt"):
        rebuilt = load_part(root, "evaluation", cache_dir=cache, progress=False)
    assert calls[0] == 120
    np.testing.assert_array_equal(rebuilt.images, good)


def test_cache_writes_atomically_and_leaves_no_temporary_files(fake_evaluation, tmp_path: Path, monkeypatch) -> None:
    root, _ = fake_evaluation
    cache = tmp_path / "cache"
    monkeypatch.setattr(np, "savez", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        load_part(root, "evaluation", cache_dir=cache, progress=False)
    assert list(cache.iterdir()) == []
    monkeypatch.undo()
    for part, table in FAKE_ALPHABETS.items():
        monkeypatch.setitem(OFFICIAL_ALPHABETS, part, table)
    load_part(root, "evaluation", cache_dir=cache, progress=False)
    assert [p.suffix for p in cache.iterdir()] == [".npz"]


def test_cache_folder_resolution(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FEATURE_REUSE_CACHE", str(tmp_path / "env"))
    assert cache_root(tmp_path / "arg") == tmp_path / "arg"
    assert cache_root() == tmp_path / "env"
    monkeypatch.delenv("FEATURE_REUSE_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "feature-reuse"


def test_env_cache_folder_is_used(fake_evaluation, tmp_path: Path, monkeypatch) -> None:
    root, _ = fake_evaluation
    monkeypatch.setenv("FEATURE_REUSE_CACHE", str(tmp_path / "env-cache"))
    load_part(root, "evaluation", progress=False)
    assert len(list((tmp_path / "env-cache").glob("omniglot-evaluation-28px-*.npz"))) == 1


# ----------------------------------------------------------------------------------------------
# The real archives (skipped where absent); decoded once per session into a temporary cache


@pytest.fixture(scope="session")
def real_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not all((OMNIGLOT_DIR / f"images_{p}.zip").exists() for p in ("background", "evaluation")):
        pytest.skip(f"real Omniglot not found in {OMNIGLOT_DIR} (set OMNIGLOT_DIR)")
    cache = tmp_path_factory.mktemp("omniglot-cache")
    for part in ("background", "evaluation"):
        load_part(OMNIGLOT_DIR, part, cache_dir=cache, progress=False)
    return cache


@pytest.fixture(scope="session")
def real_parts(real_cache: Path) -> dict[str, omniglot.OmniglotPart]:
    return {p: load_part(OMNIGLOT_DIR, p, cache_dir=real_cache, progress=False) for p in ("background", "evaluation")}


@pytest.mark.omniglot
def test_real_counts(omniglot_dir: Path, real_parts) -> None:
    background, evaluation = real_parts["background"], real_parts["evaluation"]
    assert background.images.shape == (964, 20, 1, 28, 28)
    assert evaluation.images.shape == (659, 20, 1, 28, 28)
    assert len(set(background.alphabets)) == 30 and len(set(evaluation.alphabets)) == 20
    for part in (background, evaluation):
        ink = (part.images == 255).mean(axis=(2, 3, 4))
        assert set(np.unique(part.images)) == {0, 255}
        assert (ink > 0).all() and (ink < 0.5).all(), "every drawing has some ink on a blank page"


@pytest.mark.omniglot
def test_real_decode_matches_pillow_resize(omniglot_dir: Path, real_parts) -> None:
    """The cached 28x28 arrays equal Pillow's resize of the same PNGs (200 drawings sampled)."""
    rng = np.random.default_rng(7)
    for part_name, part in real_parts.items():
        with zipfile.ZipFile(omniglot_dir / f"images_{part_name}.zip") as archive:
            names = sorted(n for n in archive.namelist() if n.endswith(".png"))
            for i in rng.choice(len(names), 100, replace=False):
                c, d = divmod(int(i), 20)
                data = archive.read(names[i])
                assert names[i].split("/")[1:3] == part.characters[c].split("/")
                np.testing.assert_array_equal(part.images[c, d, 0] == 255, expected_ink(data))
                for size in (14, 84, 105):
                    ink = omniglot.decode_drawing(data, names[i], nearest_indices(size))
                    np.testing.assert_array_equal(ink, expected_ink(data, size))


@pytest.mark.omniglot
def test_real_maml_split(omniglot_dir: Path, real_cache: Path, real_parts) -> None:
    splits = {
        s: load_omniglot(s, root=omniglot_dir, cache_dir=real_cache, progress=False) for s in ("train", "val", "test")
    }
    assert {s: v.images.shape for s, v in splits.items()} == {
        "train": (4400, 20, 1, 28, 28),
        "val": (400, 20, 1, 28, 28),
        "test": (1692, 20, 1, 28, 28),
    }
    # The original procedure, with the global random module as cbfinn/maml calls it.
    characters = [c for part in real_parts.values() for c in part.characters]
    expected = cbfinn_maml_split(characters)
    assert maml_character_split(characters) == expected
    by_name = {n: img for part in real_parts.values() for n, img in zip(part.characters, part.images)}
    for s, split in splits.items():
        assert [n.rsplit("/", 1)[0] for n in split.class_names[::4]] == expected[s]
        assert split.class_names[:4] == tuple(f"{expected[s][0]}/rot{a:03d}" for a in (0, 90, 180, 270))
        c = 4 * 17
        for k in range(4):
            np.testing.assert_array_equal(split.images[c + k], np.rot90(by_name[expected[s][17]], k, axes=(-2, -1)))


@pytest.mark.omniglot
def test_real_lake_splits(omniglot_dir: Path, real_cache: Path) -> None:
    load = lambda split, protocol: load_split(  # noqa: E731
        "omniglot", split, root=omniglot_dir, protocol=protocol, cache_dir=real_cache, progress=False
    )
    train, test = load("train", "lake"), load("test", "lake")
    assert (train.n_classes, test.n_classes) == (964, 659)
    assert len(set(train.groups)) == 30 and len(set(test.groups)) == 20
    val_train, val = load("train", "lake-val"), load("val", "lake-val")
    assert set(val.groups) == set(LAKE_VAL_ALPHABETS)
    assert (val.n_classes, val_train.n_classes) == (158, 806)
    assert set(val.class_names) | set(val_train.class_names) == set(train.class_names)
    assert not set(val.class_names) & set(val_train.class_names)
