"""boundlab.linalg: singular values scaled by a power of two before LAPACK: the same numbers as
numpy's SVD on ordinary matrices, no overflow or LAPACK message on huge ones, NaN (not a
message) on non-finite ones, and differentiable."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tolerances import relative_tolerance

from boundlab import analyze, bounds
from boundlab.linalg import singular_values, spectral_norm
from boundlab.transformer import init


def test_ordinary_matrices_match_numpys_svd():
    rng = np.random.default_rng(0)
    for shape in ((3, 3), (4, 2), (2, 5)):
        A = rng.standard_normal(shape)
        want = np.linalg.svd(A, compute_uv=False)
        assert np.all(np.abs(np.asarray(singular_values(A)) - want) <= relative_tolerance() * want[0])
    A, B = rng.standard_normal((3, 3)), rng.standard_normal((3, 3))
    want = np.linalg.svd(A.T @ B, compute_uv=False)
    assert np.all(np.abs(np.asarray(singular_values(A, B)) - want) <= relative_tolerance() * want[0])
    assert float(spectral_norm(np.zeros((2, 2)))) == 0.0


def test_huge_and_non_finite_matrices_neither_overflow_nor_reach_lapack(capfd):
    rng = np.random.default_rng(1)
    A, B = rng.standard_normal((3, 3)), rng.standard_normal((3, 3))
    # sigma(2^a A^T 2^b B) = 2^(a + b) sigma(A^T B) exactly, though A^T B overflows at these scales
    big = np.asarray(singular_values(np.ldexp(A, 500), np.ldexp(B, 300)))
    assert np.array_equal(big, np.ldexp(np.asarray(singular_values(A, B)), 800))
    assert np.all(np.isinf(np.asarray(singular_values(np.ldexp(A, 600), np.ldexp(B, 500)))))  # beyond float64: inf
    assert np.all(np.isnan(np.asarray(singular_values(np.where(np.eye(3, dtype=bool), np.inf, A)))))
    assert np.all(np.isnan(np.asarray(singular_values(A, np.where(np.eye(3, dtype=bool), np.nan, B)))))
    params, X = init(jax.random.key(0), "figure4", d=3, n=3, D=4, L=2)
    hostile = params._replace(Wq=params.Wq * 1e200, Wk=params.Wk * 1e200)  # W_k^T W_q overflows
    record = bounds.theorem_4_30(hostile, X, norm="layer", u=2.0**-11)
    assert not bool(record.valid) or not np.isfinite(float(record.coefficient))
    data = analyze(hostile, X, "fp16", "layer", conditions=False, first_order=False).to_dict()
    assert data["Theorem 4.30"]["holds"] is None
    err = capfd.readouterr().err
    assert "DLASCL" not in err and "illegal value" not in err, err


def test_differentiable_where_finite():
    A = jnp.asarray([[2.0, 1.0], [0.5, 3.0]])
    grad = jax.grad(lambda M: spectral_norm(M))(A)
    u, s, vt = np.linalg.svd(np.asarray(A))
    assert np.allclose(np.asarray(grad), np.outer(u[:, 0], vt[0]), rtol=0, atol=relative_tolerance())
    assert jax.jit(spectral_norm)(A) == pytest.approx(s[0], rel=relative_tolerance())
