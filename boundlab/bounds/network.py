"""Section 4.5: the block and the network (Lemma 4.29, Theorem 4.30).

Everything is evaluated in float64 from the exact intermediates of the actual input
(``forward(..., Exact(), return_intermediates=True)``), computed once: ``block_factors`` takes
one layer's intermediates, ``theorem_4_30`` takes them for every layer (or the stacked factors,
which is how ``analyze`` evaluates the lemma and both variants of the theorem from one pass) and
runs the exact forward itself only when given neither.  Readings of the printed statements:

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

from typing import NamedTuple

import jax
import jax.numpy as jnp

from boundlab.bounds.statement import Statement
from boundlab.runtime.compilation import compiled
from boundlab.arithmetic import Exact
from boundlab.bounds.record import Bound, bound, guard_unit_roundoff, undefined_to_inf
from boundlab.bounds.subblocks import AttentionParts, FeedForwardParts, attention_parts, feed_forward_parts
from boundlab.bounds.terms import as_float64, check_unit_roundoff, statement
from boundlab.quantities import centred_ratio
from boundlab.models.blocks import NORMS


class BlockFactors(NamedTuple):
    """The factors of Lemma 4.29 at one layer (stacked over layers for Theorem 4.30), from
    Lemma 4.25 or 4.26 at the layer input X and Lemma 4.27 or 4.28 at every column y_t of
    Y = X + A(N(X))."""

    xi_attention_residual: jax.Array  # xi(f_A, X) or xi(g_A, X)
    xi_attention: jax.Array  # xi(A, N(X))
    growth: jax.Array  # G as printed
    growth_free: jax.Array  # G without sigma_min
    xi_feed_forward: jax.Array  # max_t xi(f_M, y_t) xi(M, N(y_t))
    omega: jax.Array  # max_t |Omega_t|
    layer_norm_x: jax.Array  # 1 + max_t ||x_t||_inf / ||c(x_t)||_-inf (1 for RMS norm)
    layer_norm_y: jax.Array  # 1 + max_t ||y_t||_inf / ||c(y_t)||_-inf (1 for RMS norm)
    nonsingular: jax.Array  # W_k^T W_q non-singular (the printed G needs it)
    flags: dict  # the other hypotheses, each True when it holds

    def K(self, sigma_min_free: bool = False) -> jax.Array:
        """K = xi(f_M) xi(M) xi(f_A) xi(A) G [(1 + ...)(1 + ...) for layer norm] (Lemma 4.29)."""
        G = self.growth_free if sigma_min_free else self.growth
        return self.xi_feed_forward * self.xi_attention_residual * self.xi_attention * G \
            * self.layer_norm_x * self.layer_norm_y

    def hypotheses(self, sigma_min_free: bool = False) -> dict:
        return self.flags if sigma_min_free else {**self.flags, "W_k^T W_q non-singular": self.nonsingular}


def _check_norm(norm):
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {tuple(NORMS)}, got {norm!r}")


def _exact_intermediates(X, layer, norm, intermediates):
    """This layer's exact intermediates: the caller's, or one exact block evaluated here."""
    _check_norm(norm)
    if intermediates is None:
        from boundlab.models.paper.network import block

        _, intermediates = block(X, layer, Exact(), norm, return_intermediates=True)
    return intermediates


def block_parts(X, layer, norm: str, u, intermediates=None) -> tuple[AttentionParts, FeedForwardParts]:
    """Lemma 4.25/4.26 at X and Lemma 4.27/4.28 at every column of Y = X + A(N(X)) (stacked on a
    leading token axis); ``intermediates``: this layer's exact intermediates (else computed)."""
    inter = _exact_intermediates(X, layer, norm, intermediates)
    attention = attention_parts(X, layer, norm, u, inter.attention_input, inter.attention, inter.softmax)
    tokens = jax.vmap(lambda y, r, h: feed_forward_parts(y, layer, norm, u, r, h), in_axes=(1, 1, 1))(
        inter.attention_residual, inter.perceptron_input, inter.hidden)
    return attention, tokens


def factors_from_parts(attention: AttentionParts, tokens: FeedForwardParts, intermediates, norm: str) -> BlockFactors:
    """Lemma 4.29's factors from the sub-block parts of ``block_parts``."""
    flags = dict(attention.flags)
    for name, value in tokens.flags.items():
        flags[name + (" (y)" if name == "layer-norm alpha-condition" else "")] = jnp.all(value)
    if norm == "layer":
        flags["layer-norm alpha-condition (x)"] = flags.pop("layer-norm alpha-condition")
    flags["exact intermediates finite"] = jnp.all(jnp.isfinite(intermediates.outputs)) \
        & jnp.all(jnp.isfinite(intermediates.softmax))
    Y = intermediates.attention_residual
    layer_norm_y = 1 + jnp.max(jax.vmap(centred_ratio, in_axes=1)(Y)) if norm == "layer" else jnp.ones(())
    return BlockFactors(attention.xi_residual, attention.xi_attention, attention.growth, attention.growth_free,
                        jnp.max(tokens.xi_residual * tokens.xi_perceptron), jnp.max(tokens.omega),
                        attention.layer_norm, layer_norm_y, attention.nonsingular, flags)


