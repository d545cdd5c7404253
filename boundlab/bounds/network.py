"""Section 4.5: sub-block, block and network bounds (Lemmas 4.25-4.29, Theorem 4.30).

Everything is evaluated in float64 from the exact intermediates of the actual input
(``forward(..., Exact(), return_intermediates=True)``).  Readings of the printed statements:

* Theorem 4.30, part 2 prints the two layer-norm factors (1 + max_t ||x_t^(l-1)||_inf /
  ||c(x_t^(l-1))||_-inf) and (1 + max_t ||y_t^(l-1)||_inf / ||c(y_t^(l-1))||_-inf) outside the
  product over l although they depend on l; the proof (Lemma 4.29 at each layer) puts them inside,
  as here.
* The per-layer growth G_l = 1 + 4 sqrt(d) sigma_max(|W_k|^T|W_q|) sigma_max(W_k^T W_q) /
  sigma_min(W_k^T W_q) comes from Remark 4.18, which is false in general (README errata); the
  statements are evaluated as printed, and ``sigma_min_free=True`` replaces G_l by the factor the
  sigma_min-free score bound gives (1 + 4 sqrt(d) max_{i,t} |x_i|^T|W_k|^T|W_q||x_t| / d on
  normalised inputs, see ``lemma_4_21_absolute``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from boundlab.arithmetic import Exact
from boundlab.bounds.modules import _layer_norm_alpha, _perceptron_terms, bound, remark_4_18
from boundlab.condition import closed_forms
from boundlab.errors import ratio as _ratio
from boundlab.formats import gamma
from boundlab.transformer.layers import NORMS
from boundlab.transformer.layers import attention as attention_fn


def _growth(layer, normalised_X, sigma_min_free: bool):
    """G_l of Lemmas 4.25-4.29 (or its sigma_min-free replacement)."""
    d = layer.Wq.shape[0]
    printed = remark_4_18(layer.Wq, layer.Wk)
    if not sigma_min_free:
        return 1 + 4 * jnp.sqrt(d) * printed.coefficient * printed.terms["sigma_max(W_k^T W_q)"], printed.flags
    magnitude = jnp.abs(normalised_X).T @ (jnp.abs(layer.Wk).T @ jnp.abs(layer.Wq)) @ jnp.abs(normalised_X)
    return 1 + 4 * jnp.sqrt(d) * jnp.max(magnitude) / d, {}


def _centred_ratio(X):
    """max_t ||x_t||_inf / ||c(x_t)||_-inf (columns of X)."""
    c = X - jnp.mean(X, axis=0, keepdims=True)
    return jnp.max(_ratio(jnp.max(jnp.abs(X), axis=0), jnp.min(jnp.abs(c), axis=0)))


def block_terms(X, layer, norm: str = "layer", u: float = 0.0, sigma_min_free: bool = False) -> dict:
    """The factors of Lemma 4.29 for one layer with exact input X (d x n): a dict of arrays."""
    d, n = X.shape
    normalise = NORMS[norm]
    exact = Exact()
    Z = normalise(X, exact)
    xi_attention = closed_forms.attention_xi(Z, layer.Wq, layer.Wk, layer.Wv)
    A_out = attention_fn(Z, layer.Wq, layer.Wk, layer.Wv, exact)
    Y = X + A_out
    xi_sub_attention = jnp.max(_ratio(jnp.abs(X) + jnp.abs(A_out), jnp.abs(Y)))
    Yn = normalise(Y, exact)

    def token(y, y_normed):
        hidden, xi_m, omega = _perceptron_terms(y_normed, layer.A1, layer.b1, layer.A2, layer.b2)
        out = (layer.A2 @ jnp.maximum(hidden, 0) + layer.b2)
        xi_sub = jnp.max(_ratio(jnp.abs(y) + jnp.abs(out), jnp.abs(y + out)))
        alpha = jnp.all(jnp.abs(hidden) > (u + (1 + u) * gamma(d, u))
                        * (jnp.abs(layer.A1) @ jnp.abs(y_normed) + jnp.abs(layer.b1)))
        return xi_sub * xi_m, omega, alpha

    mlp_factor, omega, mlp_alpha = jax.vmap(token, in_axes=(1, 1))(Y, Yn)
    growth, growth_flags = _growth(layer, Z, sigma_min_free)
    terms = {
        "xi(f_A, X)": xi_sub_attention, "xi(A, N(X))": xi_attention, "G": growth,
        "max_t xi(f_M, y_t) xi(M, N(y_t))": jnp.max(mlp_factor), "max_t |Omega_t|": jnp.max(omega),
    }
    flags = {"d >= 2": d >= 2, "A(N(X)) generic": jnp.isfinite(xi_attention),
             "perceptron alpha-condition": jnp.all(mlp_alpha), "M(N(y)) generic": jnp.all(jnp.isfinite(mlp_factor)),
             **growth_flags}
    if norm == "layer":
        terms["1 + max_t ||x_t||_inf/||c(x_t)||_-inf"] = 1 + _centred_ratio(X)
        terms["1 + max_t ||y_t||_inf/||c(y_t)||_-inf"] = 1 + _centred_ratio(Y)
        flags["layer-norm alpha-condition (x)"] = jnp.all(jax.vmap(lambda x: _layer_norm_alpha(x, u, 1.0), 1)(X))
        flags["layer-norm alpha-condition (y)"] = jnp.all(jax.vmap(lambda y: _layer_norm_alpha(y, u, 1.0), 1)(Y))
    return {"terms": terms, "flags": flags}


def _block_constants(norm, n, d, D):
    """(first-order constant, input gain) of Lemma 4.29 part 1 (RMS) or part 2 (layer norm)."""
    return ((6 * n + 23 * d + D), 9.0) if norm == "rms" else ((8 * n + 34 * d + D), 16.0)


def lemma_4_29(X, layer, norm: str = "layer", u: float = 0.0, sigma_min_free: bool = False):
    """Lemma 4.29: rho_c(fl(T(X^)), T(X)) <= K [(8n + 34d + D) u + 16 rho_c(X^, X)] (part 2,
    layer norm) or K [(6n + 23d + D) u + 9 rho] (part 1, RMS), with K the product of the xi
    factors, G, and (part 2) the two layer-norm ratios."""
    d, n = X.shape
    D = layer.A1.shape[0]
    parts = block_terms(X, layer, norm, u, sigma_min_free)
    terms = parts["terms"]
    K = terms["max_t xi(f_M, y_t) xi(M, N(y_t))"] * terms["xi(f_A, X)"] * terms["xi(A, N(X))"] * terms["G"]
    if norm == "layer":
        K = K * terms["1 + max_t ||x_t||_inf/||c(x_t)||_-inf"] * terms["1 + max_t ||y_t||_inf/||c(y_t)||_-inf"]
    constant, gain = _block_constants(norm, n, d, D)
    return bound("Lemma 4.29", K * constant, K * gain, terms={"K": K, **terms}, flags=parts["flags"])


def theorem_4_30(params, X, norm: str = "layer", u: float = 0.0, sigma_min_free: bool = False):
    """Theorem 4.30 (part 1 for ``norm="rms"``, part 2 for ``"layer"``) on the exact intermediates.

    rho_c(fl(T(X)), T(X)) <= prod_l K_l (c^L - 1)/(c - 1) C u + O(u^2) with c = 9, C = 6n + 23d + D
    (part 1) or c = 16, C = 8n + 34d + D (part 2), K_l the factor of Lemma 4.29 at layer l
    (the paper bounds (c^L - 1)/(c - 1) by c^L/(c - 1)).  ``terms`` also hold the per-layer factors
    (``K_l``, ``chi_l`` or ``eta_l``, ``G_l``), the layer-by-layer composition rho_l = K_l (C u +
    c rho_{l-1}) in units of u (``layerwise``, tighter) and the weights-only growth prod_l G_l.
    """
    from boundlab.transformer.network import Params, forward

    params = Params(*params) if isinstance(params, Params) else Params(**params)
    d, n = X.shape
    L, D = params.A1.shape[0], params.A1.shape[1]
    _, inter = forward(params, X, Exact(), norm, return_intermediates=True, cast=False)
    layers = jax.vmap(lambda x, layer: lemma_4_29(x, layer, norm, u, sigma_min_free))(inter.inputs, params)
    K = layers.terms["K"]
    constant, c = _block_constants(norm, n, d, D)
    coefficient = jnp.prod(K) * (c**L - 1) / (c - 1) * constant

    def compose(previous, k):
        current = k * (constant + c * previous)
        return current, current

    _, layerwise = jax.lax.scan(compose, jnp.asarray(0.0), K)
    xi_product = layers.terms["max_t xi(f_M, y_t) xi(M, N(y_t))"] * layers.terms["xi(f_A, X)"] \
        * layers.terms["xi(A, N(X))"]
    flags = {name: jnp.all(value) for name, value in layers.flags.items()}
    flags["n u < 1"] = n * u < 1
    statement = "Theorem 4.30" + (" (sigma_min-free)" if sigma_min_free else "")
    return bound(statement, coefficient,
                 terms={"K_l": K, "chi_l" if norm == "rms" else "eta_l": xi_product, "G_l": layers.terms["G"],
                        "layerwise": layerwise[-1], "layerwise_per_layer": layerwise,
                        "weights_only_growth": jnp.prod(layers.terms["G"])},
                 flags=flags)
