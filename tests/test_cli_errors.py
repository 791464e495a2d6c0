"""Both command lines turn bad input into ``error: ...`` and an exit status, never a Python
traceback, and leave no partial output behind.

Most cases call ``main`` in this process (an uncaught exception is what would have printed a
traceback); the ones that need a real process (a file-size limit standing in for a full disk,
a read-only file system) start one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import toy_models

from meta.cli import main as meta_main
from meta.run.state import load_tensors, save_tensors
from repsim.cli import main as repsim_main
from repsim.weights import save_state_dict

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
TINY_RUN = ["--dataset", "synthetic", "--ways", "3", "--shots", "1", "--queries", "5", "--filters", "4"]
TINY_RUN += ["--meta-batch-size", "2", "--inner-steps", "1", "--test-inner-steps", "1", "--val-tasks", "2"]
TINY_RUN += ["--iterations", "2", "--no-progress"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """A trained tiny run, a snapshot of it, two toy checkpoints and inputs, and bad files."""
    root = tmp_path_factory.mktemp("world")
    assert meta_main(["train", *TINY_RUN, "--out", str(root / "run")]) == 0
    assert meta_main(["snapshot", str(root / "run"), "--tasks", "2", "--out", str(root / "snap"), "--no-progress"]) == 0
    save_state_dict(root / "a.safetensors", toy_models.convnet(seed=1).state_dict())
    save_state_dict(root / "b.safetensors", toy_models.convnet(seed=2).state_dict())
    x = np.random.default_rng(0).standard_normal((12, 1, 8, 8)).astype(np.float32)
    np.savez(root / "x.npz", x=x)
    np.savez(root / "x_uint8.npz", x=(x * 50 + 100).clip(0, 255).astype(np.uint8))
    np.savez(root / "x_bool.npz", x=x > 0)
    np.savez(root / "x_rgb.npz", x=np.repeat(x, 3, axis=1))
    (root / "garbage.npz").write_bytes(os.urandom(500))
    (root / "a_file").write_text("not a folder")
    (root / "failing_factory.py").write_text("def build():\n    raise RuntimeError('no GPU here')\n")
    return {"root": root, "run": root / "run", "snap": root / "snap"}


def run_cli(main, argv, capsys) -> tuple[int, str]:
    """Exit status and stderr of ``main(argv)``; an exception escaping ``main`` fails the test."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:  # argparse's own refusals
        code = exit_.code
    return code, capsys.readouterr().err


def compare_args(world, **changes) -> list[str]:
    r = world["root"]
    base = {"--model": "toy_models:convnet", "--a": r / "a.safetensors", "--b": r / "b.safetensors",
            "--inputs": r / "x.npz", "--layers": "conv1,conv2,head", "--out": r / "cmp"}  # fmt: skip
    base.update(changes)
    return ["compare", *[str(v) for kv in base.items() for v in kv], "--no-progress"]