def block_factors(X, layer, norm: str, u, intermediates=None) -> BlockFactors:
    """The factors of Lemma 4.29 for one layer with exact input X (d x n); ``intermediates`` is
    that layer's slice of ``forward(..., Exact(), return_intermediates=True)`` (else computed)."""
    intermediates = _exact_intermediates(X, layer, norm, intermediates)
    return factors_from_parts(*block_parts(X, layer, norm, u, intermediates), intermediates, norm)


def _block_constants(norm, n, d, D):
    """(first-order constant C, input gain c) of Lemma 4.29 part 1 (RMS) or part 2 (layer norm)."""
    return ((6 * n + 23 * d + D), 9.0) if norm == "rms" else ((8 * n + 34 * d + D), 16.0)


def _factor_terms(factors: BlockFactors, norm, sigma_min_free):
    terms = {"xi(f_A, X)": factors.xi_attention_residual, "xi(A, N(X))": factors.xi_attention,
             "G": factors.growth_free if sigma_min_free else factors.growth,
             "max_t xi(f_M, y_t) xi(M, N(y_t))": factors.xi_feed_forward, "max_t |Omega_t|": factors.omega}
    if norm == "layer":
        terms["1 + max_t ||x_t||_inf/||c(x_t)||_-inf"] = factors.layer_norm_x
        terms["1 + max_t ||y_t||_inf/||c(y_t)||_-inf"] = factors.layer_norm_y
    return terms


def block_record(factors: BlockFactors, n: int, d: int, D: int, norm: str, sigma_min_free: bool = False) -> Bound:
    """Lemma 4.29 from a layer's factors (see ``lemma_4_29``)."""
    K = factors.K(sigma_min_free)
    constant, gain = _block_constants(norm, n, d, D)
    return bound(Statement.LEMMA_4_29, K * constant, K * gain, terms={"K": K, **_factor_terms(factors, norm, sigma_min_free)},
                 flags=factors.hypotheses(sigma_min_free))


@statement()
def lemma_4_29(X, layer, *, norm: str = "layer", u, sigma_min_free: bool = False, intermediates=None) -> Bound:
    """Lemma 4.29: rho_c(fl(T(X^)), T(X)) <= K [(8n + 34d + D) u + 16 rho_c(X^, X)] (part 2,
    layer norm) or K [(6n + 23d + D) u + 9 rho] (part 1, RMS), with K the product of the xi
    factors, G, and (part 2) the two layer-norm ratios.  ``intermediates``: this layer's exact
    intermediates, if the caller has them."""
    d, n = X.shape
    factors = block_factors(X, layer, norm, u, intermediates)
    return block_record(factors, n, d, layer.A1.shape[0], norm, sigma_min_free)


def network_factors(params, X, *, norm: str = "layer", u, intermediates=None) -> BlockFactors:
    """The factors of Lemma 4.29 at every layer (stacked), from one exact forward (or the given
    ``intermediates``): what ``theorem_4_30(..., factors=...)`` takes, so that both variants of
    the theorem (printed and sigma_min-free) share one exact pass and one set of SVDs."""
    params, X, intermediates = _checked("bounds.network_factors", params, X, intermediates, norm, u)
    return _network_factors(params, X, norm=norm, u=u, intermediates=intermediates)


def _checked(name, params, X, intermediates, norm, u):
    """The network-level checks (norm, u, shapes, finite float64 arrays) before a compiled part:
    ``(params as Params, X, intermediates)`` in float64."""
    from boundlab.models.paper.network import Params, validate

    _check_norm(norm)
    check_unit_roundoff(u, name)
    params = Params(*params) if isinstance(params, Params) else Params(**params)
    params, X, intermediates = as_float64(name, (params, X, intermediates))
    validate(params, X)
    return params, X, intermediates


@compiled(static_argnames=("norm",))
def _network_factors(params, X, *, norm, u, intermediates) -> BlockFactors:
    from boundlab.models.paper.network import block

    if intermediates is None:
        # the exact forward and each layer's factors in one pass over the layers: the factors are
        # computed from the layer's intermediates while they are at hand, and only the factors are
        # stacked (stacking every intermediate of every layer doubled the forward's time)
        def step(x, layer):
            y, inter = block(x, layer, Exact(), norm, return_intermediates=True)
            return y, block_factors(x, layer, norm, u, inter)

        return jax.lax.scan(step, X, params)[1]
    return jax.vmap(lambda layer, inter: block_factors(inter.inputs, layer, norm, u, inter))(params, intermediates)


