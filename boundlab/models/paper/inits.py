"""Random parameters and inputs that reproduce the setups of the paper's Figures 1-4."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from boundlab.runtime import draws
from boundlab.runtime.x64 import require_x64
from boundlab.models.paper.network import Params

SCHEMES = ("figure1", "figure2", "figure3", "figure4")


def init(key, scheme: str = "figure1", *, d: int = 20, n: int = 20, D: int = 20, L: int = 40,
         lam: float = 1.0, input_scale: float = 1.0, dtype=jnp.float64):
    """Parameters of an L-layer network and an input X in R^{d x n}, as in the paper's figures.

    * ``figure1`` (Figure 1): W_q, W_k, W_v with N(0, 1) entries; A_1, A_2 with N(0, 1/sqrt(d))
      entries (variance 1/sqrt(d), as the caption says); W_k^T W_q multiplied on both sides by
      diagonal matrices with U[1/4, 4] entries; X with N(0, 1) entries.
    * ``figure2`` (Figure 2): ``figure1`` with W_k^T W_q multiplied by ``lam`` (lambda).
    * ``figure3`` (Figure 3): W_q = W_k = W_v = I; X with N(1, 0.01) entries (mean 1, variance
      0.01), times ``input_scale`` to grow the input norm.  The perceptron is as in figure1
      (Figure 3 uses the attention alone).
    * ``figure4`` (Figure 4): every matrix and bias with N(0, 0.1) entries; X with N(0, 1).

    Choices where the paper is silent, made here: the biases b_1, b_2 have the distribution of
    their layer's matrices (N(0, 1/sqrt(d)) in figure1-3, N(0, 0.1) in figure4), so that the
    bias terms of Lemmas 4.3 and 4.14 are exercised; the diagonal scalings enter as
    W_k <- W_k D_1 and W_q <- W_q D_2, so W_k^T W_q <- D_1 W_k^T W_q D_2; lambda multiplies W_q.
    ``input_scale`` multiplies X in every scheme.

    Vmappable over keys: ``jax.vmap(lambda k: init(k, "figure1", d=20, n=20, D=20, L=40))(keys)``.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; use one of {SCHEMES}")
    for name, value in (("d", d), ("n", n), ("D", D), ("L", L)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if jnp.dtype(dtype) == jnp.float64:
        require_x64("init(..., dtype=float64)")
    k = jax.random.split(key, 10)

    def normal(k_, shape, variance):
        return jnp.sqrt(jnp.asarray(variance, dtype)) * draws.normal(k_, shape, dtype)

    mlp_variance = 0.1 if scheme == "figure4" else 1.0 / jnp.sqrt(jnp.asarray(d, dtype))
    A1 = normal(k[3], (L, D, d), mlp_variance)
    b1 = normal(k[4], (L, D), mlp_variance)
    A2 = normal(k[5], (L, d, D), mlp_variance)
    b2 = normal(k[6], (L, d), mlp_variance)
    if scheme == "figure3":
        eye = jnp.broadcast_to(jnp.eye(d, dtype=dtype), (L, d, d))
        Wq = Wk = Wv = eye
        X = 1.0 + normal(k[9], (d, n), 0.01)
    else:
        attention_variance = 0.1 if scheme == "figure4" else 1.0
        Wq = normal(k[0], (L, d, d), attention_variance)
        Wk = normal(k[1], (L, d, d), attention_variance)
        Wv = normal(k[2], (L, d, d), attention_variance)
        if scheme in ("figure1", "figure2"):
            left = draws.uniform(k[7], (L, 1, d), dtype, 0.25, 4.0)
            right = draws.uniform(k[8], (L, 1, d), dtype, 0.25, 4.0)
            Wk = Wk * left
            Wq = Wq * right
        if scheme == "figure2":
            Wq = Wq * jnp.asarray(lam, dtype)
        X = normal(k[9], (d, n), 1.0)
    return Params(Wq, Wk, Wv, A1, b1, A2, b2), X * jnp.asarray(input_scale, dtype)