#: Bad invocations of ``repsim`` and a phrase the error must contain (the reason, not any error).
REPSIM_CASES = {
    "inputs missing": (lambda w: compare_args(w, **{"--inputs": w["root"] / "nowhere.npz"}), "does not exist"),
    "inputs garbage": (lambda w: compare_args(w, **{"--inputs": w["root"] / "garbage.npz"}), "not a readable .npz"),
    "out is a file": (lambda w: compare_args(w, **{"--out": w["root"] / "a_file"}), "exists and is not a folder"),
    "device cuda": (lambda w: [*compare_args(w), "--device", "cuda"], "this machine has none"),
    "device bogus": (lambda w: [*compare_args(w), "--device", "gpu0"], "unknown device 'gpu0'"),
    "uint8 inputs": (lambda w: compare_args(w, **{"--inputs": w["root"] / "x_uint8.npz"}), "dtype uint8"),
    "bool inputs": (lambda w: compare_args(w, **{"--inputs": w["root"] / "x_bool.npz"}), "dtype bool"),
    "3-channel inputs": (lambda w: compare_args(w, **{"--inputs": w["root"] / "x_rgb.npz"}), "shape (12, 3, 8, 8)"),
    "misspelt measure option": (
        lambda w: [*compare_args(w), "--measures", "svcca", "--measure-kwargs", '{"svcca": {"kepp": 0.99}}'],
        "svcca has no option 'kepp'",
    ),
    "invalid measure option": (
        lambda w: [*compare_args(w), "--measures", "svcca", "--measure-kwargs", '{"svcca": {"keep": 5.5}}'],
        "svcca option keep",
    ),
    "option for another measure": (
        lambda w: [*compare_args(w), "--measure-kwargs", '{"svcca": {"keep": 0.9}}'],
        "not among the measures",
    ),
    "factory raises": (
        lambda w: compare_args(w, **{"--model": "failing_factory:build"}),
        "RuntimeError: no GPU here",
    ),
    "unknown measure": (lambda w: [*compare_args(w), "--measures", "cca,nonsense"], "unknown measure"),
    "unknown layer": (lambda w: compare_args(w, **{"--layers": "conv9"}), "match no module"),
    "bad model kwargs": (lambda w: compare_args(w, **{"--model-kwargs": "{ways: 5"}), "not valid JSON"),
    "checkpoint missing": (lambda w: compare_args(w, **{"--a": w["root"] / "none.safetensors"}), "does not exist"),
    "report of no snapshot": (lambda w: ["report", w["root"] / "nowhere", "--out", w["root"] / "rep"], "no manifest"),
    "report out is a file": (
        lambda w: ["report", w["snap"], "--out", w["root"] / "a_file"],
        "exists and is not a folder",
    ),
    "report bad confidence": (
        lambda w: ["report", w["snap"], "--out", w["root"] / "rep", "--confidence", "2"],
        "confidence",
    ),
}


@pytest.mark.parametrize("case", sorted(REPSIM_CASES))
def test_repsim_refuses_bad_input_with_an_error_and_writes_nothing(case, world, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(world["root"]))  # failing_factory
    before = sorted(p.name for p in world["root"].iterdir())
    make_args, reason = REPSIM_CASES[case]
    code, err = run_cli(repsim_main, make_args(world), capsys)
    assert code == 2, err
    assert "error:" in err and reason in err and "Traceback" not in err
    assert sorted(p.name for p in world["root"].iterdir()) == before  # no output folder appeared


#: Bad invocations of ``meta`` and a phrase the error must contain.
META_CASES = {
    "train ways 0": (lambda w: ["train", *TINY_RUN, "--ways", "0", "--out", w["root"] / "new"], "ways must be >= 1"),
    "train out is a file": (
        lambda w: ["train", *TINY_RUN, "--out", w["root"] / "a_file"],
        "exists and is not a folder",
    ),
    "train device bogus": (
        lambda w: ["train", *TINY_RUN, "--device", "gpu0", "--out", w["root"] / "new"],
        "unknown device",
    ),
    "train device cuda": (
        lambda w: ["train", *TINY_RUN, "--device", "cuda", "--out", w["root"] / "new"],
        "this machine has none",
    ),
    "train config missing": (
        lambda w: ["train", "--config", w["root"] / "none.toml", "--out", w["root"] / "new"],
        "does not exist",
    ),
    "train other seed on the run": (
        lambda w: ["train", *TINY_RUN, "--seed", "5", "--out", w["run"]],
        "seed: 0 -> 5",
    ),
    "evaluate no run": (lambda w: ["evaluate", w["root"] / "nowhere", "--no-progress"], "no config.json"),
    "evaluate unknown layer": (
        lambda w: ["evaluate", w["run"], "--freeze", "conv9", "--no-progress"],
        "unknown layers",
    ),
    "evaluate device cuda": (
        lambda w: ["evaluate", w["run"], "--device", "cuda", "--no-progress"],
        "this machine has none",
    ),
    "evaluate negative threads": (
        lambda w: ["evaluate", w["run"], "--threads", "-1", "--no-progress"],
        "--threads must be an integer >= 0",
    ),
    "evaluate weights missing": (
        lambda w: ["evaluate", w["run"], "--weights", "iter_999", "--no-progress"],
        "does not exist",
    ),
    "snapshot out is a file": (
        lambda w: ["snapshot", w["run"], "--out", w["root"] / "a_file", "--no-progress"],
        "exists and is not a folder",
    ),
    "snapshot bad task ids": (
        lambda w: ["snapshot", w["run"], "--task-ids", "1,x", "--out", w["root"] / "s2"],
        "--task-ids expects task numbers",
    ),
    "reproduce unknown preset": (
        lambda w: ["reproduce", "--preset", "huge", "--out", w["root"] / "r"],
        "unknown preset",
    ),
    "reproduce out is a file": (
        lambda w: ["reproduce", "--preset", "tiny", "--out", w["root"] / "a_file"],
        "exists and is not a folder",
    ),
    "reproduce no jobs": (
        lambda w: ["reproduce", "--preset", "tiny", "--jobs", "0", "--out", w["root"] / "r"],
        "jobs must be an integer >= 1",
    ),
    "report of no folder": (lambda w: ["report", w["root"] / "nowhere"], "does not exist"),
    "report of a file": (lambda w: ["report", w["root"] / "a_file"], "is not a folder"),
}


