"""Singular values that neither overflow in LAPACK nor make it print.

``jnp.linalg.svd`` of a matrix whose entries are huge (or whose product is: W_k^T W_q with
entries of 1e200) hands LAPACK a matrix with an infinite norm; its scaling routine then writes
``On entry to DLASCL parameter number 4 had an illegal value`` to the terminal and the result is
NaN.  Here the matrix is scaled by a power of two first (exact: every singular value scales by
the same power of two, so nothing is rounded that was not), and a matrix with a non-finite entry
never reaches LAPACK: its singular values are NaN.  Differentiable where the matrix is finite.
"""

from __future__ import annotations

import jax.numpy as jnp


def _power_of_two_scale(A):
    """(A / 2^e, e) with max|A / 2^e| in [0.5, 1) (e = 0 for a zero or non-finite matrix)."""
    largest = jnp.max(jnp.abs(A))
    usable = jnp.isfinite(largest) & (largest > 0)
    _, exponent = jnp.frexp(jnp.where(usable, largest, 1.0))
    exponent = jnp.where(usable, exponent, 0)
    return jnp.ldexp(A, -exponent), exponent


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
    values = jnp.linalg.svd(scaled, compute_uv=False)
    return jnp.where(finite, jnp.ldexp(values, exponent), jnp.nan)


def spectral_norm(A, B=None):
    """||A||_2 (or ||A^T B||_2), as ``singular_values`` computes it."""
    return singular_values(A, B)[0]
