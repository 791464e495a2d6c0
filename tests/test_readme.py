"""Every command of the README runs as written, in order, in one fresh folder, as a newcomer would
run them, on small budgets.

How the README is read: its fenced ``bash`` blocks give one command per line (``&&`` chains are
split into their parts), its fenced ``python`` blocks are run as scripts. Each command is either
run, after the budget rules of :data:`BUDGETS` (fewer iterations, tasks and inputs; the built-in
``glyphs`` set standing in for the real Omniglot, which a fresh clone does not have), or skipped
for a reason in :data:`SKIPPED` (the environment the test already runs in, the suite itself, and
what ``.ci/run`` runs on the full budget). Every rule that changes a command says why.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```(bash|python)\n(.*?)^```", re.S | re.M)

#: Commands not run here, by their start, with the reason.
SKIPPED: dict[str, str] = {
    "python3 -m venv": "the test runs in the environment this makes",
    ". .venv/bin/activate": "the test runs in the environment this activates",
    "pip install": ".ci/run installs the package with these extras",
    "python -m pytest": "this is the suite the test belongs to",
    "python analysis_notebooks/run_all.py": ".ci/run runs it on the quick preset's output, and"
    " tests/analysis_notebooks runs every notebook",
}

#: Budget rules: (why, pattern, replacement or function), applied in order to every command run.
BUDGETS: tuple[tuple[str, str, str | Callable[[re.Match[str]], str]], ...] = (
    ("a fresh clone has no real Omniglot: the built-in glyphs stand in", r"--dataset omniglot", "--dataset glyphs"),
    (
        "the RL presets take hours: the tiny-rl preset runs the same pipeline",
        r"--preset [\w-]*rl\b",
        "--preset tiny-rl",
    ),
    (
        "the presets take minutes to days: the tiny preset runs the same pipeline",
        r"--preset (quick|omniglot|paper)\b",
        "--preset tiny",
    ),
    ("the glyphs and the tiny preset need no data folder", r" --data-root \S+", ""),
    ("a few iterations show the command works", r"--iterations \d+", "--iterations 2"),
    ("a few fixed tasks", r"--tasks \d+", "--tasks 3"),
    ("a smaller meta-batch", r"--meta-batch-size \d+", "--meta-batch-size 4"),
)
#: Options added to commands that train, to keep them to seconds.
EXTRA: tuple[tuple[str, re.Pattern[str], str], ...] = (
    (
        "small RL tasks",
        re.compile(r"meta train .*-trpo"),
        " --meta-batch-size 2 --trajectories 2 --horizon 10 --test-tasks 2",
    ),
    ("a narrow conv4", re.compile(r"meta train (?!.*-trpo)"), " --filters 8 --meta-batch-size 4 --val-tasks 2"),
    ("fewer drawn inputs", re.compile(r"repsim compare .*--inputs \w+:\w+"), " --n-inputs 60"),
)


def readme_blocks(text: str) -> list[tuple[str, str]]:
    """``(language, body)`` of every fenced bash or python block, in order."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(text)]


def bash_commands(body: str) -> list[str]:
    """The commands of a bash block: a line each (``\\`` continues a line), ``&&`` chains split."""
    lines = body.replace("\\\n", " ").splitlines()
    return [part.strip() for line in lines if line.strip() for part in line.split("&&")]


def skip_reason(command: str) -> str | None:
    """Why ``command`` is not run here, or ``None``."""
    return next((why for start, why in SKIPPED.items() if command.startswith(start)), None)


def on_budget(command: str) -> str:
    """``command`` with the budget rules of :data:`BUDGETS` and :data:`EXTRA` applied."""
    for _, pattern, replacement in BUDGETS:
        command = re.sub(pattern, replacement, command)
    for _, pattern, extra in EXTRA:
        if pattern.search(command):
            command += extra
    return command


def run(argv: list[str], cwd: Path, what: str) -> None:
    """Run ``argv`` in ``cwd`` with this environment's interpreter and tools first on the PATH."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    env = {**os.environ, "PATH": path, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"README: {what}\nexit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"


def own_images(folder: Path) -> None:
    """Three PNGs of different sizes in ``folder/my_images``: the README's ``.npz`` recipe reads
    "your own images", which a fresh folder does not have."""
    rng = np.random.default_rng(0)
    (folder / "my_images").mkdir()
    for i, size in enumerate(((40, 40), (28, 30), (64, 50))):
        Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8)).save(folder / "my_images" / f"{i}.png")


def test_the_rules_change_what_they_say():
    command = "python -m meta train --algorithm maml --dataset omniglot --data-root ../x --iterations 6000 --out r"
    assert on_budget(command) == (
        "python -m meta train --algorithm maml --dataset glyphs --iterations 2 --out r --filters 8 --meta-batch-size 4"
        " --val-tasks 2"
    )
    quick = "python -m meta reproduce --preset quick --out q"
    assert on_budget(quick) == "python -m meta reproduce --preset tiny --out q"
    assert on_budget("meta reproduce --preset paper-rl --out r") == "meta reproduce --preset tiny-rl --out r"
    assert [" ".join(c.split()) for c in bash_commands("a && b \\\n  c\n\nd\n")] == ["a", "b c", "d"]
    assert skip_reason("pip install -e .") and skip_reason("python -m meta report x") is None


@pytest.mark.slow
def test_every_readme_command_runs_as_written(tmp_path):
    own_images(tmp_path)
    ran, skipped = [], []
    for language, body in readme_blocks((REPO / "README.md").read_text()):
        if language == "python":
            run([sys.executable, "-c", body], tmp_path, body.splitlines()[0])
            ran.append(body)
            continue
        for command in bash_commands(body):
            if skip_reason(command):
                skipped.append(command)
                continue
            run(["bash", "-c", on_budget(command)], tmp_path, command)
            ran.append(command)
    assert len(ran) >= 20 and len(skipped) >= 5, (ran, skipped)
    assert (tmp_path / "results" / "quick" / "report.html").is_file()
    assert (tmp_path / "cmp" / "similarity.csv").is_file() and (tmp_path / "my_inputs.npz").is_file()
