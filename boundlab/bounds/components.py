"""Section 4 bounds for the parts of a transformer block, evaluated on actual data (float64).

Every function takes the *exact* input of the part (and its weights) and, as a required keyword
argument, the unit roundoff ``u`` of the format (the hypotheses depend on it), and returns a
``Bound``.  Arguments after the arrays are keyword-only; a statement about one vector raises
ValueError on a matrix (apply it to columns with ``jax.vmap``); inputs are converted to float64,
which needs ``jax_enable_x64``.  The bounds speak about the computation ``boundlab.models.paper``
runs under ``Emulated`` with recursive accumulation: the order of operations is the one the
proofs analyse.  One difference is documented rather than hidden: boundlab rounds the constant
sqrt(d) to the format once, which the paper treats as exact (in Lemmas 4.6 and 4.17); measured
errors stay well inside the printed coefficients.

Notation: ||x||_{-inf} = min_i |x_i|; c(x) the centred vector; gamma_d = d u / (1 - d u).
"""

from __future__ import annotations

import jax.numpy as jnp

from boundlab.bounds.statement import Statement
from boundlab.bounds.record import Bound, bound
from boundlab.bounds.terms import as_float64, layer_norm_alpha, perceptron_terms, printed_growth, spectral, statement
from boundlab.condition import closed_forms
from boundlab.errors import ratio as _ratio
from boundlab.quantities import causal_mask, centre, centred_ratio, score_magnitude


@statement(vectors=("x",))
def lemma_4_3(A, x, *, b=None, u) -> Bound:
    """Lemma 4.3 (parts 2 and 3), as a componentwise relative bound on y = A x (+ b):

    |fl(A x) - A x| <= gamma_d |A||x|, and |fl(A x + b) - (A x + b)| <= (u + (1+u) gamma_d) |A||x|
    + u |b|, so rho_c(fl(y), y) <= max_i (d |A||x| [+ |A||x| + |b|])_i / |y_i| u + O(u^2).
    Hypotheses: d u < 1, y generic (else the coefficient is inf).
    """
    d = x.shape[0]
    magnitude = jnp.abs(A) @ jnp.abs(x)
    if b is None:
        y, numerator = A @ x, d * magnitude
    else:
        y, numerator = A @ x + b, (d + 1) * magnitude + jnp.abs(b)
    generic = jnp.all(y != 0)
    return bound(Statement.LEMMA_4_3, jnp.max(_ratio(numerator, jnp.abs(y))),
                 terms={"d": d}, flags={"generic": generic, "d u < 1": jnp.asarray(d * u < 1)})


@statement(vectors=("x",))
def lemma_4_6(x, *, u) -> Bound:
    """Lemma 4.6: rho_c(fl(R(x)), R(x)) <= (d/2 + 3) u + O(u^2) for x != 0."""
    d = x.shape[0]
    return bound(Statement.LEMMA_4_6, d / 2 + 3, flags={"x != 0": jnp.any(x != 0), "d u < 1": jnp.asarray(d * u < 1)})


@statement(vectors=("x",))
def corollary_4_9(x, *, u) -> Bound:
    """Corollary 4.9: rho_c(fl(R(x^)), R(x)) <= (d/2 + 3) u + 2 rho_c(x^, x) + O(u^2 + rho^2)."""
    base = lemma_4_6(x, u=u)
    return bound(Statement.COROLLARY_4_9, base.coefficient, 2.0, flags=base.flags)


@statement(vectors=("x",))
def lemma_4_10(x, *, u) -> Bound:
    """Lemma 4.10: rho_c(fl(c(x)), c(x)) <= (1 + ||x||_1 / ||c(x)||_{-inf}) u + O(u^2)."""
    c = centre(x)
    ratio = _ratio(jnp.sum(jnp.abs(x)), jnp.min(jnp.abs(c)))
    return bound(Statement.LEMMA_4_10, 1 + ratio, terms={"||x||_1 / ||c(x)||_-inf": ratio},
                 flags={"c(x) generic": jnp.all(c != 0), "d u < 1": x.shape[0] * u < 1})


