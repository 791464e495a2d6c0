"""A run folder has one writer, keeps its last two checkpoints, and records how it was computed:
the folder lock with real processes, the fall-back to the previous checkpoint, an edited
checkpoint refused by name, compute segments, and a finished run left untouched by a rerun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_train import REPO, assert_bitwise_equal, tiny_config, weights

from meta.run.lock import FolderInUseError, FolderLock
from meta.run.state import CheckpointError, load_checkpoint, load_tensors, save_tensors
from meta.run.train import train


@pytest.fixture(autouse=True)
def one_thread():
    """Runs here change torch's thread count; the next test in this process gets one again."""
    yield
    torch.set_num_threads(1)


HOLD_LOCK = """
import sys, time
from meta.run.lock import FolderLock
FolderLock(sys.argv[1], "train").acquire()
print("locked", flush=True)
time.sleep(600)
"""


def hold_lock(folder: Path) -> subprocess.Popen:
    """A real process that takes the folder's lock and keeps it until killed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(folder)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_writer_is_refused_naming_the_holder_and_a_killed_holder_blocks_nothing(tmp_path):
    holder = hold_lock(tmp_path)
    try:
        with pytest.raises(FolderInUseError, match=f"in use by process {holder.pid} \\(train\\)"):
            FolderLock(tmp_path, "snapshot").acquire()
        with pytest.raises(FolderInUseError, match=str(holder.pid)):
            train(tiny_config(), tmp_path)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (tmp_path / ".lock").is_file()  # left behind by the killed process: stale, and harmless
    result = train(tiny_config(iterations=2), tmp_path)
    assert result.iterations == 2


def test_two_train_commands_on_one_folder_leave_one_consistent_run(tmp_path):
    """Seeds 0 and 1 started on the same --out: the second is refused while the first trains;
    the folder ends with the first run's weights under the first run's config."""
    out = tmp_path / "run"
    base = ["--dataset", "synthetic", "--ways", "3", "--shots", "1", "--queries", "5", "--filters", "4"]
    base += ["--meta-batch-size", "2", "--inner-steps", "1", "--test-inner-steps", "1", "--val-tasks", "2"]
    base += ["--iterations", "400", "--checkpoint-every", "50", "--no-progress", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def start(seed: int) -> subprocess.Popen:
        args = [sys.executable, "-m", "meta", "train", *base, "--seed", str(seed)]
        return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    first = start(0)
    deadline = time.monotonic() + 120
    while not (out / "config.json").is_file():
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.05)
    second = start(1)
    _, err = second.communicate(timeout=300)
    assert second.returncode == 2, err
    assert f"in use by process {first.pid}" in err and "Traceback" not in err
    assert first.wait(timeout=600) == 0, first.stderr.read()
    assert json.loads((out / "config.json").read_text())["config"]["seed"] == 0
    reference = tmp_path / "alone"
    subprocess.run(
        [sys.executable, "-m", "meta", "train", *base[:-1], str(reference), "--seed", "0"],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
    )
    assert_bitwise_equal(weights(out / "final.safetensors"), weights(reference / "final.safetensors"))


def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    reference = tmp_path / "reference"
    train(tiny_config(checkpoint_every=2), reference)
    out = tmp_path / "run"
    train(tiny_config(checkpoint_every=2, iterations=6), out)
    assert load_checkpoint(out / "checkpoint.prev.safetensors")["iteration"] == 4
    data = (out / "checkpoint.safetensors").read_bytes()
    (out / "checkpoint.safetensors").write_bytes(data[: len(data) // 2])  # cut in the middle
    with pytest.warns(UserWarning, match="resuming from the one before"):
        result = train(tiny_config(checkpoint_every=2), out)
    assert result.resumed_from == 4
    assert_bitwise_equal(weights(out / "final.safetensors"), weights(reference / "final.safetensors"))


def test_an_edited_checkpoint_is_refused_by_name(tmp_path):
    train(tiny_config(iterations=2, checkpoint_every=1), tmp_path)
    tensors, metadata = load_tensors(tmp_path / "checkpoint.safetensors")
    state = json.loads(metadata["state"])
    state["iteration"] = "two"
    save_tensors(tmp_path / "edited.safetensors", tensors, {**metadata, "state": json.dumps(state)})
    with pytest.raises(CheckpointError, match="field 'iteration'"):
        load_checkpoint(tmp_path / "edited.safetensors", {"iteration": int})
    (tmp_path / "edited.safetensors").replace(tmp_path / "checkpoint.safetensors")
    (tmp_path / "checkpoint.prev.safetensors").unlink()
    with pytest.raises(CheckpointError, match="field 'iteration'.*no earlier checkpoint"):
        train(tiny_config(iterations=4, checkpoint_every=1), tmp_path)


def test_a_finished_run_rerun_with_other_compute_settings_is_left_as_it_is(tmp_path):
    train(tiny_config(), tmp_path)
    before = (tmp_path / "config.json").read_bytes()
    train(tiny_config(threads=2, chunk=3), tmp_path)
    assert (tmp_path / "config.json").read_bytes() == before


def test_a_resume_with_other_compute_settings_is_recorded_as_a_segment(tmp_path):
    train(tiny_config(iterations=4), tmp_path)
    first = json.loads((tmp_path / "config.json").read_text())["segments"]
    assert [(s["from_iteration"], s["threads"], s["chunk"]) for s in first] == [(0, 1, 4)]
    with pytest.warns(UserWarning, match="threads: 1 -> 2.*new segment"):
        train(tiny_config(threads=2), tmp_path)
    segments = json.loads((tmp_path / "config.json").read_text())["segments"]
    assert [(s["from_iteration"], s["threads"]) for s in segments] == [(0, 1), (4, 2)]
    train(tiny_config(threads=2, iterations=10), tmp_path)  # same settings: no new segment
    assert len(json.loads((tmp_path / "config.json").read_text())["segments"]) == 2


def test_start_up_cleanup_removes_only_temporaries_whose_writer_is_gone(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)
    dead = tmp_path / f".config.json.{dead_pid}.a1b2c3.tmp"
    alive = tmp_path / f".metrics.json.{os.getpid()}.d4e5f6.tmp"  # a writer that is still running
    old_style = tmp_path / ".final.safetensors.x9y8z7.tmp"  # no writer recorded: from an older version
    for path in (dead, alive, old_style):
        path.write_bytes(b"partial")
    train(tiny_config(iterations=2), tmp_path)
    assert not dead.exists() and not old_style.exists()
    assert alive.read_bytes() == b"partial"
