"""The paper's transformer written in plain ``jax.numpy``: no arithmetic argument.

The same network as ``forward`` (eqs. 1-10) in the same order of operations (see
``boundlab.models.blocks``), written the way a user writes a model, so that
``boundlab.emulate(plain_forward, Emulated(...))`` reproduces ``forward(..., Emulated(...))``
bit for bit and ``boundlab.first_order(plain_forward, ...)`` bounds the same computation.  The
constants sqrt(d) and d are Python floats: ``emulate`` rounds them into the format as operands,
as ``forward`` does.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from boundlab.quantities import causal_mask


def rms_norm(X):
    """R(x) = fl(fl(sqrt(d) x) / fl(sqrt(sum fl(x_j^2)))) for each column (eq. 8)."""
    return (math.sqrt(X.shape[0]) * X) / jnp.sqrt(jnp.sum(X * X, axis=0))


def layer_norm(X):
    """N(x) = R(c(x)), c(x) = x - fl(fl(sum x_j) / d) (eq. 1)."""
    return rms_norm(X - jnp.sum(X, axis=0) / X.shape[0])


def block(X, layer, norm: str = "layer"):
    """One pre-norm block (6) (or (9) with ``norm="rms"``); ``layer`` = (Wq, Wk, Wv, A1, b1, A2, b2)."""
    normalise = layer_norm if norm == "layer" else rms_norm
    Wq, Wk, Wv, A1, b1, A2, b2 = layer
    d, n = X.shape
    mask = causal_mask(n)
    Xn = normalise(X)
    with jax.named_scope("attention"):
        S = jnp.where(mask, (Wk @ Xn).T @ (Wq @ Xn) / math.sqrt(d), 0)
        E = jnp.where(mask, jnp.exp(jnp.where(mask, S, 0)), 0)
        P = jnp.where(mask, E / jnp.sum(E, axis=0), 0)
        Y = X + Wv @ (Xn @ P)
    with jax.named_scope("perceptron"):
        Yn = normalise(Y)
        return Y + (A2 @ jnp.maximum(A1 @ Yn + b1[:, None], 0) + b2[:, None])


def plain_forward(params, X, norm: str = "layer", return_layers: bool = False, unroll_layers: bool = False):
    """The depth-L network (7)/(10) on stacked ``params`` (a ``Params`` or the tuple of its arrays).

    Layers run under ``lax.scan`` (one compiled block, the fast choice); ``unroll_layers`` runs
    them in a Python loop, each in ``jax.named_scope("layer<l>")``, so that the sites of
    ``boundlab.first_order`` are attributed to layers (slower to compile at depth).
    ``return_layers``: the outputs of every layer stacked, (L, d, n), instead of the last.
    """
    if norm not in ("layer", "rms"):
        raise ValueError(f"norm must be 'layer' or 'rms', got {norm!r}")
    layers = tuple(params)
    if not unroll_layers:
        def step(carry, layer):
            out = block(carry, layer, norm)
            return out, out

        last, outputs = jax.lax.scan(step, X, layers)
        return outputs if return_layers else last
    outputs = []
    for index in range(layers[0].shape[0]):
        with jax.named_scope(f"layer{index + 1}"):
            X = block(X, tuple(p[index] for p in layers), norm)
        outputs.append(X)
    return jnp.stack(outputs) if return_layers else X
