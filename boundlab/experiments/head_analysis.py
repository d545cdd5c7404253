"""The real-model study's per-head analysis: the rank of W_k^T W_q, the softmax's condition
numbers (Lemma 3.13), the head attention's mixed condition number (Lemma 3.3 by ``jax.jacfwd``)
and the sigma_min-free score bound of a head with biases."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from boundlab.condition import autodiff, closed_forms
from boundlab.linalg import singular_values
from boundlab.models.encoder.network import head_attention


def weight_rank(Wq, Wk) -> tuple[jax.Array, jax.Array]:
    """(numerical rank of W_k^T W_q, sigma_{r+1} / sigma_1 with r = d_h): the rank counts singular
    values above d 2^-52 sigma_1 (round-off of an exactly singular product lies below)."""
    sigma = singular_values(Wk, Wq)
    d = Wq.shape[1]
    rank = jnp.sum(sigma > d * 2.0 ** -52 * sigma[0])
    return rank, sigma[Wq.shape[0]] / sigma[0]


def score_bound(X, Wq, bq, Wk, bk, u: float):
    """The sigma_min-free score bound of one head with biases (Lemma 4.17 (absolute), adapted):

        |fl(S)_{it} - S_{it}| <= (2(d + 1) + d_h + 1) u m_{it} + O(u^2),
        m_{it} = (|W_k||x_i| + |b_k|)^T (|W_q||x_t| + |b_q|) / sqrt(d_h),

    for S_{it} = k_i^T q_t / sqrt(d_h), q = fl(fl(W_q x) + b_q) (a (d+1)-term recursive sum:
    gamma_{d+1}), k likewise, the d_h-term product (gamma_{d_h}) and the division by fl(sqrt(d_h))
    (one rounding; the constant's own rounding is the +1 of the operand).  Each of the three
    first-order terms is at most its gamma times m_{it}.  Returns (bound (n x n), max |S|)."""
    d, dh = X.shape[0], Wq.shape[0]
    q_mag = jnp.abs(Wq) @ jnp.abs(X) + jnp.abs(bq)[:, None]
    k_mag = jnp.abs(Wk) @ jnp.abs(X) + jnp.abs(bk)[:, None]
    magnitude = k_mag.T @ q_mag / math.sqrt(dh)
    S = (Wk @ X + bk[:, None]).T @ (Wq @ X + bq[:, None]) / math.sqrt(dh)
    return (2 * (d + 1) + dh + 1) * u * magnitude, jnp.max(jnp.abs(S))


def analyse_heads(params, config, X, u: float) -> list[dict]:
    """Per layer and head: rank(W_k^T W_q), sigma_{d_h+1}/sigma_1, the softmax's kappa_cc and
    kappa_c,inf (Lemma 3.13, worst query), the head attention's mixed condition number
    kappa_c,inf (Lemma 3.3 by jacfwd) and the score bound relative to max |S| (``score_bound``).

    X: (L + 1, d, n) exact hidden states of one sentence, valid tokens only (layer l's input is X[l]).
    """
    H, dh = config.heads, config.head_dim

    def heads_of(W, b):
        return W.reshape(H, dh, -1), b.reshape(H, dh)

    @jax.jit
    def one_layer(Xl, layer):
        Wq, bq = heads_of(layer["Wq"], layer["bq"])
        Wk, bk = heads_of(layer["Wk"], layer["bk"])
        Wv, bv = heads_of(layer["Wv"], layer["bv"])

        def one_head(wq, b_q, wk, b_k, wv, b_v):
            rank, gap = weight_rank(wq, wk)
            bound, scale = score_bound(Xl, wq, b_q, wk, b_k, u)
            S = (wk @ Xl + b_k[:, None]).T @ (wq @ Xl + b_q[:, None]) / math.sqrt(dh)
            soft = jax.vmap(closed_forms.softmax, in_axes=1)(S)
            attention = autodiff.mixed(lambda Y: head_attention(Y, wq, b_q, wk, b_k, wv, b_v), Xl)
            return {"rank": rank, "sigma_gap": gap, "softmax_kappa_cc": jnp.max(soft.kappa_cc),
                    "softmax_kappa_c_inf": jnp.max(soft.kappa_c_inf), "attention_kappa_c_inf": attention.value,
                    "score_bound_relative": jnp.max(bound) / scale}

        return jax.vmap(one_head)(Wq, bq, Wk, bk, Wv, bv)

    rows = []
    for index in range(config.layers):
        layer = jax.tree.map(lambda a, i=index: jnp.asarray(a[i], jnp.float64), params["layers"])
        values = jax.device_get(one_layer(jnp.asarray(X[index], jnp.float64), layer))
        for head in range(H):
            rows.append({"layer": index + 1, "head": head + 1} |
                        {name: float(v[head]) for name, v in values.items()})
    return rows
