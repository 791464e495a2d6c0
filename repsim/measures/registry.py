"""Registry of similarity measures by name, for reports and command lines (``--measures cca,cka``).

Every entry is a callable ``(X, Y, **kwargs) -> Similarity`` taking two representations of the
same datapoints (and the common keywords ``conv=`` and ``dtype=``).

Imports: the measure modules of :mod:`repsim.measures` only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from repsim.measures.canonical import mean_cca, pwcca, svcca
from repsim.measures.cka import linear_cka
from repsim.measures.kernel_cka import kernel_cka
from repsim.measures.procrustes import procrustes
from repsim.measures.result import Similarity
from repsim.measures.rsa import rsa

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


#: Measures by name. ``"cca"`` is mean CCA (as ``"mean_cca"``) and ``"cka"`` is linear CKA.
#: ``"procrustes"`` is a squared *distance* (0 for equivalent representations); all others are
#: similarities.
MEASURES: dict[str, MeasureFn] = {
    "cca": mean_cca,
    "mean_cca": mean_cca,
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
