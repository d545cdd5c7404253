"""Section 4.5: the attention and feed-forward sub-blocks (Lemmas 4.25-4.28).

Each function takes the sub-block's exact input (X in R^{d x n} for attention, one token y in
R^d for the perceptron), one layer's ``Params`` and u, and returns a ``Bound`` with
``coefficient`` (times u) and ``input_gain`` (times rho_c(X^, X)).  The factors are named after
the paper: xi(f_A, X) = max_{i,t} (|X| + |A(N(X))|)_{it} / |f_A(X)|_{it} (and likewise for g_A,
f_M, g_M), xi(A, .) of Remark 3.15, xi(M, .) of Lemma 4.14, |Omega| = |supp_+(L_1(.))|, and the
growth G = 1 + 4 sqrt(d) sigma_max(|W_k|^T|W_q|) sigma_max(W_k^T W_q) / sigma_min(W_k^T W_q)
that Corollary 4.23 contributes on normalised columns (||x_t||_2^2 = d).

G rests on Remark 4.18, which is false in general (README, "Errata"); ``sigma_min_free=True``
replaces it by 1 + 4 sqrt(d) max_{i,t} |x_i|^T|W_k|^T|W_q||x_t| / d on the normalised columns,
the factor the valid absolute score bound (``lemma_4_17_absolute``) gives in the same proof.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from boundlab.arithmetic import Exact
from boundlab.bounds.modules import _affine_error_factor, _layer_norm_alpha, _perceptron_terms, remark_4_18
from boundlab.bounds.record import Bound, bound
from boundlab.condition import closed_forms
from boundlab.errors import ratio as _ratio
from boundlab.transformer.layers import NORMS, attention


def growth(layer, normalised_X, sigma_min_free: bool = False):
    """(G, flags): the factor of Corollary 4.23 on normalised columns, or its sigma_min-free
    replacement."""
    d = layer.Wq.shape[0]
    if not sigma_min_free:
        printed = remark_4_18(layer.Wq, layer.Wk)
        return 1 + 4 * jnp.sqrt(d) * printed.coefficient * printed.terms["sigma_max(W_k^T W_q)"], printed.flags
    magnitude = jnp.abs(normalised_X).T @ (jnp.abs(layer.Wk).T @ jnp.abs(layer.Wq)) @ jnp.abs(normalised_X)
    return 1 + 4 * jnp.sqrt(d) * jnp.max(magnitude) / d, {}


def centred_ratio(X):
    """max_t ||x_t||_inf / ||c(x_t)||_-inf over the columns of X (a vector is one column)."""
    X = X if X.ndim == 2 else X[:, None]
    c = X - jnp.mean(X, axis=0, keepdims=True)
    return jnp.max(_ratio(jnp.max(jnp.abs(X), axis=0), jnp.min(jnp.abs(c), axis=0)))


def _residual_xi(x, branch):
    """xi(f, x) = max_i (|x_i| + |branch_i|) / |x_i + branch_i| of a residual x + branch."""
    return jnp.max(_ratio(jnp.abs(x) + jnp.abs(branch), jnp.abs(x + branch)))


def _attention_subblock(X, layer, norm, u, sigma_min_free):
    d, n = X.shape
    Z = NORMS[norm](X, Exact())
    A = attention(Z, layer.Wq, layer.Wk, layer.Wv, Exact())
    xi_residual = _residual_xi(X, A)
    xi_attention = closed_forms.attention_xi(Z, layer.Wq, layer.Wk, layer.Wv)
    G, growth_flags = growth(layer, Z, sigma_min_free)
    name = "f_A" if norm == "rms" else "g_A"
    terms = {f"xi({name}, X)": xi_residual, "xi(A, N(X))": xi_attention, "G": G}
    flags = {"A(N(X)) generic": jnp.isfinite(xi_attention), f"{name}(X) generic": jnp.isfinite(xi_residual),
             "d >= 2": d >= 2, "n u < 1": n * u < 1, **growth_flags}
    return xi_residual * xi_attention * G, terms, flags


def lemma_4_25(X, layer, u=0.0, sigma_min_free: bool = False) -> Bound:
    """Lemma 4.25 (RMS norm): rho_c(fl(f_A(X^)), f_A(X)) <= xi(f_A, X) xi(A, R*(X)) G
    ((2n + 6d) u + 3 rho_c(X^, X)) + O(u^2 + rho^2), f_A(X) = X + A(R*(X)); hypotheses:
    A(R*(X)) generic, W_k^T W_q non-singular, d >= 2."""
    d, n = X.shape
    K, terms, flags = _attention_subblock(X, layer, "rms", u, sigma_min_free)
    return bound("Lemma 4.25", K * (2 * n + 6 * d), 3 * K, terms=terms, flags=flags)


def lemma_4_26(X, layer, u=0.0, sigma_min_free: bool = False) -> Bound:
    """Lemma 4.26 (layer norm): rho_c(fl(g_A(X^)), g_A(X)) <= xi(g_A, X) xi(A, N*(X)) G
    (1 + max_t ||x_t||_inf / ||c(x_t)||_-inf) ((2n + 7d) u + 4 rho_c(X^, X)) + O(u^2 + rho^2);
    hypotheses as Lemma 4.25 plus ||c(x_t)||_-inf > 2 (1 + u) gamma_d ||x_t||_inf for every t."""
    d, n = X.shape
    K, terms, flags = _attention_subblock(X, layer, "layer", u, sigma_min_free)
    layer_norm_factor = 1 + centred_ratio(X)
    K = K * layer_norm_factor
    flags["layer-norm alpha-condition"] = jnp.all(jax.vmap(lambda x: _layer_norm_alpha(x, u, 1.0), 1)(X))
    return bound("Lemma 4.26", K * (2 * n + 7 * d), 4 * K,
                 terms={**terms, "1 + max_t ||x_t||_inf/||c(x_t)||_-inf": layer_norm_factor}, flags=flags)


def _perceptron_subblock(y, layer, norm, u):
    d = y.shape[0]
    r = NORMS[norm](y, Exact())
    hidden, xi_perceptron, omega = _perceptron_terms(r, layer.A1, layer.b1, layer.A2, layer.b2)
    out = layer.A2 @ jnp.maximum(hidden, 0) + layer.b2
    xi_residual = _residual_xi(y, out)
    alpha = jnp.all(jnp.abs(hidden) > _affine_error_factor(d, u) * (jnp.abs(layer.A1) @ jnp.abs(r) + jnp.abs(layer.b1)))
    name = "f_M" if norm == "rms" else "g_M"
    terms = {f"xi({name}, y)": xi_residual, "xi(M, N(y))": xi_perceptron, "|Omega|": omega}
    flags = {"perceptron alpha-condition": alpha, "M(N(y)) generic": jnp.isfinite(xi_perceptron),
             f"{name}(y) generic": jnp.isfinite(xi_residual), "d u < 1": d * u < 1}
    return xi_residual * xi_perceptron, omega, terms, flags


def lemma_4_27(y, layer, u=0.0) -> Bound:
    """Lemma 4.27 (RMS norm): rho_c(fl(f_M(y^)), f_M(y)) <= xi(f_M, y) xi(M, R(y))
    ((5d + |Omega|) u + 3 rho_c(y^, y)) + O(u^2 + rho^2), f_M(y) = y + M(R(y)), Omega =
    supp_+(L_1(R(y))); hypotheses: M(R(y)) generic, |L_1(R(y))| > (u + (1 + u) gamma_d)
    (|A_1||R(y)| + |b_1|)."""
    d = y.shape[0]
    K, omega, terms, flags = _perceptron_subblock(y, layer, "rms", u)
    return bound("Lemma 4.27", K * (5 * d + omega), 3 * K, terms=terms, flags=flags)


def lemma_4_28(y, layer, u=0.0) -> Bound:
    """Lemma 4.28 (layer norm): rho_c(fl(g_M(y^)), g_M(y)) <= xi(g_M, y) xi(M, N(y))
    (1 + ||y||_inf / ||c(y)||_-inf) ((6d + |Omega|) u + 4 rho_c(y^, y)) + O(u^2 + rho^2);
    hypotheses as Lemma 4.27 plus ||c(y)||_-inf > 2 (1 + u) gamma_d ||y||_inf."""
    d = y.shape[0]
    K, omega, terms, flags = _perceptron_subblock(y, layer, "layer", u)
    layer_norm_factor = 1 + centred_ratio(y)
    K = K * layer_norm_factor
    flags["layer-norm alpha-condition"] = _layer_norm_alpha(y, u, 1.0)
    return bound("Lemma 4.28", K * (6 * d + omega), 4 * K,
                 terms={**terms, "1 + ||y||_inf/||c(y)||_-inf": layer_norm_factor}, flags=flags)