@statement(vectors=("x",))
def lemma_4_11(x, *, u) -> Bound:
    """Lemma 4.11: rho_c(fl(N(x)), N(x)) <= (d/2 + 5 + 2 ||x||_1 / ||c(x)||_{-inf}) u + O(u^2),
    if ||c(x)||_{-inf} > 2 (1 + u) gamma_d ||x||_inf."""
    d = x.shape[0]
    ratio = _ratio(jnp.sum(jnp.abs(x)), jnp.min(jnp.abs(centre(x))))
    return bound(Statement.LEMMA_4_11, d / 2 + 5 + 2 * ratio, terms={"||x||_1 / ||c(x)||_-inf": ratio},
                 flags={"alpha-condition": layer_norm_alpha(x, u), "d u < 1": jnp.asarray(d * u < 1)})


@statement(vectors=("x",))
def corollary_4_12(x, *, u, alpha=1.0) -> Bound:
    """Corollary 4.12: rho_c(fl(N(x^)), N(x)) < (d/2 + 5 + 2||x||_1/||c||_{-inf}) u
    + 3 ||x||_inf / ||c(x)||_{-inf} rho_c(x^, x), if ||c||_{-inf} > alpha 2 (1+u) gamma_d ||x||_inf
    and rho_c(x^, x) <= (alpha - 1)/(1 + alpha kappa_cc(c, x))."""
    base = lemma_4_11(x, u=u)
    return bound(Statement.COROLLARY_4_12, base.coefficient, 3 * centred_ratio(x), terms=base.terms,
                 flags={**base.flags, "alpha-condition": layer_norm_alpha(x, u, alpha)})


@statement(vectors=("x",))
def remark_4_13(x, *, u) -> Bound:
    """Remark 4.13 (d >= 2): rho_c(fl(N(x^)), N(x)) < 3 (1 + ||x||_inf / ||c(x)||_{-inf}) (d u + rho)."""
    d = x.shape[0]
    factor = 3 * (1 + centred_ratio(x))
    return bound(Statement.REMARK_4_13, factor * d, factor, terms={"3 (1 + ||x||_inf / ||c||_-inf)": factor},
                 flags={"d >= 2": jnp.asarray(d >= 2), "alpha-condition": layer_norm_alpha(x, u)})


@statement(vectors=("x",))
def lemma_4_14(x, A1, b1, A2, b2, *, u) -> Bound:
    """Lemma 4.14: rho_c(fl(M(x)), M(x)) <= xi(M, x) (d + |Omega| + 2) u + O(u^2), Omega =
    supp_+(L_1(x)), xi(M, x) = max_i (|A_2(i, Omega)| (|A_1(Omega, :)| |x| + |b_1(Omega)|) +
    |b_2(i)|) / |M(x)_i|, if |L_1(x)| > (u + (1 + u) gamma_d)(|A_1||x| + |b_1|) entrywise."""
    d = x.shape[0]
    parts = perceptron_terms(x, A1, b1, A2, b2, u)
    return bound(Statement.LEMMA_4_14, parts.xi * (d + parts.omega + 2), terms={"xi(M, x)": parts.xi, "|Omega|": parts.omega},
                 flags={"alpha-condition": parts.alpha_condition, "M(x) generic": jnp.isfinite(parts.xi),
                        "d u < 1": jnp.asarray(d * u < 1)})


@statement(vectors=("x",))
def corollary_4_16(x, A1, b1, A2, b2, *, u) -> Bound:
    """Corollary 4.16: rho_c(fl(M(x^)), M(x)) <= xi(M, x) [(d + |Omega| + 2) u + rho_c(x^, x)]."""
    base = lemma_4_14(x, A1, b1, A2, b2, u=u)
    return bound(Statement.COROLLARY_4_16, base.coefficient, base.terms["xi(M, x)"], terms=base.terms, flags=base.flags)


