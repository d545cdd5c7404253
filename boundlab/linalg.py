"""Singular values that neither overflow in LAPACK nor make it print.

``jnp.linalg.svd`` of a matrix whose entries are huge (or whose product is: W_k^T W_q with
entries of 1e200) hands LAPACK a matrix with an infinite norm; its scaling routine then writes
``On entry to DLASCL parameter number 4 had an illegal value`` to the terminal and the result is
NaN.  Here the matrix is scaled by a power of two first (exact: every singular value scales by
the same power of two, so nothing is rounded that was not), and a matrix with a non-finite entry
never reaches LAPACK: its singular values are NaN.  Differentiable where the matrix is finite.

One matrix at a time on the CPU.  jaxlib's LAPACK kernels (jax 0.10.2: ``lapack_dgesdd_ffi``,
``lapack_dsyevd_ffi``) split a batch of matrices over XLA's intra-op thread pool and then block
the pool thread they run on until the pieces are done (``ParallelBatchMap``); when XLA runs as
many batched decompositions side by side as the pool has threads (2 on a 2-core machine), every
pool thread waits for pieces that no thread is left to run, and the program hangs for good (seen
as a MiniLM diagnostics step that never returned).  So the decompositions here are
``custom_vmap`` functions: batched by ``vmap`` on the CPU they loop over the batch with
``lax.map``, each LAPACK call holding a single matrix, which jaxlib runs inline; on GPU and TPU
the batch goes to the solver whole.  Their derivatives are written out (``custom_jvp``, so
``jax.grad`` and ``jax.jacfwd`` both work): d sigma_i = u_i^T dA v_i and d lambda_i = v_i^T dM
v_i, the rules JAX's own SVD and eigh use.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def _power_of_two_scale(A):
    """(A / 2^e, e) with max|A / 2^e| in [0.5, 1) (e = 0 for a zero or non-finite matrix)."""
    largest = jnp.max(jnp.abs(A))
    usable = jnp.isfinite(largest) & (largest > 0)
    _, exponent = jnp.frexp(jnp.where(usable, largest, 1.0))
    exponent = jnp.where(usable, exponent, 0)
    return jnp.ldexp(A, -exponent), exponent


def _one_matrix_at_a_time(decompose):
    """``decompose`` (one matrix in, a tuple of arrays out) that ``vmap`` batches one matrix at a
    time on the CPU (``lax.map``: LAPACK never splits a batch over the thread pool, see the
    module docstring) and as a whole batch elsewhere."""
    wrapped = jax.custom_batching.custom_vmap(decompose)

    @wrapped.def_vmap
    def rule(axis_size, in_batched, A):
        del axis_size
        out = lax.platform_dependent(A, cpu=lambda M: lax.map(wrapped, M), default=jax.vmap(decompose))
        return out, tuple(True for _ in out)

    return wrapped


_svd = _one_matrix_at_a_time(lambda A: tuple(jnp.linalg.svd(A, full_matrices=False)))
_svd_values = _one_matrix_at_a_time(lambda A: (jnp.linalg.svd(A, compute_uv=False),))
_eigh = _one_matrix_at_a_time(lambda M: tuple(jnp.linalg.eigh(M, symmetrize_input=True)))
_eigh_values = _one_matrix_at_a_time(lambda M: (jnp.linalg.eigvalsh(M),))


@jax.custom_jvp
def _singular_values(A):
    return _svd_values(A)[0]


@_singular_values.defjvp
def _singular_values_jvp(primals, tangents):
    """d sigma_i = u_i^T dA v_i (distinct singular values; JAX's SVD rule)."""
    (A,), (dA,) = primals, tangents
    U, s, Vt = _svd(A)
    return s, jnp.einsum("ai,ab,ib->i", U, dA, Vt)


@jax.custom_jvp
def symmetric_eigenvalues(M):
    """The eigenvalues of the symmetric matrix (M + M^T)/2, ascending (``jnp.linalg.eigvalsh``),
    one matrix at a time on the CPU (module docstring); differentiable: d lambda_i = v_i^T dM v_i."""
    return _eigh_values(M)[0]


@symmetric_eigenvalues.defjvp
def _symmetric_eigenvalues_jvp(primals, tangents):
    (M,), (dM,) = primals, tangents
    values, vectors = _eigh(M)
    return values, jnp.einsum("ai,ab,bi->i", vectors, dM, vectors)


def singular_values(A, B=None):
    """The singular values of A (descending), or of A^T B without forming the product unscaled
    (W_k^T W_q: each factor is scaled on its own, so the product cannot overflow either).  NaN
    when an entry of A (or B) is not finite; values beyond float's range are inf."""
    finite = jnp.all(jnp.isfinite(A)) if B is None else jnp.all(jnp.isfinite(A)) & jnp.all(jnp.isfinite(B))
    safe_A = jnp.where(finite, A, 0.0)
    scaled, exponent = _power_of_two_scale(safe_A)
    if B is not None:
        scaled_B, exponent_B = _power_of_two_scale(jnp.where(finite, B, 0.0))
        scaled, exponent = scaled.T @ scaled_B, exponent + exponent_B
    values = _singular_values(scaled)
    return jnp.where(finite, jnp.ldexp(values, exponent), jnp.nan)


def spectral_norm(A, B=None):
    """||A||_2 (or ||A^T B||_2), as ``singular_values`` computes it."""
    return singular_values(A, B)[0]