@pytest.mark.parametrize("case", sorted(META_CASES))
def test_meta_refuses_bad_input_with_an_error_and_writes_nothing(case, world, capsys):
    before = sorted(p.name for p in world["root"].iterdir())
    config_before = (world["run"] / "config.json").read_bytes()
    make_args, reason = META_CASES[case]
    code, err = run_cli(meta_main, make_args(world), capsys)
    assert code == 2, err
    assert "error:" in err and reason in err and "Traceback" not in err
    assert sorted(p.name for p in world["root"].iterdir()) == before
    assert (world["run"] / "config.json").read_bytes() == config_before


def test_an_edited_checkpoint_state_is_an_error_naming_the_field(world, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(world["run"], run)
    for name in ("checkpoint.safetensors",):  # a 2-iteration run has only one checkpoint
        tensors, metadata = load_tensors(run / name)
        state = json.loads(metadata["state"])
        state["window"] = "edited"
        save_tensors(run / name, tensors, {**metadata, "state": json.dumps(state)})
    code, err = run_cli(meta_main, ["train", *TINY_RUN, "--iterations", "4", "--out", run], capsys)
    assert code == 2 and "field 'window'" in err and "Traceback" not in err


def test_a_damaged_snapshot_is_an_error(world, tmp_path, capsys):
    snap = tmp_path / "snap"
    shutil.copytree(world["snap"], snap)
    inputs = snap / "task_0000" / "inputs.safetensors"
    inputs.write_bytes(inputs.read_bytes()[:100])
    code, err = run_cli(repsim_main, ["report", snap, "--out", tmp_path / "rep", "--no-progress"], capsys)
    assert code == 2 and "damaged safetensors file" in err and not (tmp_path / "rep").exists()
    manifest = json.loads((snap / "manifest.json").read_text())
    del manifest["tasks"][1]["inputs"]
    (snap / "manifest.json").write_text(json.dumps(manifest))
    code, err = run_cli(repsim_main, ["report", snap, "--out", tmp_path / "rep", "--no-progress"], capsys)
    assert code == 2 and "task 1 (id 1) has no 'inputs'" in err and not (tmp_path / "rep").exists()


def cli_process(args: list, *, file_limit: int | None = None) -> subprocess.CompletedProcess:
    """``python -m repsim ARGS`` in a real process, optionally unable to write files larger than
    ``file_limit`` bytes (what a full disk looks like to the writer: EFBIG instead of ENOSPC)."""
    limit = (
        ""
        if file_limit is None
        else "import resource, signal\nsignal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({file_limit}, {file_limit}))\n"
    )
    code = f"{limit}import sys\nfrom repsim.cli import main\nsys.exit(main({[str(a) for a in args]!r}))\n"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(REPO)])}
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_a_full_disk_is_an_error_and_leaves_no_partial_output(world, tmp_path):
    out = tmp_path / "cmp"
    done = cli_process(compare_args(world, **{"--out": out}), file_limit=4096)
    assert done.returncode == 2, done.stderr
    assert "error: input/output error: File too large" in done.stderr and "Traceback" not in done.stderr
    assert not out.exists()  # the outputs written before the failure went with the staging folder


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder nobody can write in: a read-only tmpfs when this process may mount one (root), a
    folder without write permission otherwise; skipped where neither is possible."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot make a read-only folder here: {mounted.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def test_a_read_only_out_is_an_error(world, read_only_folder):
    done = cli_process(compare_args(world, **{"--out": read_only_folder / "cmp"}))
    assert done.returncode == 2 and "error:" in done.stderr and "Traceback" not in done.stderr
    assert not list(read_only_folder.iterdir())
