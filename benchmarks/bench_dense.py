"""The dense ``d x d`` linear algebra of repsim's CCA routes (``repsim.measures.dense``: scipy's
LAPACK and BLAS on the CPU) against torch's CPU kernels for the same results, side by side.

For each operation, on a ``d x d`` float64 problem (default ``d = 512``, a layer's width), one
intra-op thread, it times (median of interleaved repeats) repsim's way and torch's, prints the
ratio (torch / repsim) and the largest difference of the results:

- ``R' X = M``, ``X R = M``: triangular solves with ``d`` right-hand sides (BLAS ``trsm``);
- ``S = R'R``: the Cholesky factor (LAPACK ``potrf``);
- PWCCA's left singular vectors of the cross matrix: the eigendecomposition of ``M M'``
  (``syrk`` + ``syevd``) against torch's SVD of ``M`` (what repsim did before; the values'
  difference is that of ``sqrt`` of the eigenvalues);
- the eigenvalues of ``M'M`` (``syrk`` + ``syevd``, values only) against torch's ``eigvalsh``.

Run ``python benchmarks/bench_dense.py --help``; figures in benchmarks/README.md.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from repsim.measures import dense

torch.set_num_threads(1)

Pair = tuple[Callable[[], torch.Tensor], Callable[[], torch.Tensor]]


def problems(d: int, seed: int = 0) -> dict[str, Pair]:
    """``{operation: (repsim's thunk, torch's thunk)}`` on one random well-conditioned problem."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((4 * d, d))
    s = torch.from_numpy(a.T @ a)
    r = torch.linalg.cholesky(s).T.contiguous()
    m = torch.from_numpy(rng.standard_normal((d, d)) / np.sqrt(d))
    return {
        "R' X = M (trsm)": (
            lambda: dense.solve_upper(r, m, transpose=True),
            lambda: torch.linalg.solve_triangular(r.T, m, upper=False),
        ),
        "X R = M (trsm)": (
            lambda: dense.solve_upper(r, m, left=False),
            lambda: torch.linalg.solve_triangular(r, m, upper=True, left=False),
        ),
        "Cholesky (potrf)": (lambda: dense.cholesky_upper(s), lambda: torch.linalg.cholesky(s).T),
        "left vectors: eigh(M M') vs SVD": (
            lambda: dense.left_gram_eigh(m)[0].clamp(min=0).sqrt(),
            lambda: torch.linalg.svd(m, full_matrices=False)[1],
        ),
        "eigenvalues of M'M": (
            lambda: dense.gram_eigenvalues(m),
            lambda: torch.linalg.eigvalsh(m.T @ m),
        ),
    }


def time_pairs(cases: dict[str, Pair], repeats: int) -> list[dict]:
    """One row per operation: medians of ``repeats`` interleaved rounds, the ratio, the difference."""
    rows = []
    for name, (ours, theirs) in cases.items():
        difference = float((ours() - theirs()).abs().max())
        times: dict[str, list[float]] = {"repsim": [], "torch": []}
        for _ in range(repeats):
            for key, thunk in (("repsim", ours), ("torch", theirs)):
                start = time.perf_counter()
                thunk()
                times[key].append(time.perf_counter() - start)
        mine, peer = (statistics.median(times[key]) for key in ("repsim", "torch"))
        rows.append(
            {"operation": name, "repsim_ms": 1e3 * mine, "torch_ms": 1e3 * peer, "x": peer / mine, "diff": difference}
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--d", type=int, default=512, help="matrix size (default 512)")
    parser.add_argument("--repeats", type=int, default=9, help="interleaved rounds (default 9)")
    args = parser.parse_args(argv)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread, float64, d = {args.d}; medians of {args.repeats}"
    )
    print(f"{'operation':<34}{'repsim ms':>10}{'torch ms':>10}{'torch/ours':>11}{'|diff|':>10}")
    for row in time_pairs(problems(args.d), args.repeats):
        print(
            f"{row['operation']:<34}{row['repsim_ms']:>10.2f}{row['torch_ms']:>10.2f}{row['x']:>11.2f}{row['diff']:>10.1e}"
        )


if __name__ == "__main__":
    main()