def _last_query_scores(X, Wq, Wk):
    """(S(X), magnitude) for the last query: S(X)_i = x_i^T W_k^T W_q x_n / sqrt(d)."""
    d = X.shape[0]
    scores = (Wk @ X).T @ (Wq @ X[:, -1]) / jnp.sqrt(d)
    return scores, score_magnitude(X, Wq, Wk)[:, -1]


@statement()
def lemma_4_17(X, Wq, Wk, *, u) -> Bound:
    """Lemma 4.17: rho_c(fl(S(X)), S(X)) <= xi(S, X) (3d + 1) u + O(u^2), with xi(S, X) =
    max_i |x_i|^T |W_k|^T |W_q| |x_n| / (sqrt(d) |S(X)_i|) (inf when S(X) is not generic)."""
    d = X.shape[0]
    scores, magnitude = _last_query_scores(X, Wq, Wk)
    xi = jnp.max(_ratio(magnitude, jnp.abs(scores)))
    return bound(Statement.LEMMA_4_17, xi * (3 * d + 1), terms={"xi(S, X)": xi},
                 flags={"S(X) generic": jnp.all(scores != 0), "d u < 1": jnp.asarray(d * u < 1)})


@statement()
def lemma_4_17_absolute(X, Wq, Wk, *, u) -> Bound:
    """The sigma_min-free score bound that Lemma 4.21 needs (see the README's errata):

    |fl(S(X))_i - S(X)_i| <= (3d + 1) u |x_i|^T |W_k|^T |W_q| |x_n| / sqrt(d) + O(u^2), for every
    X (no genericity).  The coefficient is in units of u times max_i |x_i|^T|W_k|^T|W_q||x_n|/sqrt(d),
    an absolute error; ``terms["scale"]`` holds that maximum.
    """
    d = X.shape[0]
    scale = jnp.max(_last_query_scores(X, Wq, Wk)[1])
    return bound(Statement.LEMMA_4_17_ABSOLUTE, (3 * d + 1) * scale, terms={"scale": scale},
                 flags={"d u < 1": jnp.asarray(d * u < 1)})


def remark_4_18(Wq, Wk) -> Bound:
    """Remark 4.18 as printed: xi(S, X) <= sigma_max(|W_k|^T |W_q|) / sigma_min(W_k^T W_q).

    False in general (README errata: W_k = W_q = I and x_i orthogonal to x_n make xi infinite);
    kept so that the printed chain can be evaluated.  The value is in ``coefficient`` (no u).
    W_k^T W_q counts as singular when sigma_min <= d 2^-52 sigma_max (``terms.Spectral``): the
    computed sigma_min of an exactly singular product is round-off, not a small singular value.
    """
    values = spectral(*as_float64("bounds.remark_4_18", (Wq, Wk)))
    return bound(Statement.REMARK_4_18, _ratio(values.sigma_abs, values.sigma_min),
                 terms={"sigma_max(|W_k|^T|W_q|)": values.sigma_abs, "sigma_max(W_k^T W_q)": values.sigma_max,
                        "sigma_min(W_k^T W_q)": values.sigma_min},
                 flags={"W_k^T W_q non-singular": values.nonsingular})


@statement(vectors=("s",))
def lemma_4_19(s, *, u) -> Bound:
    """Lemma 4.19: rho_c(fl(psi(s)), psi(s)) <= (n + 3) u + O(u^2) ([4, Theorem 3.3])."""
    n = s.shape[0]
    return bound(Statement.LEMMA_4_19, n + 3.0, flags={"n u < 1": jnp.asarray(n * u < 1)})


@statement(vectors=("s",))
def corollary_4_20(s, *, u) -> Bound:
    """Corollary 4.20: rho_c(fl(psi(s^)), psi(s)) <= (n + 3) u + 2 ||s||_inf rho_c(s^, s)."""
    n = s.shape[0]
    return bound(Statement.COROLLARY_4_20, n + 3.0, 2 * jnp.max(jnp.abs(s)), flags={"n u < 1": jnp.asarray(n * u < 1)})


