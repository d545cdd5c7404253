"""boundlab.linalg: singular values scaled by a power of two before LAPACK: the same numbers as
numpy's SVD on ordinary matrices, no overflow or LAPACK message on huge ones, NaN (not a
message) on non-finite ones, and differentiable; batched by vmap one matrix at a time on the
CPU, so jaxlib's batched LAPACK kernels cannot deadlock XLA's thread pool."""

import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tolerances import relative_tolerance

from boundlab import analyze, bounds
from boundlab.linalg import singular_values, spectral_norm, symmetric_eigenvalues
from boundlab.models.paper import init


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


@pytest.mark.fast_compile  # powers of two, inf, NaN and flags, no float64 bits: tests/conftest.py
def test_huge_and_non_finite_matrices_neither_overflow_nor_reach_lapack(capfd):
    rng = np.random.default_rng(1)
    A, B = rng.standard_normal((3, 3)), rng.standard_normal((3, 3))
    # sigma(2^a A^T 2^b B) = 2^(a + b) sigma(A^T B) exactly, though A^T B overflows at these scales
    big = np.asarray(singular_values(np.ldexp(A, 500), np.ldexp(B, 300)))
    assert np.array_equal(big, np.ldexp(np.asarray(singular_values(A, B)), 800))
    assert np.all(np.isinf(np.asarray(singular_values(np.ldexp(A, 600), np.ldexp(B, 500)))))  # beyond float64: inf
    assert np.all(np.isnan(np.asarray(singular_values(np.where(np.eye(3, dtype=bool), np.inf, A)))))
    assert np.all(np.isnan(np.asarray(singular_values(A, np.where(np.eye(3, dtype=bool), np.nan, B)))))
    params, X = init(jax.random.key(0), "figure4", d=4, n=3, D=5, L=2)  # the README's shape: analyze compiled once
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


def _lapack_operands(lowered_text, routine):
    """The operand type of every call of a LAPACK routine in a lowered program."""
    return [re.search(r":\s*\((tensor<[^>]*>)\)\s*->", line).group(1)
            for line in lowered_text.splitlines() if f"custom_call @{routine}(" in line]


def test_vmap_batches_one_matrix_at_a_time_on_the_cpu_with_the_same_bits():
    rng = np.random.default_rng(2)
    A = jnp.asarray(rng.standard_normal((3, 4, 5, 5)))
    M = A + jnp.swapaxes(A, -1, -2)
    svd_batched = jax.jit(jax.vmap(jax.vmap(singular_values)))
    eig_batched = jax.jit(jax.vmap(jax.vmap(symmetric_eigenvalues)))
    for batched, routine, X in ((svd_batched, "lapack_dgesdd_ffi", A), (eig_batched, "lapack_dsyevd_ffi", M)):
        operands = _lapack_operands(batched.lower(X).as_text(), routine)
        assert operands and all(t == "tensor<5x5xf64>" for t in operands), operands
    # one matrix at a time, or the whole batch: the same LAPACK routine, the same bits
    want_svd = jnp.linalg.svd(A, compute_uv=False)
    want_eig = jnp.linalg.eigvalsh(M)
    assert np.array_equal(np.asarray(svd_batched(A)), np.asarray(want_svd))
    assert np.array_equal(np.asarray(eig_batched(M)), np.asarray(want_eig))
    assert np.array_equal(np.asarray(singular_values(A[1, 2])), np.asarray(want_svd[1, 2]))


def test_batched_derivatives_are_the_singular_and_eigen_vector_products():
    rng = np.random.default_rng(3)
    A = rng.standard_normal((4, 3, 3))
    M = A + np.swapaxes(A, -1, -2)
    u, _, vt = np.linalg.svd(A)
    grad_svd = jax.jit(jax.vmap(jax.grad(spectral_norm)))(A)
    assert np.allclose(np.asarray(grad_svd), u[:, :, :1] * vt[:, :1, :], rtol=0, atol=relative_tolerance())
    _, vectors = np.linalg.eigh(M)
    top = vectors[:, :, -1]
    grad_eig = jax.jit(jax.vmap(jax.grad(lambda m: symmetric_eigenvalues(m)[-1])))(M)
    assert np.allclose(np.asarray(grad_eig), top[:, :, None] * top[:, None, :], rtol=0, atol=relative_tolerance())
    forward, reverse = jax.jacfwd(singular_values)(A[0]), jax.jacrev(singular_values)(A[0])
    assert np.allclose(np.asarray(forward), np.asarray(reverse), rtol=0, atol=relative_tolerance())


def test_batched_decompositions_side_by_side_finish():
    # jnp.linalg.svd and eigvalsh, vmapped and run side by side like this, hang for good on a
    # 2-core machine (jaxlib 0.10.2's ParallelBatchMap blocks both pool threads); boundlab's
    # decompositions must finish (a hang fails by the timeout)
    program = textwrap.dedent("""
        import jax, jax.numpy as jnp
        jax.config.update("jax_enable_x64", True)
        from boundlab.linalg import singular_values, symmetric_eigenvalues

        @jax.jit
        def f(a, b):
            parts = []
            for k in range(1, 5):
                parts.append(jax.vmap(singular_values)(jnp.sin(a * k)).sum())
                parts.append(jax.vmap(symmetric_eigenvalues)(jnp.cos(b * k)).sum())
            return jnp.stack(parts)

        a = jax.random.normal(jax.random.key(0), (256, 24, 24))
        b = a + a.transpose(0, 2, 1)
        for i in range(20):
            f(a + i, b + i).block_until_ready()
        print("finished")
    """)
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0 and "finished" in done.stdout, done.stderr[-2000:]


def test_on_a_gpu_the_batch_goes_to_the_solver_whole():
    # lowered for CUDA on this machine (jax.export): one batched cusolver call, no loop
    from jax import export

    for f, routine in ((singular_values, "cusolver_gesvdj_ffi"), (symmetric_eigenvalues, "cusolver_syevd_ffi")):
        text = export.export(jax.jit(jax.vmap(jax.vmap(f))), platforms=["cuda"])(
            jax.ShapeDtypeStruct((3, 4, 5, 5), jnp.float32)).mlir_module()
        operands = _lapack_operands(text, routine)
        assert operands == ["tensor<3x4x5x5xf32>"] and "stablehlo.while" not in text, (operands, routine)
