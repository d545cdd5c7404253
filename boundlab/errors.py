"""Relative distances between a computed and an exact array (Section 3.1 of the paper)."""

from __future__ import annotations

import jax.numpy as jnp


def ratio(numerator, denominator):
    """numerator / denominator elementwise with the paper's conventions (Section 3.1):
    x/0 = inf for x != 0 and 0/0 = 0."""
    safe = jnp.where(denominator != 0, denominator, 1)
    return jnp.where(denominator != 0, numerator / safe, jnp.where(numerator != 0, jnp.inf, 0.0))


def nan_max(a, axis=None):
    """The maximum, NaN when any entry is NaN (XLA:CPU's max may drop NaN, or give -inf for an
    all-NaN slice)."""
    a = jnp.asarray(a)
    nan = jnp.isnan(a)
    return jnp.where(jnp.any(nan, axis=axis), jnp.nan, jnp.max(jnp.where(nan, -jnp.inf, a), axis=axis))


def relative_componentwise(approx, exact, axis=None):
    """rho_c(approx, exact) = max_i |approx_i - exact_i| / |exact_i| (Section 3.1).

    With the paper's conventions x/0 = inf for x != 0 and 0/0 = 0, so rho_c is finite exactly
    when supp(approx) is contained in supp(exact).  ``axis=None`` takes the maximum over every
    entry (a matrix is one vector, as vec(X) in Section 3.1); an int or tuple keeps the other
    axes.  A NaN in either argument gives NaN: it is a flag, never hidden.

    >>> float(relative_componentwise(jnp.array([1.5, 0.0]), jnp.array([1.0, 0.0])))
    0.5
    >>> float(relative_componentwise(jnp.array([1.0, 1e-30]), jnp.array([1.0, 0.0])))
    inf
    """
    approx, exact = jnp.asarray(approx), jnp.asarray(exact)
    if approx.shape != exact.shape:
        raise ValueError(f"relative_componentwise: shapes differ, {approx.shape} vs {exact.shape}")
    return nan_max(ratio(jnp.abs(approx - exact), jnp.abs(exact)), axis=axis)  # a NaN operand gives NaN


def relative_normwise(approx, exact, ord=2, axis=None):
    """rho(approx, exact) = ||approx - exact|| / ||exact|| (Section 3.1), with 0/0 = 0.

    ``ord`` is the vector norm of the flattened arrays (2, 1 or inf; a matrix is vectorised,
    so ord=2 is its Frobenius norm); ``axis`` restricts the norm to some axes.
    """
    approx, exact = jnp.asarray(approx), jnp.asarray(exact)
    if approx.shape != exact.shape:
        raise ValueError(f"relative_normwise: shapes differ, {approx.shape} vs {exact.shape}")
    if ord not in (1, 2, jnp.inf):
        raise ValueError(f"ord must be 1, 2 or inf, got {ord!r}")

    def norm(v):
        v = jnp.abs(v)
        if ord == 1:
            return jnp.sum(v, axis=axis)
        if ord == 2:
            return jnp.sqrt(jnp.sum(v * v, axis=axis))
        return jnp.max(v, axis=axis)

    nan = jnp.isnan(approx) | jnp.isnan(exact)
    result = ratio(norm(jnp.where(nan, 0.0, approx - exact)), norm(jnp.where(nan, 0.0, exact)))
    return jnp.where(jnp.any(nan, axis=axis), jnp.nan, result)
