"""Metadata never chooses code: a run folder or snapshot that names a model factory outside the
allowlist (``os:system``, ``subprocess:run``) runs nothing, whichever command or function reads it.

Two kinds of check:

- real folders with hostile metadata, given to every command and function that reads a factory
  from disk; the factory's "model" would create a marker file, which must never appear;
- a scan of the source (with :mod:`ast`, over every module found on disk): only
  ``repsim.weights._import_factory`` imports a module by a name it was given, and every call that
  builds a model says where its factory came from (``source=``), so that no path can build one
  from a file without the allowlist seeing it.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from meta.cli import main as meta_main
from meta.run.evaluate import LoadedRun, evaluate_run
from meta.run.snapshot_writer import snapshot_run
from repsim.snapshot_report import report_snapshot
from repsim.weights import UntrustedFactoryError

REPO = Path(__file__).resolve().parents[1]
TINY_RUN = ["--dataset", "synthetic", "--ways", "3", "--shots", "1", "--queries", "5", "--filters", "4"]
TINY_RUN += ["--meta-batch-size", "2", "--inner-steps", "1", "--test-inner-steps", "1", "--val-tasks", "2"]
TINY_RUN += ["--iterations", "2", "--no-progress"]


def hostile_specs(marker: Path) -> dict[str, dict]:
    """Model specs whose "factory" would create ``marker``."""
    return {
        "os:system": {"factory": "os:system", "kwargs": {"command": f"touch {marker}"}},
        "subprocess:run": {"factory": "subprocess:run", "kwargs": {"args": ["touch", str(marker)]}},
    }


@pytest.fixture(scope="module")
def honest(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("honest")
    assert meta_main(["train", *TINY_RUN, "--out", str(root / "run")]) == 0
    assert meta_main(["snapshot", str(root / "run"), "--tasks", "2", "--out", str(root / "snap"), "--no-progress"]) == 0
    return {"run": root / "run", "snap": root / "snap"}


@pytest.fixture(params=["os:system", "subprocess:run"])
def hostile(request, honest, tmp_path) -> dict[str, Path]:
    """Copies of the run and the snapshot whose metadata names a hostile factory."""
    marker = tmp_path / "PWNED"
    spec = hostile_specs(marker)[request.param]
    run, snap = tmp_path / "run", tmp_path / "snap"
    shutil.copytree(honest["run"], run)
    shutil.copytree(honest["snap"], snap)
    for path in (run / "config.json", snap / "manifest.json"):
        record = json.loads(path.read_text())
        record["model"] = spec
        path.write_text(json.dumps(record))
    return {"run": run, "snap": snap, "marker": marker, "factory": request.param}


def test_the_marker_would_be_made_if_the_factory_ran(hostile):
    """The payload is real: calling the factory as the metadata says creates the marker."""
    module, name = hostile["factory"].split(":")
    spec = json.loads((hostile["run"] / "config.json").read_text())["model"]
    getattr(__import__(module), name)(**spec["kwargs"])
    assert hostile["marker"].exists()


def cli(module: str, args: list, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_no_command_runs_a_factory_that_a_folder_names(hostile, tmp_path):
    commands = [
        ("meta", ["evaluate", hostile["run"], "--tasks", "2", "--no-progress"]),
        ("meta", ["snapshot", hostile["run"], "--tasks", "1", "--out", tmp_path / "s", "--no-progress"]),
        ("repsim", ["report", hostile["snap"], "--out", tmp_path / "r", "--no-progress"]),
    ]
    for module, args in commands:
        done = cli(module, args, tmp_path)
        assert done.returncode == 3, (module, args, done.stderr)
        assert (
            f"names the model factory '{hostile['factory']}'" in done.stderr and "not on the allowlist" in done.stderr
        )
        assert not hostile["marker"].exists(), (module, args)
        assert not (tmp_path / "s").exists() and not (tmp_path / "r").exists()


def test_no_function_runs_a_factory_that_a_folder_names(hostile, tmp_path):
    calls = [
        lambda: LoadedRun.open(hostile["run"]).model(),
        lambda: evaluate_run(hostile["run"], tasks=2, progress=False, write=False),
        lambda: snapshot_run(hostile["run"], tmp_path / "s", tasks=1, progress=False),
        lambda: report_snapshot(hostile["snap"], progress=False),
    ]
    for call in calls:
        with pytest.raises(UntrustedFactoryError, match=hostile["factory"]):
            call()
        assert not hostile["marker"].exists()


# --------------------------------------------------------------------------- the source


def package_modules() -> dict[str, ast.Module]:
    """Every module of repsim and meta, parsed, by path."""
    return {
        str(p.relative_to(REPO)): ast.parse(p.read_text())
        for package in ("repsim", "meta")
        for p in sorted((REPO / package).rglob("*.py"))
    }


def calls_named(tree: ast.Module, names: set[str]) -> list[ast.Call]:
    def name(node: ast.expr) -> str | None:
        return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None

    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and name(n.func) in names]


def test_only_the_allowlisted_path_imports_a_module_by_name():
    found = {
        (path, call.lineno)
        for path, tree in package_modules().items()
        for call in calls_named(tree, {"import_module", "__import__"})
    }
    assert [path for path, _ in found] == ["repsim/weights.py"], found
    tree = package_modules()["repsim/weights.py"]
    importing = [f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and calls_named(f, {"import_module"})]
    assert [f.name for f in importing] == ["_import_factory"]
    (check,) = calls_named(importing[0], {"check_factory_allowed"})
    (load,) = calls_named(importing[0], {"import_module"})
    assert check.lineno < load.lineno  # the allowlist is consulted before the import


def test_every_model_building_call_says_where_its_factory_came_from():
    missing = [
        f"{path}:{call.lineno}"
        for path, tree in package_modules().items()
        for call in calls_named(tree, {"build_model", "load_model", "load_weights"})
        if not any(keyword.arg == "source" for keyword in call.keywords)
    ]
    assert missing == [], f"calls without source= (where the factory came from): {missing}"
