"""`meta evaluate RUN --episodes FILE`: test tasks fixed by someone else, from a CSV of images.

The files are generated from the synthetic test split's fixed tasks, saved as PNGs the way a user
would save them (dark ink on white), so that evaluating on the file must give exactly the
per-task accuracies of the fixed tasks, for every procedure; then the bad files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_train import tiny_config

from meta.cli import main
from meta.data.episode_files import EpisodeFileError, read_episode_file
from meta.data.synthetic import synthetic_split
from meta.run.config import resolve
from meta.run.evaluate import evaluate_run, evaluation_tasks
from meta.run.train import train

TASKS = 6


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "maml"
    train(tiny_config(iterations=4), out)
    return out


def fixed(config_run: Path):
    from meta.run.evaluate import LoadedRun

    loaded = LoadedRun.open(config_run)
    return evaluation_tasks(loaded.config, synthetic_split("test"), TASKS)


def write_png(path: Path, image: np.ndarray) -> str:
    """A (1, H, W) ink-high image as a user's PNG: dark ink on white (255 - v)."""
    Image.fromarray(255 - np.round(image[0] * 255).astype(np.uint8)).save(path)
    return path.name


def write_file(folder: Path, episodes, labels=lambda task, y: str(y), rows_of=None) -> Path:
    """An episode CSV of ``episodes`` (support then query rows), labels renamed by ``labels``."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [("task", "role", "label", "path")]
    for t in range(len(episodes)):
        episode = episodes[t]
        for role, xs, ys in (
            ("support", episode.support_x, episode.support_y),
            ("query", episode.query_x, episode.query_y),
        ):
            for i, (x, y) in enumerate(zip(xs.numpy(), ys.tolist())):
                name = write_png(folder / f"t{t}_{role}_{i}.png", x)
                rows.append((f"task-{t}", role, labels(t, y), name))
    if rows_of is not None:
        rows = rows_of(rows)
    path = folder / "episodes.csv"
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


@pytest.fixture(scope="module")
def episodes_csv(run, tmp_path_factory) -> Path:
    return write_file(tmp_path_factory.mktemp("file"), fixed(run))


@pytest.mark.parametrize("kwargs", [{}, {"nil": True}, {"freeze": "conv1-4"}, {"ablation": "freezing"}])
def test_every_procedure_gives_the_fixed_tasks_accuracies(run, episodes_csv, kwargs):
    on_file = evaluate_run(run, episodes_file=episodes_csv, progress=False, write=False, **kwargs)
    on_split = evaluate_run(run, tasks=TASKS, data=synthetic_split("test"), progress=False, write=False, **kwargs)
    assert [r.per_task for r in on_file.rows] == [r.per_task for r in on_split.rows]
    assert on_file.task_set["count"] == TASKS and on_file.task_set["tasks"][0] == "task-0"


def test_the_command_line_writes_per_task_accuracies(run, episodes_csv, capsys):
    assert main(["evaluate", str(run), "--episodes", str(episodes_csv)]) == 0
    written = json.loads(next((run / "eval").glob("file-episodes_final_*.json")).read_text())
    assert len(written["per_task"]) == TASKS and written["task_set"]["sha256"]
    assert written["task_set"]["labels"][0] == {"0": 0, "1": 1, "2": 2}
    assert main(["evaluate", str(run), "--episodes", str(episodes_csv), "--tasks", "3"]) == 2
    assert "drop --tasks" in capsys.readouterr().err


def test_labels_that_are_not_0_to_n_minus_1_are_mapped_in_sorted_order(run, tmp_path):
    names = ["cat", "dog", "emu"]
    path = write_file(tmp_path / "named", fixed(run), labels=lambda t, y: names[y])
    numbers = write_file(tmp_path / "numbered", fixed(run), labels=lambda t, y: str(10 * y + 7))
    result = evaluate_run(run, episodes_file=path, progress=False, write=False)
    assert result.task_set["labels"][0] == {"cat": 0, "dog": 1, "emu": 2}
    assert read_episode_file(numbers, dataset="synthetic", image_size=28, channels=1).label_maps[0] == {
        "7": 0,
        "17": 1,
        "27": 2,
    }  # numerically, not "17" < "27" < "7"
    reference = evaluate_run(run, tasks=TASKS, data=synthetic_split("test"), progress=False, write=False)
    assert result.result.per_task == reference.result.per_task


def test_another_n_works_with_nil_and_is_refused_by_the_head(run, tmp_path):
    def drop_label_2(rows):
        return [r for r in rows if r[2] != "2"]

    path = write_file(tmp_path / "two_way", fixed(run), rows_of=drop_label_2)
    nil = evaluate_run(run, episodes_file=path, nil=True, progress=False, write=False)
    assert nil.ways == 2 and len(nil.result.per_task) == TASKS
    with pytest.raises(ValueError, match="2-way, but the run's head has 3 outputs.*NIL"):
        evaluate_run(run, episodes_file=path, progress=False, write=False)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda rows: rows[:1] + [(rows[1][0], "train", *rows[1][2:])] + rows[2:], "unknown role 'train'"),
        (lambda rows: rows[:1] + [(*rows[1][:3], "missing.png")] + rows[2:], "image 'missing.png' not found"),
        (
            lambda rows: [r for r in rows if not (r[0] == "task-1" and r[1] == "support")],
            "task 'task-1' has no support",
        ),
        (lambda rows: [r for r in rows if r[:2] != ("task-2", "query")], "task 'task-2' has no query"),
        (lambda rows: [("task", "role", "class", "path"), *rows[1:]], "header must be task,role,label,path"),
        (lambda rows: [r for r in rows if not (r[1] == "support" and r[2] == "1")], "labels \\['1'\\] that have no"),
    ],
)
def test_bad_files_are_refused_by_name(run, tmp_path, edit, message):
    path = write_file(tmp_path / "bad", fixed(run), rows_of=edit)
    with pytest.raises(EpisodeFileError, match=message):
        evaluate_run(run, episodes_file=path, progress=False, write=False)


def test_an_unreadable_image_is_named(run, tmp_path):
    path = write_file(tmp_path / "broken", fixed(run))
    (tmp_path / "broken" / "t0_query_0.png").write_bytes(b"not a png")
    with pytest.raises(EpisodeFileError, match="line .*t0_query_0.png: not a readable image"):
        evaluate_run(run, episodes_file=path, progress=False, write=False)


def test_the_run_keeps_its_test_queries(run):
    config, _ = resolve(tiny_config(iterations=4))
    assert config.test_queries == 5  # the tiny runs' fixed tasks, which the files reproduce


def test_an_omniglot_png_decodes_as_the_archive_loader_decodes_it(tmp_path):
    from meta.data.episode_files import decode_for
    from meta.data.omniglot import decode_drawing, nearest_indices

    bits = np.random.default_rng(0).random((105, 105)) < 0.7
    Image.fromarray(bits).convert("1").save(tmp_path / "drawing.png")
    loader = decode_drawing((tmp_path / "drawing.png").read_bytes(), "drawing", nearest_indices(28))
    external = decode_for("omniglot")(tmp_path / "drawing.png", 28)
    assert external.shape == (1, 28, 28) and np.array_equal(external[0], loader.astype(np.uint8) * 255)
