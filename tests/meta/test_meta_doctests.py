"""The examples in the docstrings of :mod:`meta` run as written (doctest)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ("meta.validation", "meta.run.lock")


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed (see above)"
