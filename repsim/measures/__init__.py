"""The measures: pure math on two representations of the same datapoints, one family per module.

- :mod:`~repsim.measures.canonical`: CCA coefficients, mean CCA, SVCCA, PWCCA;
- :mod:`~repsim.measures.canonical_bases`: rank, kept directions and orthonormal basis of one
  side of a CCA problem (shared by the in-memory and streaming CCA family);
- :mod:`~repsim.measures.cka`: linear, debiased and minibatch CKA, and the HSIC estimators;
- :mod:`~repsim.measures.kernel_cka`: kernel (RBF, linear or callable) CKA;
- :mod:`~repsim.measures.procrustes`: orthogonal Procrustes distance;
- :mod:`~repsim.measures.rsa`: representational similarity analysis;
- :mod:`~repsim.measures.streaming` (and ``streaming_cka``, ``streaming_cca``): exact, mergeable
  accumulators for CKA and the CCA family;
- :mod:`~repsim.measures.products`: the Gram and cross products, by BLAS's symmetric update;
- :mod:`~repsim.measures.canonical_gram`: CCA from Gram matrices, the certified fast route;
- :mod:`~repsim.measures.inputs`: conversion, convolutional policies and validation shared by all;
- :mod:`~repsim.measures.result`: :class:`Similarity`, the float every measure returns;
- :mod:`~repsim.measures.registry`: the measures by name (``--measures cca,cka``).

Imports: nothing of ``repsim`` outside this package (no capture, no files, no plots).
"""

from repsim.measures.canonical import CCAResult, cca, cca98, mean_cca, pwcca, svcca
from repsim.measures.cka import linear_cka, minibatch_cka
from repsim.measures.inputs import CONV_POLICIES
from repsim.measures.kernel_cka import kernel_cka
from repsim.measures.procrustes import procrustes
from repsim.measures.registry import MEASURES, debiased_cka, get_measure
from repsim.measures.result import Similarity
from repsim.measures.rsa import rsa
from repsim.measures.streaming import MomentAccumulator
from repsim.measures.streaming_cca import StreamingCCA
from repsim.measures.streaming_cka import StreamingCKA

__all__ = [
    "CCAResult",
    "CONV_POLICIES",
    "MEASURES",
    "MomentAccumulator",
    "Similarity",
    "StreamingCCA",
    "StreamingCKA",
    "cca",
    "cca98",
    "debiased_cka",
    "get_measure",
    "kernel_cka",
    "linear_cka",
    "mean_cca",
    "minibatch_cka",
    "procrustes",
    "pwcca",
    "rsa",
    "svcca",
]