def _attention_terms(X, Wq, Wk, Wv):
    d, n = X.shape
    xi = closed_forms.attention_xi(X, Wq, Wk, Wv)
    B = closed_forms.bilinear(Wq, Wk)
    mask = causal_mask(n)
    scores = X.T @ B @ X  # [i, t] = S(X_t)_i
    magnitude = score_magnitude(X, Wq, Wk)
    score_inf = jnp.max(jnp.where(mask, jnp.abs(scores), 0.0), axis=0)
    xi_scores = jnp.max(jnp.where(mask, _ratio(magnitude, jnp.abs(scores)), 0.0), axis=0)
    absolute = jnp.max(jnp.where(mask, magnitude, 0.0), axis=0)
    return xi, score_inf, xi_scores, absolute


@statement()
def lemma_4_21(X, Wq, Wk, Wv, *, u) -> Bound:
    """Lemma 4.21: rho_c(fl(A(X)), A(X)) <= xi(A, X) max_t (2t + d + 3 + 2 ||S(X_t)||_inf
    xi(S, X_t) (3d + 1)) u + O(u^2), xi(A, X) of Remark 3.15 (inf when A(X) is not generic)."""
    d, n = X.shape
    xi, score_inf, xi_scores, _ = _attention_terms(X, Wq, Wk, Wv)
    t = jnp.arange(1, n + 1, dtype=X.dtype)
    inner = jnp.max(2 * t + d + 3 + 2 * score_inf * xi_scores * (3 * d + 1))
    return bound(Statement.LEMMA_4_21, xi * inner, terms={"xi(A, X)": xi, "max_t xi(S, X_t)": jnp.max(xi_scores)},
                 flags={"A(X) generic": jnp.isfinite(xi), "n u < 1": jnp.asarray(n * u < 1), "d u < 1": jnp.asarray(d * u < 1)})


@statement()
def lemma_4_21_absolute(X, Wq, Wk, Wv, *, u) -> Bound:
    """Lemma 4.21 with the sigma_min-free score bound (valid reading, README errata):

    rho_c(fl(A(X)), A(X)) <= xi(A, X) max_t (2t + d + 3 + 2 (3d + 1) max_{i <= t}
    |x_i|^T |W_k|^T |W_q| |x_t| / sqrt(d)) u + O(u^2): the softmax sees an absolute score error,
    |J_psi ds| <= 2 psi ||ds||_inf, so ||S(X_t)||_inf xi(S, X_t) is replaced by the magnitude.
    """
    d, n = X.shape
    xi, _, _, absolute = _attention_terms(X, Wq, Wk, Wv)
    t = jnp.arange(1, n + 1, dtype=X.dtype)
    inner = jnp.max(2 * t + d + 3 + 2 * absolute * (3 * d + 1))
    return bound(Statement.LEMMA_4_21_ABSOLUTE_SCORES, xi * inner, terms={"xi(A, X)": xi},
                 flags={"A(X) generic": jnp.isfinite(xi), "n u < 1": jnp.asarray(n * u < 1), "d u < 1": jnp.asarray(d * u < 1)})


@statement()
def remark_4_22(X, Wq, Wk, Wv, *, u) -> Bound:
    """Remark 4.22 (W_k^T W_q non-singular, d >= 2): rho_c(fl(A(X)), A(X)) <= xi(A, X) (2n + 3d)
    (1 + (2/sqrt(d)) sigma_max(|W_k|^T|W_q|) sigma_max(W_k^T W_q)/sigma_min(W_k^T W_q)
    max_t ||x_t||_2^2) u + O(u^2)."""
    d, n = X.shape
    xi = closed_forms.attention_xi(X, Wq, Wk, Wv)
    factor, terms, flags = _printed_growth(X, Wq, Wk, 2.0)
    return bound(Statement.REMARK_4_22, xi * (2 * n + 3 * d) * factor, terms={"xi(A, X)": xi, **terms},
                 flags={"A(X) generic": jnp.isfinite(xi), "d >= 2": jnp.asarray(d >= 2), **flags})


