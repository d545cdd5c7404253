"""Quantities that the condition numbers (Section 3) and the bounds (Section 4) share, each
written once: the causal mask, the centring c(x), the centred ratio and the score magnitude
(the NaN-propagating maximum is ``boundlab.errors.nan_max``).  Pure ``jnp`` functions of float64 arrays.

Notation: ||x||_{-inf} = min_i |x_i|; c(x) = x - mu(x) e with the sample mean mu.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from boundlab.errors import ratio


def causal_mask(n: int) -> jax.Array:
    """mask[i, t] = (i <= t): key i is visible to query t."""
    return jnp.arange(n)[:, None] <= jnp.arange(n)[None, :]


def centre(X, axis: int = 0) -> jax.Array:
    """c(x) = x - mu(x) e of each column (``axis=0``; a vector is one column)."""
    return X - jnp.mean(X, axis=axis, keepdims=True)


def centred_ratio(x) -> jax.Array:
    """||x||_inf / ||c(x)||_{-inf} of one vector (inf when an entry of c(x) vanishes and x != 0)."""
    return ratio(jnp.max(jnp.abs(x)), jnp.min(jnp.abs(centre(x))))


def score_magnitude(X, Wq, Wk) -> jax.Array:
    """|x_i|^T |W_k|^T |W_q| |x_t| / sqrt(d) for every pair (i, t): the (n x n) bound on the
    rounding magnitude of the scores (proof of Lemma 4.17)."""
    d = X.shape[0]
    return jnp.abs(X).T @ (jnp.abs(Wk).T @ jnp.abs(Wq)) @ jnp.abs(X) / jnp.sqrt(d)