def theorem_4_30(params, X, *, norm: str = "layer", u, sigma_min_free: bool = False, intermediates=None,
                 factors: BlockFactors | None = None) -> Bound:
    """Theorem 4.30 (part 1 for ``norm="rms"``, part 2 for ``"layer"``) on the exact intermediates.

    rho_c(fl(T(X)), T(X)) <= prod_l K_l c^L/(c - 1) C u + O(u^2) with c = 9, C = 6n + 23d + D
    (part 1) or c = 16, C = 8n + 34d + D (part 2), K_l the factor of Lemma 4.29 at layer l
    (c^L/(c - 1) bounds the geometric sum (c^L - 1)/(c - 1) of the proof).  Hypotheses (flags):
    those of Lemma 4.29 at every layer (genericity, alpha-conditions, W_k^T W_q non-singular,
    d >= 2) and n u < 1; u "sufficiently small" cannot be checked and is the caller's.
    ``terms`` also hold the per-layer factors (``K_l``, ``chi_l`` or ``eta_l``, ``G_l``), the
    layer-by-layer composition rho_l = K_l (C u + c rho_{l-1}) in units of u (``layerwise``,
    tighter) and the weights-only growth prod_l G_l.  At depth the coefficient can exceed
    float64's range (inf); ``log10_coefficient`` and ``log10_layerwise`` stay finite.

    The exact pass: ``factors`` (stacked ``BlockFactors``, e.g. from ``analyze``) or
    ``intermediates`` (``forward(params, X, Exact(), norm, return_intermediates=True)[1]``) are
    used when given; otherwise the exact forward runs once here.
    """
    params, X, intermediates = _checked("bounds.theorem_4_30", params, X, intermediates, norm, u)
    return _theorem_4_30(params, X, norm=norm, u=u, sigma_min_free=sigma_min_free, intermediates=intermediates,
                         factors=factors)


@compiled(static_argnames=("norm", "sigma_min_free"))
def _theorem_4_30(params, X, *, norm, u, sigma_min_free, intermediates, factors) -> Bound:
    """``theorem_4_30`` after its checks, as one compiled program per shape."""
    L, D = params.A1.shape[:2]
    d, n = X.shape
    if factors is None:
        factors = _network_factors(params, X, norm=norm, u=u, intermediates=intermediates)
    K = factors.K(sigma_min_free)
    constant, c = _block_constants(norm, n, d, D)

    K = undefined_to_inf(K)  # degenerate or non-finite intermediates; flagged
    coefficient = jnp.prod(K) * c**L / (c - 1) * constant  # as printed: 9^L/8, 16^L/15
    log_K = jnp.log(K)

    def compose(log_previous, log_k):  # rho_l = K_l (C + c rho_{l-1}), in logarithms (no overflow at depth)
        current = log_k + jnp.logaddexp(jnp.log(constant), jnp.log(c) + log_previous)
        return current, current

    _, log_layerwise = jax.lax.scan(compose, jnp.asarray(-jnp.inf), log_K)
    layerwise = jnp.exp(log_layerwise)
    log10_coefficient = (jnp.sum(log_K) + L * jnp.log(c) - jnp.log(c - 1) + jnp.log(constant)) / jnp.log(10.0)
    xi_product = factors.xi_feed_forward * factors.xi_attention_residual * factors.xi_attention
    flags = {name: jnp.all(value) for name, value in factors.hypotheses(sigma_min_free).items()}
    flags["n u < 1"] = jnp.asarray(n * u < 1)
    G = factors.growth_free if sigma_min_free else factors.growth
    per_layer = {name: value for name, value in _factor_terms(factors, norm, sigma_min_free).items() if name != "G"}
    statement_name = Statement.THEOREM_4_30_SIGMA_MIN_FREE if sigma_min_free else Statement.THEOREM_4_30
    record = bound(statement_name, coefficient,
                   terms={**per_layer, "K_l": K, "chi_l" if norm == "rms" else "eta_l": xi_product, "G_l": G,
                          "layerwise": layerwise[-1], "layerwise_per_layer": layerwise,
                          "weights_only_growth": jnp.prod(G), "log10_coefficient": log10_coefficient,
                          "log10_layerwise": log_layerwise[-1] / jnp.log(10.0)},
                   flags=flags)
    return guard_unit_roundoff(record, u)  # a traced u outside (0, 1): NaN and a False flag
