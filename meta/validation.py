"""Checks of plain values shared by every room of :mod:`meta`: one helper per kind of value, so
that every option is refused with the same words.

Modelled on scikit-learn's ``utils/validation.py``: one shared checker instead of hand-written
copies. An *integer* is a Python ``int`` or a numpy integer, never a ``bool`` (``True`` is an
``int`` to Python, but ``steps=True`` is a mistake, not one step).

Imports: nothing of :mod:`meta` or :mod:`repsim`. This leaf is the one module every room,
:mod:`meta.data` included, may import.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["check_choice", "check_int", "check_number", "is_integer"]


def is_integer(value: Any) -> bool:
    """``True`` for a Python or numpy integer that is not a ``bool``.

    Examples:
        >>> is_integer(3), is_integer(np.int64(3)), is_integer(True), is_integer(3.0)
        (True, True, False, False)
    """
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_int(name: str, value: Any, *, minimum: int | None = None) -> int:
    """``value`` as a Python ``int``; ``ValueError`` naming ``name`` unless it is an integer
    (:func:`is_integer`) of at least ``minimum``.

    Examples:
        >>> check_int("steps", np.int64(5), minimum=0)
        5
        >>> check_int("ways", 0, minimum=1)
        Traceback (most recent call last):
        ...
        ValueError: ways must be an integer >= 1, got 0
    """
    if not is_integer(value) or (minimum is not None and value < minimum):
        bound = "" if minimum is None else f" >= {minimum}"
        raise ValueError(f"{name} must be an integer{bound}, got {value!r}")
    return int(value)


def check_number(name: str, value: Any, *, minimum: float | None = None) -> float:
    """``value`` as a finite Python ``float``; ``ValueError`` naming ``name`` unless it is a
    real number (not a ``bool``), finite and at least ``minimum``.

    Examples:
        >>> check_number("lr", 0.4, minimum=0)
        0.4
        >>> check_number("lr", float("nan"))
        Traceback (most recent call last):
        ...
        ValueError: lr must be a finite number, got nan
    """
    real = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    if not real or not math.isfinite(value) or (minimum is not None and value < minimum):
        bound = "" if minimum is None else f" >= {minimum}"
        raise ValueError(f"{name} must be a finite number{bound}, got {value!r}")
    return float(value)


def check_choice(name: str, value: Any, choices: Any) -> Any:
    """``value`` if it is one of ``choices``; else ``ValueError`` naming ``name`` and the choices.

    Examples:
        >>> check_choice("path", "loop", ("loop", "hybrid"))
        'loop'
    """
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose from {', '.join(map(str, choices))}")
    return value
