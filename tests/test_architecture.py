"""The house plan, checked on the code: which room may import which, plotting that never
computes a measure, module size, and a docstring that says what each module holds and imports.

The imports are read with :mod:`ast` from every module of ``repsim`` and ``meta`` (found on disk,
no list kept here), including imports inside functions: a lazy import is still a dependency.

The directions (docs/layout.md, ``../shared/DESIGN.md``):

- ``repsim`` never imports ``meta``;
- ``meta.data`` imports nothing else of ``meta`` (but the leaf ``meta.validation``);
- ``meta.core`` imports only ``meta.data``; ``meta.rl`` only ``meta.core``;
- ``meta.run`` imports only ``meta.core``, ``meta.data``, ``meta.rl`` and ``repsim``;
- ``meta.study`` sits on top; ``meta.cli`` (the command line) may import everything;
- ``meta.validation`` is a leaf: it imports nothing of ``meta`` or ``repsim``;
- plotting never computes a measure: ``repsim.plots``, ``repsim.tables`` and
  ``meta.study.figures`` import nothing that computes similarity;
- inside ``repsim``: ``repsim.measures`` imports nothing of ``repsim`` outside it, and
  ``repsim.io`` and ``repsim.tensor_files`` are leaves.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("repsim", "meta")
MAX_LINES = 500

#: The rooms each room may import (besides itself). ``leaf``: :mod:`meta.validation`.
ALLOWED: dict[str, frozenset[str]] = {
    "repsim": frozenset(),
    "leaf": frozenset(),
    "data": frozenset({"leaf", "repsim"}),
    "core": frozenset({"data", "leaf"}),
    "rl": frozenset({"core", "leaf"}),
    "run": frozenset({"core", "data", "rl", "repsim", "leaf"}),
    "study": frozenset({"core", "data", "rl", "run", "repsim", "leaf", "meta"}),
    "cli": frozenset({"core", "data", "rl", "run", "study", "repsim", "leaf", "meta"}),
    "meta": frozenset(),
}
#: Rules inside repsim: these modules may import only the listed parts of repsim.
REPSIM_INNER: dict[str, tuple[str, ...]] = {
    "repsim.measures": ("repsim.measures",),
    "repsim.io": (),
    "repsim.tensor_files": (),
}
#: Modules that draw or tabulate results, and the modules that compute similarity.
PLOTTING = ("repsim.plots", "repsim.tables", "meta.study.figures", "meta.study.figures_analyses")
COMPUTING = ("repsim.measures", "repsim.compare", "repsim.snapshot_report", "repsim.capture")


def module_name(path: Path) -> str:
    """``repsim/measures/cka.py`` -> ``repsim.measures.cka``; a package's ``__init__`` -> its name."""
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    """Every module of the packages, by dotted name."""
    return {module_name(p): p for package in PACKAGES for p in sorted((REPO / package).rglob("*.py"))}


def imported_modules(source: str, name: str) -> set[str]:
    """Dotted names imported anywhere in ``source`` (module ``name``), relative imports resolved."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")[: -node.level] if not name.endswith("__init__") else name.split(".")
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def room(name: str) -> str | None:
    """The room a dotted name belongs to (``None`` for third-party modules)."""
    parts = name.split(".")
    if parts[0] == "repsim":
        return "repsim"
    if parts[0] != "meta":
        return None
    if len(parts) == 1:
        return "meta"
    if parts[1] == "validation":
        return "leaf"
    if parts[1] in ("cli", "__main__"):
        return "cli"
    return parts[1] if parts[1] in ALLOWED else "meta"


def violations(name: str, source: str) -> list[str]:
    """``"a imports b"`` for each import of module ``name`` that breaks the directions."""
    own = room(name)
    out = []
    for target in sorted(imported_modules(source, name)):
        other = room(target)
        if other is not None and other != own and other not in ALLOWED[own]:
            out.append(f"{name} ({own}) imports {target} ({other})")
    return out


_MODULES: dict[str, Path] = {}


def modules_cache() -> dict[str, Path]:
    if not _MODULES:
        _MODULES.update(modules())
    return _MODULES


def test_the_packages_are_found():
    names = set(modules_cache())
    assert {"repsim.measures.cka", "meta.core.inner", "meta.run.train", "meta.data.episodes"} <= names


@pytest.mark.parametrize("name", sorted(modules()))
def test_imports_follow_the_directions(name):
    assert violations(name, modules_cache()[name].read_text()) == []


def test_the_checker_sees_a_wrong_direction():
    assert violations("meta.core.fake", "from meta.study.plan import Plan\n") == [
        "meta.core.fake (core) imports meta.study.plan (study)",
        "meta.core.fake (core) imports meta.study.plan.Plan (study)",
    ]
    assert violations("repsim.fake", "def f():\n    import meta.core.models\n") == [
        "repsim.fake (repsim) imports meta.core.models (core)"
    ]
    assert violations("meta.data.fake", "from meta.validation import check_int\nimport numpy\n") == []
    assert violations("meta.data.fake", "from ..core import models\n") == [
        "meta.data.fake (data) imports meta.core (core)",
        "meta.data.fake (data) imports meta.core.models (core)",
    ]


def repsim_inner_violations(name: str, source: str) -> list[str]:
    """Imports of repsim modules that a module of :data:`REPSIM_INNER` may not make."""
    rule = next((allowed for prefix, allowed in REPSIM_INNER.items() if name.startswith(prefix)), None)
    if rule is None:
        return []
    targets = {t for t in imported_modules(source, name) if t.split(".")[0] == "repsim"}
    return sorted(t for t in targets if not t.startswith(rule))


@pytest.mark.parametrize("name", [n for n in modules() if n.startswith(tuple(REPSIM_INNER))])
def test_repsim_measures_and_leaves_import_nothing_else_of_repsim(name):
    assert repsim_inner_violations(name, modules_cache()[name].read_text()) == []


def test_the_inner_checker_sees_a_wrong_import():
    assert repsim_inner_violations("repsim.measures.fake", "from repsim.io import write_csv\n") == [
        "repsim.io",
        "repsim.io.write_csv",
    ]
    assert repsim_inner_violations("repsim.io", "import repsim.measures\n") == ["repsim.measures"]


@pytest.mark.parametrize("name", [n for n in PLOTTING if n in modules()])
def test_plotting_never_computes_a_measure(name):
    imported = imported_modules(modules_cache()[name].read_text(), name)
    computing = sorted(m for m in imported if m == "repsim" or m.startswith(COMPUTING))
    assert computing == [], f"{name} imports {computing}"


@pytest.mark.parametrize("name", sorted(modules()))
def test_modules_are_small_and_say_what_they_hold_and_import(name):
    path = modules_cache()[name]
    source = path.read_text()
    lines = source.count("\n")
    assert lines <= MAX_LINES, f"{path.relative_to(REPO)} has {lines} lines (at most {MAX_LINES}: split it)"
    docstring = ast.get_docstring(ast.parse(source))
    assert docstring, f"{path.relative_to(REPO)} has no module docstring"
    assert "Imports:" in docstring, (
        f"{path.relative_to(REPO)}: the docstring must end with an 'Imports: ...' line (what it may import)"
    )
