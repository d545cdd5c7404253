"""Section 4.5: the attention and feed-forward sub-blocks (Lemmas 4.25-4.28).

Each function takes the sub-block's exact input (X in R^{d x n} for attention, one token y in
R^d for the perceptron), one layer's ``Params`` and, keyword-only, u; it returns a ``Bound``
with ``coefficient`` (times u) and ``input_gain`` (times rho_c(X^, X)).  The factors are named
after the paper: xi(f_A, X) = max_{i,t} (|X| + |A(N(X))|)_{it} / |f_A(X)|_{it} (and likewise for
g_A, f_M, g_M), xi(A, .) of Remark 3.15, xi(M, .) of Lemma 4.14, |Omega| = |supp_+(L_1(.))|, and
the growth G = 1 + 4 sqrt(d) sigma_max(|W_k|^T|W_q|) sigma_max(W_k^T W_q) / sigma_min(W_k^T W_q)
that Corollary 4.23 contributes on normalised columns (||x_t||_2^2 = d).

G rests on Remark 4.18, which is false in general (README, "Errata"); ``sigma_min_free=True``
replaces it by 1 + 4 sqrt(d) max_{i,t} |x_i|^T|W_k|^T|W_q||x_t| / d on the normalised columns,
the factor the valid absolute score bound (``lemma_4_17_absolute``) gives in the same proof.
``intermediates`` (one layer of ``forward(..., Exact(), return_intermediates=True)``) lets a
caller that has the exact pass skip recomputing N(X) and A(N(X)).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from boundlab.bounds.statement import Statement
from boundlab.arithmetic import Exact
from boundlab.bounds.record import Bound, bound
from boundlab.bounds.terms import growth, layer_norm_alpha, perceptron_terms, residual_xi, statement
from boundlab.condition import closed_forms
from boundlab.quantities import centred_ratio
from boundlab.models.blocks import NORMS, attention


class AttentionParts(NamedTuple):
    """The attention sub-block's factors at X (Lemmas 4.25, 4.26)."""

    xi_residual: jax.Array  # xi(f_A, X) or xi(g_A, X)
    xi_attention: jax.Array  # xi(A, N(X))
    growth: jax.Array  # G, as printed
    growth_free: jax.Array  # G without sigma_min
    layer_norm: jax.Array  # 1 + max_t ||x_t||_inf / ||c(x_t)||_-inf (1 for RMS norm)
    nonsingular: jax.Array  # W_k^T W_q non-singular (the printed G needs it)
    flags: dict


def attention_parts(X, layer, norm: str, u, normalised=None, attended=None, softmax=None) -> AttentionParts:
    """Factors of the attention sub-block at the exact input X; ``normalised`` = N(X),
    ``attended`` = A(N(X)) and ``softmax`` = its softmax matrix when known (all three from an
    exact forward's intermediates: xi(A, N(X)) then reuses them)."""
    d, n = X.shape
    normalised = NORMS[norm](X, Exact()) if normalised is None else normalised
    attended = attention(normalised, layer.Wq, layer.Wk, layer.Wv, Exact()) if attended is None else attended
    xi_residual = residual_xi(X, attended)
    if softmax is None:
        xi_attention = closed_forms.attention_xi(normalised, layer.Wq, layer.Wk, layer.Wv)
    else:
        xi_attention = closed_forms.attention_xi_from(normalised, layer.Wv, softmax, attended)
    printed, free, values = growth(layer.Wq, layer.Wk, normalised)
    name = "f_A" if norm == "rms" else "g_A"
    flags = {"A(N(X)) generic": jnp.isfinite(xi_attention), f"{name}(X) generic": jnp.isfinite(xi_residual),
             "d >= 2": jnp.asarray(d >= 2), "n u < 1": jnp.asarray(n * u < 1)}
    layer_norm = jnp.ones(())
    if norm == "layer":
        layer_norm = 1 + jnp.max(jax.vmap(centred_ratio, in_axes=1)(X))
        flags["layer-norm alpha-condition"] = jnp.all(jax.vmap(lambda x: layer_norm_alpha(x, u), in_axes=1)(X))
    return AttentionParts(xi_residual, xi_attention, printed, free, layer_norm, values.nonsingular, flags)


class FeedForwardParts(NamedTuple):
    """The feed-forward sub-block's factors at one token y (Lemmas 4.27, 4.28)."""

    xi_residual: jax.Array  # xi(f_M, y) or xi(g_M, y)
    xi_perceptron: jax.Array  # xi(M, N(y))
    omega: jax.Array  # |Omega|
    layer_norm: jax.Array  # 1 + ||y||_inf / ||c(y)||_-inf (1 for RMS norm)
    flags: dict


def feed_forward_parts(y, layer, norm: str, u, normalised=None, hidden=None) -> FeedForwardParts:
    """Factors of the feed-forward sub-block at one exact token y; ``normalised`` = N(y) and
    ``hidden`` = L_1(N(y)) when known."""
    d = y.shape[0]
    r = NORMS[norm](y, Exact()) if normalised is None else normalised
    parts = perceptron_terms(r, layer.A1, layer.b1, layer.A2, layer.b2, u, hidden)
    xi_residual = residual_xi(y, parts.output)
    name = "f_M" if norm == "rms" else "g_M"
    flags = {"perceptron alpha-condition": parts.alpha_condition, "M(N(y)) generic": jnp.isfinite(parts.xi),
             f"{name}(y) generic": jnp.isfinite(xi_residual), "d u < 1": jnp.asarray(d * u < 1)}
    layer_norm = jnp.ones(())
    if norm == "layer":
        layer_norm = 1 + centred_ratio(y)
        flags["layer-norm alpha-condition"] = layer_norm_alpha(y, u)
    return FeedForwardParts(xi_residual, parts.xi, parts.omega, layer_norm, flags)


