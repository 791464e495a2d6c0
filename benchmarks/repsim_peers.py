"""The peers that ``bench_repsim.py`` times beside repsim: what a user would otherwise run.

- ``numpy``: the three-line linear CKA that a user writes by hand (centre, then
  ``||Yc'Xc||_F^2 / (||Xc'Xc||_F ||Yc'Yc||_F)``);
- ``google/svcca``: the algorithm of ``get_cca_similarity`` in google/svcca's ``cca_core.py``
  (https://github.com/google/svcca/blob/master/cca_core.py), written here from its published
  description: the covariance of the stacked activations (``np.cov``), each block scaled by its
  largest entry, the pseudo-inverses of the two auto-covariances (``pinv``), their square roots
  through ``eigh``, then the singular values of ``Sxx^-1/2 Sxy Syy^-1/2`` (``svd``). Its mean
  CCA is the mean of all singular values (``get_cca_similarity``'s ``"sum"`` over ``d``);
- the PyPI peers, each optional: cca-zoo, deep-reps, ckatorch, pytorch-cka, torch-cka.

Each peer is a :data:`Maker`: ``maker(x, y)`` prepares the inputs ``(n, d)`` float64 and returns a
thunk that computes the similarity once.

Imports: numpy and torch; the PyPI peers lazily, when their maker is loaded.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

Thunk = Callable[[], float]
Maker = Callable[[np.ndarray, np.ndarray], Thunk]


# ---------------------------------------------------------------------------------- by hand
def numpy_linear_cka(x: np.ndarray, y: np.ndarray) -> Thunk:
    """Linear CKA as three lines of numpy: ``||Yc'Xc||_F^2 / (||Xc'Xc||_F ||Yc'Yc||_F)``."""

    def run() -> float:
        xc, yc = x - x.mean(0), y - y.mean(0)
        return float(np.linalg.norm(yc.T @ xc) ** 2 / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)))

    return run


def _inverse_square_root(sigma: np.ndarray) -> np.ndarray:
    """``pinv(sigma)^(1/2)`` by ``eigh``, as google/svcca's ``compute_ccas`` does."""
    w, v = np.linalg.eigh(np.linalg.pinv(sigma))
    return (v * np.sqrt(w)) @ v.T


def svcca_reference_mean_cca(x: np.ndarray, y: np.ndarray) -> Thunk:
    """Mean CCA by google/svcca's algorithm (covariance, inverse square root, SVD); see the module."""
    dx = x.shape[1]

    def run() -> float:
        covariance = np.cov(x.T, y.T)  # (dx + dy, dx + dy); get_cca_similarity takes (neurons, n)
        sxx, sxy, syy = covariance[:dx, :dx], covariance[:dx, dx:], covariance[dx:, dx:]
        xmax, ymax = np.abs(sxx).max(), np.abs(syy).max()
        whitened = _inverse_square_root(sxx / xmax) @ (sxy / np.sqrt(xmax * ymax)) @ _inverse_square_root(syy / ymax)
        return float(np.abs(np.linalg.svd(whitened, compute_uv=False)).mean())

    return run


# ---------------------------------------------------------------------------------- PyPI
def import_module_only(package: str, module: str) -> types.ModuleType:
    """Import ``package.module`` without running ``package/__init__.py`` (whose other imports,
    e.g. open_clip for deep-reps, are irrelevant to the measure and heavy)."""
    if package not in sys.modules:
        spec = importlib.util.find_spec(package)
        if spec is None:
            raise ImportError(f"{package} is not installed")
        stub = types.ModuleType(package)
        stub.__path__ = list(spec.submodule_search_locations or [])
        sys.modules[package] = stub
    return importlib.import_module(f"{package}.{module}")


def _cca_zoo() -> Maker:
    from cca_zoo.linear import CCA

    def make(x: np.ndarray, y: np.ndarray) -> Thunk:
        k = min(x.shape[1], y.shape[1])
        return lambda: float(CCA(n_components=k).fit([x, y]).score([x, y]))

    return make


def _deep_reps(function: str, *args: object) -> Maker:
    cca_measures = import_module_only("deep_reps", "cca_measures")

    def make(x: np.ndarray, y: np.ndarray) -> Thunk:
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)
        return lambda: float(getattr(cca_measures, function)(tx, ty, *args))

    return make


def _ckatorch(unbiased: bool) -> Maker:
    from ckatorch.core import cka_base

    def make(x: np.ndarray, y: np.ndarray) -> Thunk:
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)
        return lambda: float(cka_base(tx, ty, kernel="linear", unbiased=unbiased))

    return make


def _pytorch_cka() -> Maker:
    from cka import cka_from_features  # the pytorch-cka distribution installs module `cka`

    def make(x: np.ndarray, y: np.ndarray) -> Thunk:
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)
        return lambda: float(cka_from_features(tx, ty).squeeze())

    return make


def _torch_cka() -> Maker:
    """torch-cka's CKA over one batch of all n rows (it accepts float32 features only)."""
    from torch.utils.data import DataLoader, TensorDataset
    from torch_cka import CKA

    def make(x: np.ndarray, y: np.ndarray) -> Thunk:
        tx, ty = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.float32))

        def run() -> float:
            one, two = torch.nn.Sequential(torch.nn.Identity()), torch.nn.Sequential(torch.nn.Identity())
            cka = CKA(one, two, "X", "Y", model1_layers=["0"], model2_layers=["0"])
            loaders = [DataLoader(TensorDataset(t), batch_size=len(t)) for t in (tx, ty)]
            cka.compare(*loaders)
            return float(cka.export()["CKA"][0, 0])

        return run

    return make


@dataclass(frozen=True)
class Peer:
    """A peer's implementation of one measure: ``loader()`` returns a :data:`Maker`."""

    name: str
    measure: str
    loader: Callable[[], Maker]
    gram: bool = False  # builds n x n matrices
    note: str = ""
    pypi: bool = True  # an installable package (else: written here, always present)


PEERS = (
    Peer("numpy", "linear_cka", lambda: numpy_linear_cka, note="3 lines by hand", pypi=False),
    Peer("google/svcca", "mean_cca", lambda: svcca_reference_mean_cca, note="cov, pinv+eigh, svd", pypi=False),
    Peer("cca-zoo", "mean_cca", _cca_zoo),
    Peer("deep-reps", "mean_cca", lambda: _deep_reps("compute_standard_cca")),
    Peer("deep-reps", "svcca", lambda: _deep_reps("compute_standard_svcca", 0.99)),
    Peer("ckatorch", "linear_cka", lambda: _ckatorch(False), gram=True),
    Peer("ckatorch", "debiased_cka", lambda: _ckatorch(True), gram=True),
    Peer("pytorch-cka", "debiased_cka", _pytorch_cka, gram=True, note="clamps to [0,1]"),
    Peer("torch-cka", "debiased_cka", _torch_cka, gram=True, note="float32 only"),
)


def peer_maker(name: str, measure: str) -> Maker:
    """The maker of peer ``name`` for ``measure``."""
    return next(p for p in PEERS if p.name == name and p.measure == measure).loader()