def _printed_growth(X, Wq, Wk, constant):
    """1 + (constant / sqrt(d)) sigma_max(|W_k|^T|W_q|) sigma_max(W_k^T W_q) / sigma_min(W_k^T W_q)
    max_t ||x_t||_2^2 (Remark 4.22 with 2, Corollary 4.23 with 4), its terms and flags."""
    values = spectral(Wq, Wk)
    factor = printed_growth(values, constant / jnp.sqrt(X.shape[0]), jnp.max(jnp.sum(X * X, axis=0)))
    terms = {"growth": factor, "sigma_max(|W_k|^T|W_q|)": values.sigma_abs,
             "sigma_max(W_k^T W_q)": values.sigma_max, "sigma_min(W_k^T W_q)": values.sigma_min}
    return factor, terms, {"W_k^T W_q non-singular": values.nonsingular}


@statement()
def corollary_4_23(X, Wq, Wk, Wv, *, u) -> Bound:
    """Corollary 4.23 (A(X) generic, W_k^T W_q non-singular, d >= 2, rho_c(X^, X) small):
    rho_c(fl(A(X^)), A(X)) <= xi(A, X) (1 + (4/sqrt(d)) sigma_max(|W_k|^T|W_q|) sigma_max(W_k^T W_q)
    / sigma_min(W_k^T W_q) max_t ||x_t||_2^2) ((2n + 3d) u + rho_c(X^, X)) + O(u^2 + rho^2)."""
    d, n = X.shape
    xi = closed_forms.attention_xi(X, Wq, Wk, Wv)
    growth_factor, terms, flags = _printed_growth(X, Wq, Wk, 4.0)
    factor = xi * growth_factor
    return bound(Statement.COROLLARY_4_23, factor * (2 * n + 3 * d), factor, terms={"xi(A, X)": xi, **terms},
                 flags={"A(X) generic": jnp.isfinite(xi), "d >= 2": jnp.asarray(d >= 2),
                        "n u < 1": jnp.asarray(n * u < 1), **flags})


@statement()
def lemma_4_17_columns(X, Wq, Wk, *, u) -> Bound:
    """Lemma 4.17 for every query of causal attention at once: entry t of each field is
    ``lemma_4_17(X[:, :t + 1], Wq, Wk, u=u)`` (the scores S(X_t) of query t)."""
    d, n = X.shape
    S = (Wk @ X).T @ (Wq @ X) / jnp.sqrt(d)  # [i, t] = S(X_t)_i
    magnitude = score_magnitude(X, Wq, Wk)
    mask = causal_mask(n)
    xi = jnp.max(jnp.where(mask, _ratio(magnitude, jnp.abs(S)), 0.0), axis=0)
    generic = jnp.all(jnp.where(mask, S != 0, True), axis=0)
    return bound(Statement.LEMMA_4_17, xi * (3 * d + 1), terms={"xi(S, X)": xi},
                 flags={"S(X) generic": generic, "d u < 1": jnp.full(n, d * u < 1)})


@statement()
def lemma_4_19_columns(S, *, u) -> Bound:
    """Lemma 4.19 for every column of a causal score matrix: entry t is ``lemma_4_19`` of the
    t + 1 visible scores, (t + 4) u with 0-based t."""
    n = S.shape[1]
    length = jnp.arange(1, n + 1, dtype=jnp.float64)
    return bound(Statement.LEMMA_4_19, length + 3, flags={"n u < 1": length * u < 1})


@statement()
def corollary_4_20_columns(S, *, u) -> Bound:
    """Corollary 4.20 for every column of a causal score matrix (entries i > t ignored)."""
    n = S.shape[1]
    length = jnp.arange(1, n + 1, dtype=jnp.float64)
    s_inf = jnp.max(jnp.where(causal_mask(n), jnp.abs(S), 0.0), axis=0)
    return bound(Statement.COROLLARY_4_20, length + 3, 2 * s_inf, flags={"n u < 1": length * u < 1})
