"""Progress draws bars only on a terminal; a log gets one line per stage (repsim.progress), and
every progress display of repsim goes through it."""

from __future__ import annotations

import doctest
import importlib
import io
import sys

import numpy as np
import pytest
import toy_models
from tqdm.auto import tqdm

from repsim.compare import compare_models
from repsim.measures import linear_cka, minibatch_cka
from repsim.progress import StageLine, is_terminal, progress_bar


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_a_log_gets_one_line_per_stage_without_carriage_returns():
    log = io.StringIO()
    for _ in progress_bar(range(5000), desc="forward", unit="batch", stream=log):
        pass
    with progress_bar(total=3, desc="tasks", unit="task", stream=log) as bar:
        for _ in range(3):
            bar.update(1)
        bar.set_postfix(loss=0.25)
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and len(lines) == 2
    assert lines[0].startswith("forward: 5000/5000 batch in ") and lines[0].endswith("s")
    assert lines[1].startswith("tasks: 3/3 task in ") and lines[1].endswith("(loss=0.25)")


def test_a_terminal_gets_a_tqdm_bar():
    screen = Terminal()
    bar = progress_bar(range(50), desc="forward", stream=screen, mininterval=0)
    assert isinstance(bar, tqdm)
    assert sum(bar) == sum(range(50))
    assert "\r" in screen.getvalue() and "forward" in screen.getvalue() and "50/50" in screen.getvalue()


def test_disabled_progress_writes_nothing_on_either():
    for stream in (io.StringIO(), Terminal()):
        for _ in progress_bar(range(10), desc="quiet", enabled=False, stream=stream):
            pass
        with progress_bar(total=2, desc="quiet", enabled=False, stream=stream) as bar:
            bar.update(2)
        assert stream.getvalue() == ""


def test_stage_line_writes_once_and_counts_what_was_done():
    log = io.StringIO()
    line = StageLine(range(10), desc="stopped", stream=log, clock=lambda: 0.0)
    for i in line:
        if i == 3:
            break
    line.close()
    assert log.getvalue() == "stopped: 3/10 it in 0.0s\n"  # closed by the loop's end, not again
    with pytest.raises(TypeError, match="update"):
        iter(StageLine(desc="by hand", stream=log)).__next__()
    assert not is_terminal(io.StringIO()) and not is_terminal(object()) and is_terminal(Terminal())


def test_compare_logs_one_line_per_stage_when_stderr_is_not_a_terminal(capsys):
    a, b = toy_models.mlp(seed=1), toy_models.mlp(seed=2)
    compare_models(a, b, toy_models.randn(40, 6), layers_a=["fc1", "fc2"], batch_size=8, measures="cka,cca")
    err = capsys.readouterr().err
    assert "\r" not in err
    assert err.splitlines() == [
        line for line in err.splitlines() if line.split(":")[0] in ("model A forward", "model B forward")
    ]
    assert [line.split(" in ")[0] for line in err.splitlines()] == [
        "model A forward: 5/5 batch",
        "model B forward: 5/5 batch",
    ]
    compare_models(a, b, toy_models.randn(40, 6), layers_a="fc*", measures="cka", progress=False)
    assert capsys.readouterr().err == ""


def test_minibatch_cka_takes_the_helper_as_its_progress():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((64, 5)), rng.standard_normal((64, 4))
    log = io.StringIO()

    def shown(batches, desc):
        return progress_bar(batches, desc=desc, unit="batch", stream=log)

    assert float(minibatch_cka(x, y, batch_size=16, progress=shown)) == float(minibatch_cka(x, y, batch_size=16))
    assert log.getvalue().startswith("minibatch CKA: 4 batch in ")
    with pytest.raises(ValueError, match="progress must be None or a wrapper"):
        minibatch_cka(x, y, progress=True)
    assert float(linear_cka(x, y)) > 0


def test_no_module_of_repsim_uses_tqdm_but_the_helper():
    from pathlib import Path

    root = Path(importlib.import_module("repsim").__file__).parent
    users = sorted(str(p.relative_to(root)) for p in root.rglob("*.py") if "tqdm" in p.read_text())
    assert users == ["progress.py"]


@pytest.mark.parametrize(
    "module_name",
    ["repsim.progress", "repsim.capture", "repsim.distributed", "repsim.input_sets", "repsim.measures.inputs"],
)
def test_docstring_examples_pass(module_name):
    report = io.StringIO()
    runner = doctest.DocTestRunner()
    tests = doctest.DocTestFinder().find(importlib.import_module(module_name))
    failed = sum(runner.run(test, out=report.write).failed for test in tests)
    assert failed == 0, report.getvalue()
    assert sys.modules[module_name]
