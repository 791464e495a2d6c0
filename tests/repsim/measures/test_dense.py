"""The dense linear algebra of the CCA routes (repsim.measures.dense): scipy's LAPACK/BLAS on the
CPU in every memory layout against torch's reference, torch where gradients are asked for, and SVCCA's
dropped eigenvectors by inverse iteration whether or not the tridiagonal matrix splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from repsim.measures import dense
from repsim.measures.kept_directions import _splits, tridiagonal_spectrum


def spd(rng: np.random.Generator, d: int, cond: float = 100.0) -> torch.Tensor:
    """A symmetric positive definite ``(d, d)`` matrix with condition number ``cond``."""
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return torch.from_numpy((q * np.logspace(0, -np.log10(cond), d)) @ q.T)


def layouts(t: torch.Tensor) -> dict[str, torch.Tensor]:
    """``t`` row-major, and the same values column-major (a transposed view of a copy)."""
    return {"C": t.contiguous(), "F": t.T.contiguous().T}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("left", [False, True])
def test_triangular_solves_in_every_layout_match_torch(dtype, transpose, left):
    rng = np.random.default_rng(0)
    r = torch.linalg.cholesky(spd(rng, 9)).T.to(dtype)
    m = torch.from_numpy(rng.standard_normal((9, 5) if left else (5, 9))).to(dtype)
    op = r.T if transpose else r
    want = torch.linalg.solve_triangular(op, m, upper=not transpose, left=left)
    tol = 1e-12 if dtype == torch.float64 else 1e-4
    for r_layout, r_view in layouts(r).items():
        for m_layout, m_view in layouts(m).items():
            got = dense.solve_upper(r_view, m_view, transpose=transpose, left=left)
            assert got.dtype == dtype and got.shape == want.shape, (r_layout, m_layout)
            torch.testing.assert_close(got, want, rtol=tol, atol=tol, msg=f"R {r_layout}, M {m_layout}")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_triangular_products_in_every_layout_match_torch(dtype):
    rng = np.random.default_rng(5)
    r = torch.linalg.cholesky(spd(rng, 9)).T.to(dtype)
    m = torch.from_numpy(rng.standard_normal((4, 9))).to(dtype)
    tol = 1e-13 if dtype == torch.float64 else 1e-5
    for r_view in layouts(r).values():
        for m_view in layouts(m).values():
            torch.testing.assert_close(dense.times_upper(m_view, r_view), m @ r, rtol=tol, atol=tol)


def test_tensors_needing_gradients_go_to_torch():
    rng = np.random.default_rng(1)
    r = torch.linalg.cholesky(spd(rng, 6)).T
    m = torch.from_numpy(rng.standard_normal((6, 3)))
    leaf = r.clone().requires_grad_()
    dense.solve_upper(leaf, m).sum().backward()
    assert leaf.grad is not None


def test_cholesky_factor_is_upper_triangular_or_none():
    rng = np.random.default_rng(2)
    s = spd(rng, 8, cond=1e4)
    for view in layouts(s).values():
        r = dense.cholesky_upper(view)
        assert torch.equal(r, torch.triu(r)) and bool((torch.diagonal(r) > 0).all())
        torch.testing.assert_close(r.T @ r, s, rtol=0, atol=1e-14)
    indefinite = s - 2 * torch.eye(8, dtype=s.dtype)
    assert dense.cholesky_upper(indefinite) is None
    with_nan = s.clone()
    with_nan[3, 3] = float("nan")
    assert dense.cholesky_upper(with_nan) is None


def test_left_gram_eigendecomposition_gives_the_singular_values_and_left_vectors():
    rng = np.random.default_rng(3)
    m = torch.from_numpy(rng.standard_normal((7, 11)))
    lam, vectors = dense.left_gram_eigh(m)
    u, s, _ = torch.linalg.svd(m, full_matrices=False)
    torch.testing.assert_close(lam.sqrt(), s, rtol=0, atol=1e-13)
    torch.testing.assert_close((vectors.T @ u).abs(), torch.eye(7, dtype=m.dtype), rtol=0, atol=1e-12)


def block_diagonal_spd(rng: np.random.Generator) -> torch.Tensor:
    s = torch.zeros(12, 12, dtype=torch.float64)
    s[:5, :5], s[5:, 5:] = spd(rng, 5, 10.0), 3.0 * spd(rng, 7, 10.0)
    return s


@pytest.mark.parametrize("splits", [False, True])
def test_lowest_eigenvectors_by_inverse_iteration_are_the_eigenvectors(splits):
    """Without a split, inverse iteration starts from the eigenvalues already computed; a
    block-diagonal matrix makes the tridiagonal split, and bisection tells the blocks apart."""
    rng = np.random.default_rng(4)
    s = block_diagonal_spd(rng) if splits else spd(rng, 12, 50.0)
    spectrum = tridiagonal_spectrum(s.numpy())
    assert _splits(spectrum.diagonal, spectrum.off_diagonal) == splits
    vectors = spectrum.lowest_eigenvectors(4)
    lam, exact = np.linalg.eigh(s.numpy())
    np.testing.assert_allclose(s.numpy() @ vectors, vectors * lam[:4], rtol=0, atol=1e-13)
    np.testing.assert_allclose(np.abs(exact[:, :4].T @ vectors), np.eye(4), rtol=0, atol=1e-10)
