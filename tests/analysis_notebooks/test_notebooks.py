"""The analysis notebooks: one per table and figure of the paper, stored without outputs, each
reading the reproduction folder from REPRODUCE_DIR, and each running top to bottom (nbclient, a
fresh kernel on this interpreter) on a fake reproduction folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

TESTS = Path(__file__).resolve().parents[1]
NOTEBOOKS = TESTS.parent / "analysis_notebooks"
sys.path.insert(0, str(NOTEBOOKS))
import run_all  # noqa: E402
from fake_reproduction import fake_tables, write_fake_reproduction  # noqa: E402

from meta.study import paper  # noqa: E402
from meta.study.findings import FINDINGS  # noqa: E402

NAMES = [path.stem for path in sorted(NOTEBOOKS.glob("*.ipynb"))]


def _read(name: str):
    return nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)


@pytest.fixture(scope="module")
def reproduction(tmp_path_factory) -> Path:
    return write_fake_reproduction(tmp_path_factory.mktemp("reproduction"))


@pytest.fixture(scope="module")
def kernel_dirs(tmp_path_factory) -> Path:
    return run_all.write_kernelspec(tmp_path_factory.mktemp("kernels"))


def test_one_notebook_per_table_and_figure_of_the_paper():
    assert sorted(NAMES) == sorted([*paper.NAMES, "analyses"])  # analyses.ipynb: the further analyses
    assert run_all.notebooks() == [NOTEBOOKS / f"{name}.ipynb" for name in NAMES]
    with pytest.raises(ValueError, match="no notebook named table9"):
        run_all.notebooks(["table9"])


@pytest.mark.parametrize("name", NAMES)
def test_notebooks_are_stored_without_outputs(name):
    notebook = _read(name)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


def test_every_notebook_starts_with_the_same_setup_cell():
    first = {_read(name).cells[0].source for name in NAMES}
    assert len(first) == 1 and "REPRODUCE_DIR" in first.pop()


def _run_setup_cell(monkeypatch, value: str | None) -> dict:
    if value is None:
        monkeypatch.delenv("REPRODUCE_DIR", raising=False)
    else:
        monkeypatch.setenv("REPRODUCE_DIR", value)
    namespace: dict = {}
    exec(compile(_read(NAMES[0]).cells[0].source, "setup-cell", "exec"), namespace)
    return namespace


def test_setup_cell_fails_clearly_without_a_folder(monkeypatch, tmp_path):
    with pytest.raises(RuntimeError, match="REPRODUCE_DIR is not set"):
        _run_setup_cell(monkeypatch, None)
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        _run_setup_cell(monkeypatch, str(tmp_path / "nowhere"))


def test_setup_cell_loads_the_tables(monkeypatch, reproduction):
    namespace = _run_setup_cell(monkeypatch, str(reproduction))
    assert set(namespace["tables"]) == set(fake_tables())  # every CSV the fake reproduction writes
    assert [f.key for f in namespace["findings"]] == [spec.key for spec in FINDINGS]  # Tables 3 and 5 included


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_on_a_reproduction_folder(name, reproduction, kernel_dirs):
    executed = run_all.run_notebook(NOTEBOOKS / f"{name}.ipynb", reproduction, kernel_dirs, timeout=120)
    outputs = [output for cell in executed.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the figure was drawn
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "<table" in html  # our table (and the paper's) shown as DataFrames


def test_run_all_writes_executed_copies_and_reports_bad_folders(reproduction, tmp_path, capsys):
    assert run_all.main([str(tmp_path / "nowhere")]) == 1
    assert "is not a folder" in capsys.readouterr().err
    written = run_all.run_all(reproduction, names=["table4_nil"], out_dir=tmp_path / "executed", timeout=120)
    assert written == [tmp_path / "executed" / "table4_nil.ipynb"]
    executed = nbformat.read(written[0], as_version=4)
    assert any(cell.outputs for cell in executed.cells if cell.cell_type == "code")
    assert sorted(p.name for p in (tmp_path / "executed").iterdir()) == ["table4_nil.ipynb"]
    assert os.environ.get("REPRODUCE_DIR") is None  # the kernels got it; this process's environment is untouched
