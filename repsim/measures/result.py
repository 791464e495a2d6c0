"""The result of every measure: :class:`Similarity`, a float that remembers how it was computed.

Imports: nothing of ``repsim`` (a leaf).
"""

from __future__ import annotations

from typing import Any


class Similarity(float):
    """A similarity value: a ``float`` that also records what was computed.

    Behaves exactly like its float value in arithmetic, comparisons, formatting and numpy; the
    attributes say which measure produced it and how the inputs were read.

    Attributes:
        measure: name of the measure, e.g. ``"linear_cka"`` or ``"pwcca"``.
        conv: the convolutional policy applied to 4-D inputs (``None`` for 2-D inputs).
        details: measure-specific facts (ranks used, kept dimensions, bandwidths, direction...).
    """

    measure: str
    conv: str | None
    details: dict[str, Any]

    def __new__(cls, value: float, *, measure: str, conv: str | None = None, **details: Any):
        obj = super().__new__(cls, value)
        obj.measure = measure
        obj.conv = conv
        obj.details = details
        return obj

    def __reduce__(self):
        return (_rebuild_similarity, (float(self), self.measure, self.conv, self.details))

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self.details.items())
        conv = f", conv={self.conv!r}" if self.conv else ""
        return f"Similarity({float(self)!r}, measure={self.measure!r}{conv}{extra})"


def _rebuild_similarity(value: float, measure: str, conv: str | None, details: dict) -> Similarity:
    return Similarity(value, measure=measure, conv=conv, **details)
