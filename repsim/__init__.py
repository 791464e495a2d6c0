"""repsim: exact, fast representational similarity (CCA family, CKA family, Procrustes, RSA).

Every measure takes two representations of the same datapoints, numpy arrays or torch tensors
``(n_datapoints, n_neurons)`` (or ``(N, C, H, W)`` with an explicit ``conv=`` policy), computes
in float64 by default, and returns a :class:`Similarity` (a float that records what it computed).
"""
from repsim._inputs import CONV_POLICIES
from repsim._result import Similarity

# measures: each helper adds its own import line below (keep one line per module)
from repsim.canonical import CCAResult, cca, mean_cca, pwcca, svcca
from repsim.streaming import MomentAccumulator, StreamingCCA, StreamingCKA
from repsim.cka import kernel_cka, linear_cka, minibatch_cka
from repsim.procrustes import procrustes
from repsim.rsa import rsa
from repsim.measures import MEASURES, get_measure
from repsim.capture import capture_activations, resolve_layers
from repsim.checkpoints import UnsafeCheckpointError, build_model, load_model, load_state_dict
from repsim.compare import compare_models
from repsim.snapshots import report_snapshot

__all__ = ["CONV_POLICIES", "Similarity"]
__all__ += ["linear_cka", "kernel_cka", "minibatch_cka", "procrustes", "rsa", "MEASURES", "get_measure"]
__all__ += ["capture_activations", "resolve_layers", "UnsafeCheckpointError", "build_model", "load_model",
            "load_state_dict", "compare_models", "report_snapshot"]
__all__ += ["CCAResult", "cca", "mean_cca", "svcca", "pwcca", "MomentAccumulator", "StreamingCCA", "StreamingCKA"]
