"""The paper's transformer parts (Section 2.2), each evaluated in a given arithmetic.

Tokens are columns: X in R^{d x n}.  Every function takes an ``arithmetic`` (``Exact()`` or
``Emulated(...)``) and, for stochastic rounding, a PRNG ``key``.  The order of operations is the
one the proofs of Section 4 analyse, so that the bounds speak about the computation run here:

* RMS norm (8), proof of Lemma 4.6: R(x)_i = fl( fl(sqrt(d) x_i) / fl(||x||_2) ), with
  ||x||_2 = fl(sqrt( recursive sum of fl(x_j^2) )).  The constant sqrt(d) is rounded to the
  format once (it is an operand), which the paper treats as exact.
* centring, proof of Lemma 4.10: c(x)_i = fl(x_i - fl(fl(sum_j x_j) / d)).
* layer norm (1), proof of Lemma 4.11: N(x) = R(c(x)), the RMS norm of the centred vector
  (equal to (x - mu e) / sqrt(nu) with the biased variance nu, as written in (1)).
* perceptron (2), Lemma 4.3.3 and proof of Lemma 4.14: fl(fl(A_1 x) + b_1) (bias added after
  the product), ReLU (exact), fl(fl(A_2 y) + b_2).
* similarity scores (3), proof of Lemma 4.17: q_t = fl(W_q x_t), k_i = fl(W_k x_i),
  S_i = fl( fl(k_i^T q_t) / fl(sqrt(d)) ): one scaling of each dot product.
* softmax (4), as written (no max shift unless asked): e_i = fl(exp(s_i)),
  sigma = recursive sum of e_i, psi_i = fl(e_i / sigma).
* attention (5), proof of Lemma 4.21: column t is fl(W_v fl(X_t psi_t)).

Causal attention is computed for all columns at once with masked entries set to exact zeros,
which add nothing and change no rounding: the result is bit for bit that of the column-by-
column recursion.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from boundlab.runtime.compilation import compiled
from boundlab.accumulation import fold_key
from boundlab.arithmetic import Exact
from boundlab.quantities import causal_mask



def sqrt_dim(d: int, arithmetic) -> jax.Array:
    """fl(sqrt(d)): the constant of (3) and (8) as a format number (rounded to nearest).

    sqrt(d) is computed in float64 and rounded once more to the format, which equals the
    correctly rounded value for every format boundlab emulates (p = 53 >= 2t + 2).
    """
    return arithmetic.cast(math.sqrt(d))


@compiled(static_argnames=('arithmetic',))
def rms_norm(X, arithmetic=Exact(), key=None):
    """R(x) = sqrt(d) x / ||x||_2 (eq. 8), for each column of X (or a vector x in R^d)."""
    d = X.shape[0]
    squares = arithmetic.mul(X, X, fold_key(key, 0))
    norm = arithmetic.sqrt(arithmetic.sum(squares, axis=0, key=fold_key(key, 1)), fold_key(key, 2))
    scaled = arithmetic.mul(sqrt_dim(d, arithmetic), X, fold_key(key, 3))
    return arithmetic.div(scaled, norm, fold_key(key, 4))


@compiled(static_argnames=('arithmetic',))
def centring(X, arithmetic=Exact(), key=None):
    """c(x) = x - mu(x) e with the sample mean mu (Lemma 3.7), for each column of X."""
    d = X.shape[0]
    total = arithmetic.sum(X, axis=0, key=fold_key(key, 0))
    mean = arithmetic.div(total, arithmetic.cast(float(d)), fold_key(key, 1))
    return arithmetic.sub(X, mean, fold_key(key, 2))


@compiled(static_argnames=('arithmetic',))
def layer_norm(X, arithmetic=Exact(), key=None):
    """N(x) = (x - mu e) / sqrt(nu) (eq. 1, biased variance), evaluated as R(c(x))."""
    return rms_norm(centring(X, arithmetic, fold_key(key, 0)), arithmetic, fold_key(key, 1))


NORMS = {"layer": layer_norm, "rms": rms_norm}


@compiled(static_argnames=('arithmetic', 'return_hidden'))
def perceptron(X, A1, b1, A2, b2, arithmetic=Exact(), key=None, return_hidden=False):
    """M(x) = A_2 relu(A_1 x + b_1) + b_2 (eq. 2) for each column of X.

    ``return_hidden`` also gives L_1(x) = fl(fl(A_1 x) + b_1) before the ReLU (Lemma 4.14's
    genericity condition is about it).
    """
    hidden = arithmetic.add(arithmetic.matmul(A1, X, fold_key(key, 0)), b1[:, None], fold_key(key, 1))
    active = jnp.maximum(hidden, 0)
    out = arithmetic.add(arithmetic.matmul(A2, active, fold_key(key, 2)), b2[:, None], fold_key(key, 3))
    return (out, hidden) if return_hidden else out


@compiled(static_argnames=('arithmetic',))
def scores(X, Wq, Wk, arithmetic=Exact(), key=None):
    """Similarity scores (3) of every query: S[i, t] = (W_k x_i)^T (W_q x_t) / sqrt(d), i <= t.

    Column t is S(X_t) in R^t padded with zeros (entries i > t are not part of (3)).
    """
    d, n = X.shape
    queries = arithmetic.matmul(Wq, X, fold_key(key, 0))
    keys_ = arithmetic.matmul(Wk, X, fold_key(key, 1))
    products = arithmetic.matmul(keys_.T, queries, fold_key(key, 2))
    S = arithmetic.div(products, sqrt_dim(d, arithmetic), fold_key(key, 3))
    return jnp.where(causal_mask(n), S, 0)


@compiled(static_argnames=('arithmetic', 'max_shift'))
def softmax(S, arithmetic=Exact(), key=None, mask=None, max_shift=False):
    """psi(s)_i = exp(s_i) / sum_j exp(s_j) (eq. 4) down each column of S.

    ``mask`` (same shape, boolean) restricts each column to its visible entries; masked
    entries of the result are 0.  ``max_shift`` subtracts each column's maximum first (not the
    paper's algorithm, but what libraries do; it avoids overflow of exp).
    """
    if mask is None:
        mask = jnp.ones(S.shape, dtype=bool)
    S = jnp.where(mask, S, 0)
    if max_shift:
        column_max = jnp.max(jnp.where(mask, S, -jnp.inf), axis=0)
        S = jnp.where(mask, arithmetic.sub(S, column_max, fold_key(key, 0)), 0)
    E = jnp.where(mask, arithmetic.exp(S, fold_key(key, 1)), 0)
    total = arithmetic.sum(E, axis=0, key=fold_key(key, 2))
    return jnp.where(mask, arithmetic.div(E, total, fold_key(key, 3)), 0)


@compiled(static_argnames=('arithmetic', 'max_shift', 'return_internals'))
def attention(X, Wq, Wk, Wv, arithmetic=Exact(), key=None, max_shift=False, return_internals=False):
    """Causal single-head self-attention (5): column t is W_v X_t psi(S(X_t)).

    ``return_internals`` also gives the score matrix and the softmax matrix (column t holds
    S(X_t) and psi(S(X_t)), zero below the diagonal's complement i > t).
    """
    n = X.shape[1]
    S = scores(X, Wq, Wk, arithmetic, fold_key(key, 0))
    P = softmax(S, arithmetic, fold_key(key, 1), mask=causal_mask(n), max_shift=max_shift)
    mixed = arithmetic.matmul(X, P, fold_key(key, 2))  # column t: X_t psi_t
    out = arithmetic.matmul(Wv, mixed, fold_key(key, 3))
    return (out, S, P) if return_internals else out