def attention_record(parts: AttentionParts, norm: str, n: int, d: int, sigma_min_free: bool = False) -> Bound:
    """Lemma 4.25 (RMS norm) or 4.26 (layer norm) from the parts: K = xi(f_A) xi(A) G [(1 + ...)],
    bound K ((2n + 6d) u + 3 rho) or K ((2n + 7d) u + 4 rho)."""
    name, constant, gain = (Statement.LEMMA_4_25, 2 * n + 6 * d, 3.0) if norm == "rms" else (Statement.LEMMA_4_26, 2 * n + 7 * d, 4.0)
    G = parts.growth_free if sigma_min_free else parts.growth
    K = parts.xi_residual * parts.xi_attention * G * parts.layer_norm
    residual = "f_A" if norm == "rms" else "g_A"
    terms = {f"xi({residual}, X)": parts.xi_residual, "xi(A, N(X))": parts.xi_attention, "G": G}
    if norm == "layer":
        terms["1 + max_t ||x_t||_inf/||c(x_t)||_-inf"] = parts.layer_norm
    flags = dict(parts.flags)
    if not sigma_min_free:
        flags["W_k^T W_q non-singular"] = parts.nonsingular
    return bound(name, K * constant, K * gain, terms=terms, flags=flags)


@statement()
def lemma_4_25(X, layer, *, u, sigma_min_free: bool = False, intermediates=None) -> Bound:
    """Lemma 4.25 (RMS norm): rho_c(fl(f_A(X^)), f_A(X)) <= xi(f_A, X) xi(A, R*(X)) G
    ((2n + 6d) u + 3 rho_c(X^, X)) + O(u^2 + rho^2), f_A(X) = X + A(R*(X)); hypotheses:
    A(R*(X)) generic, W_k^T W_q non-singular, d >= 2."""
    d, n = X.shape
    given = {} if intermediates is None else {"normalised": intermediates.attention_input,
                                              "attended": intermediates.attention, "softmax": intermediates.softmax}
    return attention_record(attention_parts(X, layer, "rms", u, **given), "rms", n, d, sigma_min_free)


@statement()
def lemma_4_26(X, layer, *, u, sigma_min_free: bool = False, intermediates=None) -> Bound:
    """Lemma 4.26 (layer norm): rho_c(fl(g_A(X^)), g_A(X)) <= xi(g_A, X) xi(A, N*(X)) G
    (1 + max_t ||x_t||_inf / ||c(x_t)||_-inf) ((2n + 7d) u + 4 rho_c(X^, X)) + O(u^2 + rho^2);
    hypotheses as Lemma 4.25 plus ||c(x_t)||_-inf > 2 (1 + u) gamma_d ||x_t||_inf for every t."""
    d, n = X.shape
    given = {} if intermediates is None else {"normalised": intermediates.attention_input,
                                              "attended": intermediates.attention, "softmax": intermediates.softmax}
    return attention_record(attention_parts(X, layer, "layer", u, **given), "layer", n, d, sigma_min_free)


def feed_forward_record(parts: FeedForwardParts, norm: str, d: int) -> Bound:
    """Lemma 4.27 (RMS norm) or 4.28 (layer norm) from the parts, K = xi(f_M) xi(M) [(1 + ...)]:
    K ((5d + |Omega|) u + 3 rho) or K ((6d + |Omega|) u + 4 rho).  Elementwise, so stacked parts
    give per-token records."""
    name, constant, gain = (Statement.LEMMA_4_27, 5 * d, 3.0) if norm == "rms" else (Statement.LEMMA_4_28, 6 * d, 4.0)
    K = parts.xi_residual * parts.xi_perceptron * parts.layer_norm
    residual = "f_M" if norm == "rms" else "g_M"
    terms = {f"xi({residual}, y)": parts.xi_residual, "xi(M, N(y))": parts.xi_perceptron, "|Omega|": parts.omega}
    if norm == "layer":
        terms["1 + ||y||_inf/||c(y)||_-inf"] = parts.layer_norm
    return bound(name, K * (constant + parts.omega), K * gain, terms=terms, flags=parts.flags)


@statement(vectors=("y",))
def lemma_4_27(y, layer, *, u) -> Bound:
    """Lemma 4.27 (RMS norm): rho_c(fl(f_M(y^)), f_M(y)) <= xi(f_M, y) xi(M, R(y))
    ((5d + |Omega|) u + 3 rho_c(y^, y)) + O(u^2 + rho^2), f_M(y) = y + M(R(y)), Omega =
    supp_+(L_1(R(y))); hypotheses: M(R(y)) generic, |L_1(R(y))| > (u + (1 + u) gamma_d)
    (|A_1||R(y)| + |b_1|)."""
    return feed_forward_record(feed_forward_parts(y, layer, "rms", u), "rms", y.shape[0])


@statement(vectors=("y",))
def lemma_4_28(y, layer, *, u) -> Bound:
    """Lemma 4.28 (layer norm): rho_c(fl(g_M(y^)), g_M(y)) <= xi(g_M, y) xi(M, N(y))
    (1 + ||y||_inf / ||c(y)||_-inf) ((6d + |Omega|) u + 4 rho_c(y^, y)) + O(u^2 + rho^2);
    hypotheses as Lemma 4.27 plus ||c(y)||_-inf > 2 (1 + u) gamma_d ||y||_inf."""
    return feed_forward_record(feed_forward_parts(y, layer, "layer", u), "layer", y.shape[0])
