"""Registry of similarity measures by name, for reports and command lines (``--measures cca,cka``).

Every entry is a callable ``(X, Y, **kwargs) -> Similarity`` taking two representations of the
same datapoints (and the common keywords ``conv=`` and ``dtype=``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from repsim.measures import canonical
from repsim.measures.cka import kernel_cka, linear_cka
from repsim.measures.procrustes import procrustes
from repsim.measures.result import Similarity
from repsim.measures.rsa import rsa

MeasureFn = Callable[..., Similarity]


def debiased_cka(X: Any, Y: Any, **kwargs: Any) -> Similarity:
    """Linear CKA with the unbiased HSIC estimator: ``linear_cka(X, Y, debiased=True, ...)``."""
    return linear_cka(X, Y, debiased=True, **kwargs)


#: Measures by name. ``"cca"`` is mean CCA (as ``"mean_cca"``) and ``"cka"`` is linear CKA.
#: ``"procrustes"`` is a squared *distance* (0 for equivalent representations); all others are
#: similarities.
MEASURES: dict[str, MeasureFn] = {
    "cca": canonical.mean_cca,
    "mean_cca": canonical.mean_cca,
    "svcca": canonical.svcca,
    "pwcca": canonical.pwcca,
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
