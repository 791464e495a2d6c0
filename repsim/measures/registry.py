"""Registry of similarity measures by name, for reports and command lines (``--measures cca,cka``).

Every entry is a callable ``(X, Y, **kwargs) -> Similarity`` taking two representations of the
same datapoints (and the common keywords ``conv=`` and ``dtype=``). :func:`check_options` checks a
measure's options (names and values) before anything is computed, so that a misspelt or invalid
option is one clear error instead of a table of undefined values.

Imports: the measure modules of :mod:`repsim.measures` only.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from repsim.measures.canonical import cca98, check_leading, mean_cca, pwcca, svcca
from repsim.measures.canonical_bases import check_keep, check_rtol
from repsim.measures.cka import LINEAR_FORMS, linear_cka
from repsim.measures.kernel_cka import KERNELS, SIGMA_METHODS, kernel_cka
from repsim.measures.procrustes import procrustes
from repsim.measures.result import Similarity
from repsim.measures.rsa import RDM_COMPARISONS, RDM_METRICS, rsa

MeasureFn = Callable[..., Similarity]


def debiased_cka(X: Any, Y: Any, **kwargs: Any) -> Similarity:
    """Linear CKA with the unbiased HSIC estimator: ``linear_cka(X, Y, debiased=True, ...)``.

    Examples:
        >>> import numpy as np
        >>> from repsim.measures import debiased_cka, linear_cka
        >>> rng = np.random.default_rng(0)
        >>> X, Y = rng.standard_normal((50, 4)), rng.standard_normal((50, 3))
        >>> float(debiased_cka(X, Y)) == float(linear_cka(X, Y, debiased=True))
        True
    """
    return linear_cka(X, Y, debiased=True, **kwargs)


#: Measures by name. ``"cca"`` is mean CCA over all coefficients (as ``"mean_cca"``), ``"cca98"``
#: google/svcca's ``get_cca_similarity`` convention (the leading coefficients reaching 98% of the
#: sum) and ``"cka"`` is linear CKA.
#: ``"procrustes"`` is a squared *distance* (0 for equivalent representations); all others are
#: similarities.
MEASURES: dict[str, MeasureFn] = {
    "cca": mean_cca,
    "mean_cca": mean_cca,
    "cca98": cca98,
    "svcca": svcca,
    "pwcca": pwcca,
    "cka": linear_cka,
    "linear_cka": linear_cka,
    "debiased_cka": debiased_cka,
    "kernel_cka": kernel_cka,
    "procrustes": procrustes,
    "rsa": rsa,
}


def get_measure(name: str) -> MeasureFn:
    """The measure called ``name`` in :data:`MEASURES`; ``ValueError`` listing the known names."""
    try:
        return MEASURES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown measure {name!r}; known measures: {', '.join(sorted(MEASURES))}") from None


def _choice(choices: tuple[str, ...]) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}; got {value!r}")

    return check


def _flag(value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false; got {value!r}")


def _positive(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"must be a positive number; got {value!r}")


def _sigma(value: Any) -> None:
    if value is not None:
        for part in value if isinstance(value, (list, tuple)) and len(value) == 2 else (value,):
            _positive(part)


def _dtype(value: Any) -> None:
    if not (isinstance(value, torch.dtype) and value.is_floating_point):
        raise ValueError(f"must be a floating-point torch dtype; got {value!r}")


def _max_n(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 4:
        raise ValueError(f"must be an integer >= 4; got {value!r}")


#: How each option of a measure is checked (a ValueError saying what it must be).
OPTION_CHECKS: dict[str, Callable[[Any], Any]] = {
    "rtol": check_rtol,
    "keep": check_keep,
    "leading": check_leading,
    "symmetric": _flag,
    "debiased": _flag,
    "form": _choice(LINEAR_FORMS),
    "kernel": lambda v: None if callable(v) else _choice(KERNELS)(v),
    "sigma": _sigma,
    "sigma_factor": _positive,
    "sigma_method": _choice(SIGMA_METHODS),
    "metric": _choice(RDM_METRICS),
    "compare": _choice(RDM_COMPARISONS),
    "max_n": _max_n,
    "dtype": _dtype,
}


def measure_options(name: str) -> tuple[str, ...]:
    """The options measure ``name`` takes besides the two representations and ``conv``."""
    fn = {"debiased_cka": linear_cka, "cca98": mean_cca}.get(name) or get_measure(name)
    fixed = {"debiased_cka": {"debiased"}, "cca98": {"leading"}}.get(name, set())
    skip = {"X", "Y", "conv"} | fixed
    return tuple(p for p in inspect.signature(fn).parameters if p not in skip)


def check_options(name: str, options: Mapping[str, Any]) -> None:
    """``ValueError`` naming the measure and the option unless every key of ``options`` is an
    option of measure ``name`` (:func:`measure_options`) with a valid value.

    Examples:
        >>> check_options("svcca", {"keep": 0.99})
        >>> check_options("svcca", {"keep": 5.5})
        Traceback (most recent call last):
        ...
        ValueError: svcca option keep: keep as a fraction of variance must be in (0, 1]; got 5.5
        >>> check_options("svcca", {"kepp": 0.99})
        Traceback (most recent call last):
        ...
        ValueError: svcca has no option 'kepp'; its options: keep, dtype, rtol
    """
    known = measure_options(name)
    for key, value in options.items():
        if key not in known:
            raise ValueError(f"{name} has no option {key!r}; its options: {', '.join(known)}")
        try:
            OPTION_CHECKS[key](value)
        except ValueError as err:
            raise ValueError(f"{name} option {key}: {err}") from None
