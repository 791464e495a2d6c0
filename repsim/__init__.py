"""repsim: exact, fast representational similarity (CCA family, CKA family, Procrustes, RSA).

Every measure takes two representations of the same datapoints, numpy arrays or torch tensors
``(n_datapoints, n_neurons)`` (or ``(N, C, H, W)`` with an explicit ``conv=`` policy), computes
in float64 by default, and returns a :class:`Similarity` (a float that records what it computed).
Sequences ``(N, T, D)`` are reduced first by a policy (:func:`repsim.measures.inputs.reduce_sequence`).

Layout: :mod:`repsim.measures` (the math, one family per module), :mod:`repsim.capture`
(activations of named layers of any model), :mod:`repsim.weights` (safe loading of checkpoints
and model specs), :mod:`repsim.runs` (run folders of ``meta``, read as JSON),
:mod:`repsim.input_sets` (files, image folders and named input sets), :mod:`repsim.compare`
(two models layer by layer; :mod:`repsim.policies` for conv and sequence activations,
:mod:`repsim.streamed` over batches, :mod:`repsim.distributed` across torchrun ranks),
:mod:`repsim.snapshot_report` (reading adaptation snapshots), :mod:`repsim.tables` and
:mod:`repsim.plots` (results as tables and figures), :mod:`repsim.io` (atomic files),
:mod:`repsim.progress` (progress bars on terminals, one line per stage in logs) and
:mod:`repsim.cli` (``python -m repsim``).

Imports: never :mod:`meta` (``meta`` uses ``repsim``, not the reverse).
"""

from repsim.capture import capture_activations, resolve_layers
from repsim.compare import compare_models
from repsim.measures import (
    CONV_POLICIES,
    MEASURES,
    CCAResult,
    MomentAccumulator,
    Similarity,
    StreamingCCA,
    StreamingCKA,
    cca,
    cca98,
    get_measure,
    kernel_cka,
    linear_cka,
    mean_cca,
    minibatch_cka,
    procrustes,
    pwcca,
    rsa,
    svcca,
)
from repsim.snapshot_report import report_snapshot
from repsim.tensor_files import DamagedFileError, UnsafeCheckpointError
from repsim.weights import UntrustedFactoryError, allow_factory, build_model, load_model, load_state_dict

__all__ = [
    "CCAResult",
    "CONV_POLICIES",
    "DamagedFileError",
    "MEASURES",
    "MomentAccumulator",
    "Similarity",
    "StreamingCCA",
    "StreamingCKA",
    "UnsafeCheckpointError",
    "UntrustedFactoryError",
    "allow_factory",
    "build_model",
    "capture_activations",
    "cca",
    "cca98",
    "compare_models",
    "get_measure",
    "kernel_cka",
    "linear_cka",
    "load_model",
    "load_state_dict",
    "mean_cca",
    "minibatch_cka",
    "procrustes",
    "pwcca",
    "report_snapshot",
    "resolve_layers",
    "rsa",
    "svcca",
]
