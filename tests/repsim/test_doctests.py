"""The examples in the measures' docstrings run and give what they show; every measure has one.

Every module of :mod:`repsim.measures` is found on disk (no list kept here) and its docstring
examples are run with :mod:`doctest`. Every public measure (the names :mod:`repsim.measures`
exports, but for the containers and helpers in :data:`NOT_MEASURES`, and every entry of
:data:`repsim.measures.MEASURES`) must carry an example, so a new measure without one fails.
"""

from __future__ import annotations

import doctest
import importlib
import io
import pkgutil

import pytest

import repsim.measures

#: Names exported by :mod:`repsim.measures` that are not measures (results, settings, lookup).
NOT_MEASURES = frozenset({"CCAResult", "CONV_POLICIES", "MEASURES", "Similarity", "get_measure"})


def measure_modules() -> list[str]:
    """Dotted names of :mod:`repsim.measures` and every module in it."""
    package = repsim.measures
    return [package.__name__, *(f"{package.__name__}.{m.name}" for m in pkgutil.iter_modules(package.__path__))]


def public_measures() -> dict[str, object]:
    """The exported measures and the registry's entries, by name."""
    exported = {name: getattr(repsim.measures, name) for name in repsim.measures.__all__ if name not in NOT_MEASURES}
    return {**exported, **repsim.measures.MEASURES}


def run_doctests(module_name: str) -> tuple[int, str]:
    """Run the docstring examples of one module; the number that failed and the failure report."""
    report = io.StringIO()
    runner = doctest.DocTestRunner()
    tests = doctest.DocTestFinder().find(importlib.import_module(module_name))
    failed = sum(runner.run(test, out=report.write).failed for test in tests)
    return failed, report.getvalue()


@pytest.mark.parametrize("module_name", measure_modules())
def test_docstring_examples_pass(module_name):
    failed, report = run_doctests(module_name)
    assert failed == 0, report


@pytest.mark.parametrize("name", sorted(public_measures()))
def test_every_measure_has_an_example(name):
    doc = public_measures()[name].__doc__ or ""
    assert ">>>" in doc, f"{name} has no example: add an 'Examples:' block in doctest format to its docstring"


def test_the_listed_measures_are_all_checked():
    expected = {"cca", "mean_cca", "svcca", "pwcca", "linear_cka", "kernel_cka", "minibatch_cka", "procrustes", "rsa"}
    expected |= {"StreamingCKA", "StreamingCCA", "MomentAccumulator", "debiased_cka"}
    assert expected <= set(public_measures())
