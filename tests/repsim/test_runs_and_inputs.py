"""`repsim compare` with our runs and anyone's: --a RUN_DIR takes the model from the run's
config.json (still through the allowlist), weights that do not fit say what and where the kwargs
come from, and --inputs is a file, a folder of images or an input set drawn with a seed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from meta.core.models import conv4
from repsim.input_sets import InputRequest, draw, input_sets, load_comparison_inputs, load_inputs, read_image_folder
from repsim.runs import locate_model
from repsim.weights import save_state_dict

REPO = Path(__file__).resolve().parents[2]
SPEC = {"ways": 3, "in_channels": 1, "variant": "omniglot", "image_size": 28, "filters": 4}


def write_run(folder: Path, seed: int, spec: dict | None = None) -> Path:
    """A training run folder as meta writes it (the parts repsim reads): config.json and weights."""
    folder.mkdir(parents=True)
    kwargs = SPEC if spec is None else spec
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = conv4(**kwargs)
    config = {
        "format": "meta-run",
        "version": 1,
        "model": {"factory": "meta.core.models:conv4", "kwargs": kwargs},
        "layers": ["conv1", "conv2", "conv3", "conv4", "head"],
        "data": {"train": {"name": "synthetic/train", "image_shape": [1, 28, 28]}},
    }
    (folder / "config.json").write_text(json.dumps(config))
    save_state_dict(folder / "final.safetensors", model.state_dict())
    (folder / "checkpoints").mkdir()
    save_state_dict(folder / "checkpoints" / "iter_000001.safetensors", model.state_dict())
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    write_run(root / "runs" / "x", seed=0)
    write_run(root / "runs" / "y", seed=1)
    return root


def repsim(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "repsim", *map(str, args)]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_run_folders_need_no_model_options(runs):
    args = ["--a", "runs/x", "--b", "runs/y", "--inputs", "synthetic:test", "--n-inputs", "60"]
    done = repsim("compare", *args, "--layers", "conv*,head", "--out", "cmp", "--no-progress", cwd=runs)
    assert done.returncode == 0, done.stderr
    df = pd.read_csv(runs / "cmp" / "similarity.csv", keep_default_na=False)
    layers = ["conv1", "conv2", "conv3", "conv4", "head"]
    assert list(dict.fromkeys(df["layer_a"])) == layers and len(df) == 5 * 5 * 2
    assert df["value"].notna().all()
    settings = json.loads((runs / "cmp" / "settings.json").read_text())
    assert settings["model_a"]["kwargs"] == SPEC and settings["model_a"]["kwargs_from"] == "runs/x/config.json"
    assert settings["model_b"]["checkpoint"] == "runs/y/final.safetensors"
    source = settings["input_source"]
    assert (source["kind"], source["set"], source["n"], source["seed"]) == ("set", "synthetic:test", 60, 0)
    assert source["available"] == 16 * 20 and source["image_shape"] == [1, 28, 28]


def test_a_file_inside_a_run_takes_the_run_s_spec(runs):
    located = locate_model(runs / "runs" / "x" / "checkpoints" / "iter_000001.safetensors")
    assert located.factory == "meta.core.models:conv4" and located.kwargs == SPEC
    assert located.config == runs / "runs" / "x" / "config.json" and located.label == "x/iter_000001"
    assert locate_model(runs / "runs" / "y").label == "y"


def test_what_is_not_a_run_says_what_to_pass(runs, tmp_path):
    reproduction = tmp_path / "repro"
    (reproduction / "runs").mkdir(parents=True)
    (reproduction / "preset.json").write_text("{}")
    write_run(reproduction / "runs" / "maml_seed0", seed=0)
    with pytest.raises(ValueError, match=r"reproduction folder.*pass two of its runs.*maml_seed0"):
        locate_model(reproduction)
    (tmp_path / "snap").mkdir()
    (tmp_path / "snap" / "manifest.json").write_text("{}")
    with pytest.raises(ValueError, match="adaptation snapshot: report on it with `python -m repsim report"):
        locate_model(tmp_path / "snap")
    with pytest.raises(ValueError, match="folder without a run's config.json"):
        locate_model(tmp_path)
    unfinished = write_run(tmp_path / "unfinished", seed=0)
    (unfinished / "final.safetensors").unlink()
    with pytest.raises(ValueError, match=r"no final.safetensors \(is it still training\?\).*iter_000001"):
        locate_model(unfinished)
    with pytest.raises(ValueError, match="does not exist"):
        locate_model(tmp_path / "nowhere")


def test_a_bare_weights_file_needs_a_model_and_a_wrong_one_is_explained(runs, tmp_path):
    bare = tmp_path / "x.safetensors"
    bare.write_bytes((runs / "runs" / "x" / "final.safetensors").read_bytes())
    common = ["--b", bare, "--inputs", "synthetic:test", "--layers", "conv*", "--out", tmp_path / "o", "--no-progress"]
    alone = repsim("compare", "--a", bare, *common, cwd=tmp_path)
    assert alone.returncode == 2
    assert "is a weights file outside a run folder" in alone.stderr and "--a RUN_DIR" in alone.stderr
    model = ["--model", "meta.core.models:conv4", "--model-kwargs"]
    wrong = repsim("compare", *model, '{"ways": 5}', "--a", bare, *common, cwd=tmp_path)
    assert wrong.returncode == 2, wrong.stderr
    assert "head.weight: checkpoint (3, 4) vs model (5, 64)" in wrong.stderr  # what does not fit
    assert "config.json" in wrong.stderr and "--a RUN_DIR" in wrong.stderr  # where the right kwargs are
    right = repsim("compare", *model, json.dumps(SPEC), "--a", bare, *common, cwd=tmp_path)
    assert right.returncode == 0, right.stderr


def test_a_run_naming_an_untrusted_factory_runs_nothing(runs, tmp_path):
    marker = tmp_path / "PWNED"
    run = write_run(tmp_path / "hostile", seed=0)
    config = json.loads((run / "config.json").read_text())
    config["model"] = {"factory": "os:system", "kwargs": {"command": f"touch {marker}"}}
    (run / "config.json").write_text(json.dumps(config))
    args = ["--a", run, "--b", runs / "runs" / "y", "--inputs", "synthetic:test", "--layers", "conv1"]
    done = repsim("compare", *args, "--out", tmp_path / "o", "--no-progress", cwd=tmp_path)
    assert done.returncode == 3 and "names the model factory 'os:system'" in done.stderr
    assert not marker.exists() and not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- inputs


def test_the_draw_is_seeded_sorted_and_without_replacement():
    first = draw(1000, 50, seed=3)
    assert np.array_equal(first, draw(1000, 50, seed=3)) and not np.array_equal(first, draw(1000, 50, seed=4))
    assert np.all(np.diff(first) > 0) and len(first) == 50
    expected = np.sort(np.random.default_rng(3).choice(1000, size=50, replace=False))
    assert np.array_equal(first, expected)  # the documented formula
    assert np.array_equal(draw(5, 50, seed=0), np.arange(5))
    with pytest.raises(ValueError, match="positive integer"):
        draw(5, 0, seed=0)


def _write_image(path: Path, size: tuple[int, int], mode: str, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color=value if mode == "L" else (value, value // 2, 0)).save(path)


def test_a_folder_of_images_is_resized_scaled_and_drawn(tmp_path):
    for i in range(6):
        _write_image(tmp_path / "imgs" / f"sub{i % 2}" / f"{i}.png", (40, 30), "L", 10 * i)
    _write_image(tmp_path / "imgs" / "rgb.jpg", (40, 30), "RGB", 200)
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    loaded = read_image_folder(tmp_path / "imgs", InputRequest(image_shape=(1, 28, 28)))
    assert loaded.inputs.shape == (7, 1, 28, 28) and loaded.inputs.dtype == torch.float32
    assert float(loaded.inputs.max()) <= 1.0 and loaded.source["available"] == 7
    assert loaded.inputs[0].mean().item() == pytest.approx(200 * 0.299 / 255 + 100 * 0.587 / 255, abs=0.01)  # rgb.jpg
    assert loaded.inputs[1].mean().item() == pytest.approx(0.0, abs=1e-6)  # sub0/0.png
    drawn = read_image_folder(tmp_path / "imgs", InputRequest(3, seed=1, image_shape=(3, 8, 8)))
    assert drawn.inputs.shape == (3, 3, 8, 8) and (drawn.source["n"], drawn.source["seed"]) == (3, 1)
    as_is = read_image_folder(tmp_path / "imgs")
    assert as_is.inputs.shape == (7, 3, 30, 40)  # one RGB image: three channels for all
    _write_image(tmp_path / "imgs" / "big.png", (64, 64), "L", 0)
    with pytest.raises(ValueError, match="different sizes.*--image-size"):
        read_image_folder(tmp_path / "imgs")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no PNG or JPEG"):
        read_image_folder(tmp_path / "empty")


def test_files_keyword_inputs_and_input_sets(tmp_path):
    x = np.arange(24, dtype=np.float32).reshape(4, 6)
    np.savez(tmp_path / "x.npz", x=x, y=np.arange(4))
    assert torch.equal(load_inputs(tmp_path / "x.npz"), torch.from_numpy(x))
    torch.save(torch.from_numpy(x), tmp_path / "x.pt")
    assert torch.equal(load_inputs(tmp_path / "x.pt"), torch.from_numpy(x))
    np.savez(tmp_path / "tokens.npz", input_ids=np.ones((4, 3), np.int64), attention_mask=np.ones((4, 3), np.int64))
    keyword = load_inputs(tmp_path / "tokens.npz")
    assert sorted(keyword) == ["attention_mask", "input_ids"] and keyword["input_ids"].shape == (4, 3)
    two = load_comparison_inputs(tmp_path / "x.npz", InputRequest(n=2))
    assert torch.equal(two.inputs, torch.from_numpy(x[draw(4, 2, seed=0)])) and two.source["kind"] == "file"
    assert {"glyphs", "omniglot", "miniimagenet", "synthetic"} <= set(input_sets())
    with pytest.raises(ValueError, match=r"does not exist: pass an .npz.*installed: \[.*'glyphs'"):
        load_comparison_inputs("glyph:test")
    with pytest.raises(ValueError, match="does not exist"):
        load_comparison_inputs(tmp_path / "nowhere.npz")


def test_the_npz_recipe_of_the_docs_works(tmp_path):
    """The three lines in repsim.input_sets' docstring (and the README) make inputs compare reads."""
    import repsim.input_sets

    for i in range(3):
        _write_image(tmp_path / "my_images" / f"{i}.png", (50, 40), "L", 60 * i)
    doc = repsim.input_sets.__doc__
    recipe = doc[doc.index("    import glob") : doc.index("Imports:")]
    code = "\n".join(line.strip() for line in recipe.strip().splitlines())
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True, timeout=120)
    x = load_inputs(tmp_path / "my_inputs.npz")
    assert x.shape == (3, 1, 28, 28) and x.dtype == torch.float32 and float(x.max()) == pytest.approx(120 / 255)
