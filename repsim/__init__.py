"""repsim: exact, fast representational similarity (CCA family, CKA family, Procrustes, RSA).

Every measure takes two representations of the same datapoints, numpy arrays or torch tensors
``(n_datapoints, n_neurons)`` (or ``(N, C, H, W)`` with an explicit ``conv=`` policy), computes
in float64 by default, and returns a :class:`Similarity` (a float that records what it computed).
"""
from repsim._inputs import CONV_POLICIES
from repsim._result import Similarity

# measures: each helper adds its own import line below (keep one line per module)

__all__ = ["CONV_POLICIES", "Similarity"]
