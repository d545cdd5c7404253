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
from boundlab.bounds.record import bound
from boundlab.bounds.subblocks import centred_ratio, lemma_4_25, lemma_4_26, lemma_4_27, lemma_4_28
from boundlab.transformer.layers import NORMS
from boundlab.transformer.layers import attention as attention_fn


def block_terms(X, layer, norm: str = "layer", u: float = 0.0, sigma_min_free: bool = False) -> dict:
    """The factors of Lemma 4.29 for one layer with exact input X (d x n), from Lemma 4.25 or
    4.26 (attention sub-block at X) and Lemma 4.27 or 4.28 (feed-forward sub-block at every
    column y_t of Y = X + A(N(X))): a dict with "terms" and "flags" (arrays)."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {tuple(NORMS)}, got {norm!r}")
    attention_record = (lemma_4_26 if norm == "layer" else lemma_4_25)(X, layer, u, sigma_min_free)
    Y = X + attention_fn(NORMS[norm](X, Exact()), layer.Wq, layer.Wk, layer.Wv, Exact())
    perceptron_lemma = lemma_4_28 if norm == "layer" else lemma_4_27
    tokens = jax.vmap(lambda y: perceptron_lemma(y, layer, u), in_axes=1)(Y)
    a, m = attention_record.terms, tokens.terms
    residual = "g" if norm == "layer" else "f"
    terms = {
        "xi(f_A, X)": a[f"xi({residual}_A, X)"], "xi(A, N(X))": a["xi(A, N(X))"], "G": a["G"],
        "max_t xi(f_M, y_t) xi(M, N(y_t))": jnp.max(m[f"xi({residual}_M, y)"] * m["xi(M, N(y))"]),
        "max_t |Omega_t|": jnp.max(m["|Omega|"]),
    }
    flags = dict(attention_record.flags)
    flags.update({name: jnp.all(value) for name, value in tokens.flags.items() if name != "layer-norm alpha-condition"})
    if norm == "layer":
        terms["1 + max_t ||x_t||_inf/||c(x_t)||_-inf"] = a["1 + max_t ||x_t||_inf/||c(x_t)||_-inf"]
        terms["1 + max_t ||y_t||_inf/||c(y_t)||_-inf"] = 1 + centred_ratio(Y)
        flags["layer-norm alpha-condition (x)"] = flags.pop("layer-norm alpha-condition")
        flags["layer-norm alpha-condition (y)"] = jnp.all(tokens.flags["layer-norm alpha-condition"])
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

    rho_c(fl(T(X)), T(X)) <= prod_l K_l c^L/(c - 1) C u + O(u^2) with c = 9, C = 6n + 23d + D
    (part 1) or c = 16, C = 8n + 34d + D (part 2), K_l the factor of Lemma 4.29 at layer l
    (c^L/(c - 1) bounds the geometric sum (c^L - 1)/(c - 1) of the proof).  Hypotheses (flags):
    those of Lemma 4.29 at every layer (genericity, alpha-conditions, W_k^T W_q non-singular,
    d >= 2) and n u < 1; u "sufficiently small" cannot be checked and is the caller's.  ``terms`` also hold the per-layer factors
    (``K_l``, ``chi_l`` or ``eta_l``, ``G_l``), the layer-by-layer composition rho_l = K_l (C u +
    c rho_{l-1}) in units of u (``layerwise``, tighter) and the weights-only growth prod_l G_l.
    At depth the coefficient can exceed float64's range (inf); ``log10_coefficient`` and
    ``log10_layerwise`` stay finite.
    """
    from boundlab.transformer.network import Params, forward

    params = Params(*params) if isinstance(params, Params) else Params(**params)
    d, n = X.shape
    L, D = params.A1.shape[0], params.A1.shape[1]
    _, inter = forward(params, X, Exact(), norm, return_intermediates=True, cast=False)
    layers = jax.vmap(lambda x, layer: lemma_4_29(x, layer, norm, u, sigma_min_free))(inter.inputs, params)
    K = layers.terms["K"]
    constant, c = _block_constants(norm, n, d, D)

    # undefined factors (degenerate or non-finite intermediates: NaN, or -inf from XLA:CPU's max
    # over NaN) are inf, and flagged
    K = jnp.where(jnp.isnan(K) | (K < 0), jnp.inf, K)
    coefficient = jnp.prod(K) * c**L / (c - 1) * constant  # as printed: 9^L/8, 16^L/15
    log_K = jnp.log(K)

    def compose(log_previous, log_k):  # rho_l = K_l (C + c rho_{l-1}), in logarithms (no overflow at depth)
        current = log_k + jnp.logaddexp(jnp.log(constant), jnp.log(c) + log_previous)
        return current, current

    _, log_layerwise = jax.lax.scan(compose, jnp.asarray(-jnp.inf), log_K)
    layerwise = jnp.exp(log_layerwise)
    log10_coefficient = (jnp.sum(log_K) + L * jnp.log(c) - jnp.log(c - 1) + jnp.log(constant)) / jnp.log(10.0)
    xi_product = layers.terms["max_t xi(f_M, y_t) xi(M, N(y_t))"] * layers.terms["xi(f_A, X)"] \
        * layers.terms["xi(A, N(X))"]
    flags = {name: jnp.all(value) for name, value in layers.flags.items()}
    flags["n u < 1"] = n * u < 1
    flags["exact intermediates finite"] = jnp.all(jnp.isfinite(inter.outputs)) & jnp.all(jnp.isfinite(inter.softmax))
    statement = "Theorem 4.30" + (" (sigma_min-free)" if sigma_min_free else "")
    return bound(statement, coefficient,
                 terms={**{name: value for name, value in layers.terms.items() if name not in ("K", "G")},
                        "K_l": K, "chi_l" if norm == "rms" else "eta_l": xi_product, "G_l": layers.terms["G"],
                        "layerwise": layerwise[-1], "layerwise_per_layer": layerwise,
                        "weights_only_growth": jnp.prod(layers.terms["G"]),
                        "log10_coefficient": log10_coefficient, "log10_layerwise": log_layerwise[-1] / jnp.log(10.0)},
                 flags=flags)
