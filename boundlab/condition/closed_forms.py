"""The paper's closed forms for Jacobians and condition numbers (Section 3), in float64.

Each function evaluates one lemma at a point and returns a record whose fields are named after
the quantities of the lemma.  Fields that the lemma states as equalities are exact; fields named
``*_bound`` are the lemma's upper bounds.  ``generic`` flags say whether the componentwise
condition number is defined (Section 3.1); where it is not, the value is inf.

Notation: ||x||_{-inf} = min_i |x_i|; c(x) = x - mu(x) e (centring); B = W_k^T W_q / sqrt(d).
Errata applied here (see the README, "Errata"), both in Lemma 3.8 part 3: the bounds on kappa_c,inf
and kappa_cc need |c(x)|^T |x| where |c(x)^T x| is printed, and the last inequality needs
||c(x)||_{-inf} in the denominator: kappa_cc(N, x) < 3 ||x||_inf / ||c(x)||_{-inf}.  The printed
versions are kept as ``*_as_printed`` fields; the tests show inputs where they fail.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from boundlab.runtime.compilation import compiled
from boundlab.condition.autodiff import operator_norm
from boundlab.errors import ratio as _ratio
from boundlab.linalg import spectral_norm
from boundlab.quantities import causal_mask, centre


def _min_abs(x):
    return jnp.min(jnp.abs(x))


def _max_abs(x):
    return jnp.max(jnp.abs(x))


def _guard(record, defined):
    """Every float field of ``record`` where ``defined``, inf elsewhere (never NaN)."""
    def clean(value):
        value = jnp.asarray(value)
        if value.dtype == jnp.bool_:
            return value & defined
        return jnp.where(defined & ~jnp.isnan(value), value, jnp.inf)

    return type(record)(*(clean(v) for v in record))


def _sum_of_others(v):
    """(sum_{j != i} v_j)_i, summed directly rather than as sum(v) - v_i (which cancels)."""
    n = v.shape[0]
    return jnp.sum(jnp.where(jnp.eye(n, dtype=bool), 0.0, v[None, :]), axis=1)


class Affine(NamedTuple):
    """Lemma 3.4: L(x) = A x + b; J = A; all three condition numbers exact."""

    jacobian: jax.Array
    kappa_22: jax.Array
    kappa_c_inf: jax.Array
    kappa_cc: jax.Array
    generic: jax.Array


@compiled
def affine(A, b, x) -> Affine:
    """Lemma 3.4: kappa_22 = ||A||_2 ||x||_2 / ||Ax + b||_2, kappa_c,inf = max_i |e_i^T A||x| /
    max_i |e_i^T (Ax + b)|, and, when Ax + b is generic, kappa_cc = max_i |e_i^T A||x| / |e_i^T (Ax + b)|."""
    y = A @ x + b
    rows = jnp.abs(A) @ jnp.abs(x)
    generic = jnp.all(y != 0)
    return Affine(A, _ratio(spectral_norm(A) * jnp.linalg.norm(x), jnp.linalg.norm(y)),
                  _ratio(jnp.max(rows), _max_abs(y)),
                  jnp.where(generic, jnp.max(_ratio(rows, jnp.abs(y))), jnp.inf), generic)


class RMSNorm(NamedTuple):
    """Lemma 3.6 at x != 0."""

    jacobian: jax.Array
    norm_22: jax.Array
    norm_1inf_bound: jax.Array
    norm_inf_bound: jax.Array
    kappa_22: jax.Array
    kappa_c_inf: jax.Array
    kappa_cc: jax.Array
    generic: jax.Array


@compiled
def rms_norm(x) -> RMSNorm:
    """Lemma 3.6: J_R(x) = sqrt(d)/||x||_2 (I - x x^T / ||x||_2^2); ||J||_22 = sqrt(d)/||x||_2;
    ||J||_{1,inf} <= sqrt(d)/||x||_2 max{1 - ||x||_{-inf}^2/||x||_2^2, ||x||_inf^2/||x||_2^2};
    ||J||_{inf,inf} <= sqrt(d)/||x||_2 (1 + ||x||_inf (||x||_1 - 2||x||_{-inf}) / ||x||_2^2);
    kappa_22 = 1; kappa_c,inf = (2/||x||_inf) max_i |x_i| (1 - x_i^2/||x||_2^2);
    kappa_cc = 2 (1 - ||x||_{-inf}^2 / ||x||_2^2) <= 2 when x is generic (inf otherwise)."""
    d = x.shape[0]
    nonzero = jnp.any(x != 0)  # R is undefined at 0: every field is then inf
    sq = jnp.where(nonzero, jnp.sum(x * x), 1.0)
    norm = jnp.sqrt(sq)
    scale = jnp.sqrt(d) / norm
    # diagonal 1 - x_i^2/||x||^2 written as sum_{j != i} x_j^2 / ||x||^2: no cancellation
    others = _sum_of_others(x * x)
    J = scale * (jnp.diag(others / sq) - (jnp.outer(x, x) / sq) * (1 - jnp.eye(d)))
    lo, hi = _min_abs(x), jnp.where(nonzero, _max_abs(x), 1.0)
    generic = jnp.all(x != 0)
    return _guard(RMSNorm(
        J, scale,
        scale * jnp.maximum(1 - lo**2 / sq, hi**2 / sq),
        scale * (1 + hi * (jnp.sum(jnp.abs(x)) - 2 * lo) / sq),
        jnp.ones_like(norm),
        2 / hi * jnp.max(jnp.abs(x) * (1 - x * x / sq)),
        jnp.where(generic, 2 * (1 - lo**2 / sq), jnp.inf),
        generic,
    ), nonzero)


class Centring(NamedTuple):
    """Lemma 3.7 (d >= 2, c(x) != 0)."""

    jacobian: jax.Array
    norm_22: jax.Array
    norm_1inf: jax.Array
    norm_inf: jax.Array
    kappa_22: jax.Array
    kappa_c_inf: jax.Array
    kappa_cc: jax.Array
    kappa_cc_bound: jax.Array
    generic: jax.Array


@compiled
def centring(x) -> Centring:
    """Lemma 3.7: J = I - e e^T / d; ||J||_22 = 1, ||J||_{1,inf} = 1 - 1/d, ||J||_{inf,inf} =
    2 (1 - 1/d); kappa_22 = ||x||_2/||c||_2; kappa_c,inf = (||x||_1 + (d-2)||x||_inf)/(d ||c||_inf);
    kappa_cc = max_i (||x||_1 + (d-2)|x_i|)/(d |c_i|) < 2 ||x||_inf / ||c||_{-inf} (c generic)."""
    d = x.shape[0]
    c = centre(x)
    one = jnp.sum(jnp.abs(x))
    generic = jnp.all(c != 0)
    return _guard(Centring(
        jnp.eye(d) - jnp.ones((d, d)) / d, jnp.asarray(1.0), jnp.asarray(1 - 1 / d), jnp.asarray(2 * (1 - 1 / d)),
        _ratio(jnp.linalg.norm(x), jnp.linalg.norm(c)),
        _ratio(one + (d - 2) * _max_abs(x), d * _max_abs(c)),
        jnp.where(generic, jnp.max(_ratio(one + (d - 2) * jnp.abs(x), d * jnp.abs(c))), jnp.inf),
        jnp.where(generic, _ratio(2 * _max_abs(x), _min_abs(c)), jnp.inf),
        generic,
    ), jnp.any(c != 0))


class LayerNorm(NamedTuple):
    """Lemma 3.8 at x with c(x) != 0."""

    jacobian: jax.Array
    norm_22: jax.Array
    norm_1inf_bound: jax.Array
    norm_inf_bound: jax.Array
    kappa_22: jax.Array
    kappa_c_inf_bound: jax.Array
    kappa_cc_bound: jax.Array
    kappa_cc_simple_bound: jax.Array
    kappa_c_inf_bound_as_printed: jax.Array
    kappa_cc_bound_as_printed: jax.Array
    kappa_cc_simple_bound_as_printed: jax.Array
    generic: jax.Array


@compiled
def layer_norm(x) -> LayerNorm:
    """Lemma 3.8: J_N = sqrt(d)/||c||_2 (I - e e^T/d - c c^T/||c||_2^2) (exact); ||J||_22 =
    sqrt(d)/||c||_2; ||J||_{1,inf} <= sqrt(d)/||c||_2 (1 - 1/d + ||c||_inf^2/||c||_2^2);
    ||J||_{inf,inf} <= sqrt(d)/||c||_2 (2 - 2/d + ||c||_inf ||c||_1 / ||c||_2^2); kappa_22 =
    ||x||_2/||c||_2; kappa_c,inf <= |c|^T |x| / ||c||_2^2 + (||x||_1 + (d-2)||x||_inf)/(d ||c||_inf);
    kappa_cc <= |c|^T |x| / ||c||_2^2 + max_i (||x||_1 + (d-2)|x_i|)/(d |c_i|) < 3 ||x||_inf /
    ||c||_{-inf} (c generic).

    Errata (README, "Errata"): the paper prints |c^T x| where the proof's triangle inequality gives
    |c|^T |x| (c^T x = ||c||_2^2, so the printed term is always 1 and the printed bounds fail), and
    ||c||_inf where ||c||_{-inf} is needed in the last bound.  The printed versions are the
    ``*_as_printed`` fields."""
    d = x.shape[0]
    c = centre(x)
    defined = jnp.any(c != 0)  # N is undefined for constant x: every field is then inf
    sq = jnp.where(defined, jnp.sum(c * c), 1.0)
    scale = jnp.sqrt(d) / jnp.sqrt(sq)
    J = scale * (jnp.eye(d) - jnp.ones((d, d)) / d - jnp.outer(c, c) / sq)
    one = jnp.sum(jnp.abs(x))
    projection = jnp.abs(c) @ jnp.abs(x) / sq
    printed_projection = jnp.abs(c @ x) / sq
    mixed_tail = (one + (d - 2) * _max_abs(x)) / (d * _max_abs(c))
    cc_tail = jnp.max(_ratio(one + (d - 2) * jnp.abs(x), d * jnp.abs(c)))
    generic = jnp.all(c != 0)
    return _guard(LayerNorm(
        J, scale,
        scale * (1 - 1 / d + _max_abs(c) ** 2 / sq),
        scale * (2 - 2 / d + _max_abs(c) * jnp.sum(jnp.abs(c)) / sq),
        jnp.linalg.norm(x) / jnp.sqrt(sq),
        projection + mixed_tail,
        jnp.where(generic, projection + cc_tail, jnp.inf),
        jnp.where(generic, _ratio(3 * _max_abs(x), _min_abs(c)), jnp.inf),
        printed_projection + mixed_tail,
        jnp.where(generic, printed_projection + cc_tail, jnp.inf),
        jnp.where(generic, 3 * _max_abs(x) / _max_abs(c), jnp.inf),
        generic,
    ), defined)


class Perceptron(NamedTuple):
    """Lemma 3.10: J_M(x) = A_2(:, Omega) A_1(Omega, :), Omega = supp_+(L_1(x)), L_1(x) generic."""

    jacobian: jax.Array
    generic: jax.Array


@compiled
def perceptron(A1, b1, A2, b2, x) -> Perceptron:
    """Lemma 3.10 (differentiable only where L_1(x) = A_1 x + b_1 is generic: ``generic``)."""
    hidden = A1 @ x + b1
    active = (hidden > 0).astype(A1.dtype)
    return Perceptron((A2 * active[None, :]) @ A1, jnp.all(hidden != 0))


def bilinear(Wq, Wk):
    """B = W_k^T W_q / sqrt(d) (Lemma 3.12, d_k = d)."""
    return Wk.T @ Wq / jnp.sqrt(Wq.shape[0])


class Scores(NamedTuple):
    """Lemma 3.12 for S(X) = X^T B x_n in R^n, X in R^{d x n}."""

    jacobian: jax.Array
    norm_inf_bound: jax.Array
    kappa_c_inf_bound: jax.Array
    kappa_cc_bound: jax.Array
    generic: jax.Array


def scores_jacobian(X, B):
    """J_S(X) = I_n (x) x_n^T B^T + e_n^T (x) X^T B, an n x dn matrix (Lemma 3.12)."""
    n = X.shape[1]
    last = jnp.zeros(n).at[-1].set(1.0)
    return jnp.kron(jnp.eye(n), (B @ X[:, -1])[None, :]) + jnp.kron(last[None, :], X.T @ B)


@compiled
def scores(X, Wq, Wk) -> Scores:
    """Lemma 3.12: ||J_S||_{p,q} <= ||I_n||_{q', p'} ||B x_n||_{p'} + ||X^T B||_{p,q} (here p = q =
    inf, where ||I_n||_{1,1} = 1 and p' = 1); kappa_c,inf <= max_i (|x_i|^T |B x_n| + |x_i^T B||x_n|)
    / ||X^T B x_n||_inf; kappa_cc <= max_i (same) / |x_i^T B x_n| when S(X) is generic."""
    B = bilinear(Wq, Wk)
    last = X[:, -1]
    S = X.T @ B @ last
    terms = jnp.abs(X).T @ jnp.abs(B @ last) + jnp.abs(X.T @ B) @ jnp.abs(last)
    generic = jnp.all(S != 0)
    return Scores(
        scores_jacobian(X, B),
        jnp.sum(jnp.abs(B @ last)) + operator_norm(X.T @ B, jnp.inf, jnp.inf),
        _ratio(jnp.max(terms), _max_abs(S)),
        jnp.where(generic, jnp.max(_ratio(terms, jnp.abs(S))), jnp.inf),
        generic,
    )


class Softmax(NamedTuple):
    """Lemma 3.13 (psi(s) is always generic; the condition numbers need s != 0)."""

    jacobian: jax.Array
    norm_22_bound: jax.Array
    norm_1inf: jax.Array
    norm_inf: jax.Array
    kappa_c_inf: jax.Array
    kappa_cc: jax.Array
    kappa_cc_bound: jax.Array
    defined: jax.Array


@compiled
def softmax(s) -> Softmax:
    """Lemma 3.13: J_psi = diag(psi) - psi psi^T; ||J||_22 <= ||psi||_inf; ||J||_{1,inf} =
    max_i psi_i (1 - psi_i); ||J||_{inf,inf} = 2 ||J||_{1,inf}; kappa_c,inf = max_i psi_i (|s_i|
    (1 - 2 psi_i) + psi^T |s|) / ||psi||_inf; kappa_cc = max_i |s_i| (1 - 2 psi_i) + psi^T |s| <=
    2 ||s||_inf."""
    psi = jax.nn.softmax(s)
    spread = jnp.abs(s) * (1 - 2 * psi) + psi @ jnp.abs(s)
    one_inf = jnp.max(psi * _sum_of_others(psi))  # 1 - psi_i as sum_{j != i} psi_j: no cancellation
    record = Softmax(softmax_jacobian(psi), jnp.max(psi), one_inf, 2 * one_inf,
                     jnp.max(psi * spread) / jnp.max(psi), jnp.max(spread), 2 * _max_abs(s), jnp.asarray(True))
    return _guard(record, jnp.any(s != 0))  # Lemma 3.3 needs s != 0


def softmax_jacobian(psi):
    """J_psi = diag(psi) - psi psi^T (Lemma 3.13), the diagonal psi_i - psi_i^2 written as
    psi_i sum_{j != i} psi_j: no cancellation when psi_i ~ 1."""
    n = psi.shape[0]
    return jnp.diag(psi * _sum_of_others(psi)) - jnp.outer(psi, psi) * (1 - jnp.eye(n))


class Attention(NamedTuple):
    """Lemma 3.14 and Remark 3.15 for A : R^{d x n} -> R^{d x n}."""

    jacobian: jax.Array
    norm_inf_bound: jax.Array
    kappa_c_inf_bound: jax.Array
    kappa_cc_bound: jax.Array
    xi: jax.Array
    remark_3_15_bound: jax.Array
    remark_3_15_normalised_bound: jax.Array
    normalised: jax.Array
    generic: jax.Array


def _causal_softmax(X, B):
    mask = causal_mask(X.shape[1])
    S = jnp.where(mask, X.T @ B @ X, -jnp.inf)  # column t: S(X_t) padded
    return jnp.where(mask, jax.nn.softmax(S, axis=0), 0.0), mask


def _xi_parts(X, Wq, Wk, Wv):
    """(P, A(X), |W_v||X| P, generic, xi(A, X)) shared by ``attention`` and ``attention_xi``."""
    P, mask = _causal_softmax(X, bilinear(Wq, Wk))
    out = Wv @ X @ P
    plain, generic, xi = _xi_from(X, Wv, P, out)
    return P, mask, out, plain, generic, xi


def _xi_from(X, Wv, P, out):
    """(|W_v||X| P, generic, xi(A, X)) from the softmax matrix P and A(X) = W_v X P."""
    plain = jnp.abs(Wv) @ jnp.abs(X) @ P  # (i, t): |e_i^T W_v| |X_t| psi_t
    generic = jnp.all(out != 0)
    return plain, generic, jnp.where(generic, jnp.max(_ratio(plain, jnp.abs(out))), jnp.inf)


def attention_xi_from(X, Wv, P, out) -> jax.Array:
    """``attention_xi`` from what an exact forward already holds: the softmax matrix P (column t
    psi(S(X_t)), zero below) and A(X) = W_v X P (``Intermediates.softmax``, ``.attention``)."""
    return _xi_from(X, Wv, P, out)[-1]


@compiled
def attention_xi(X, Wq, Wk, Wv) -> jax.Array:
    """xi(A, X) = max_{i,t} |e_i^T W_v||X_t| psi_t / |e_i^T W_v X_t psi_t| (Remark 3.15; inf when
    A(X) is not generic), without forming the Jacobian."""
    return _xi_parts(X, Wq, Wk, Wv)[-1]


@compiled
def attention_jacobian(X, Wq, Wk, Wv):
    """J_A(X) (dn x dn): block row t holds H_t = psi_t^T (x) W_v + W_v X_t J_psi J_S(X_t) in its
    first t block columns and zeros after (Lemma 3.14); psi_t = psi(S(X_t))."""
    d, n = X.shape
    B = bilinear(Wq, Wk)
    rows = []
    for t in range(1, n + 1):
        Xt = X[:, :t]
        psi = jax.nn.softmax(Xt.T @ B @ Xt[:, -1])
        H = jnp.kron(psi[None, :], Wv) + Wv @ Xt @ softmax_jacobian(psi) @ scores_jacobian(Xt, B)
        rows.append(jnp.concatenate([H, jnp.zeros((d, d * (n - t)))], axis=1))
    return jnp.concatenate(rows, axis=0)


@compiled
def attention(X, Wq, Wk, Wv) -> Attention:
    """Lemma 3.14 and Remark 3.15.

    ||J_A||_{inf,inf} <= ||W_v||_inf + ||W_v X||_inf (||X^T B^T||_inf + ||X^T B||_inf) / 2;
    with m_{i,t} = |e_i^T W_v||X_t| psi_t + 2 |e_i^T W_v X_t| psi_t || |X_t|^T |B x_t| + |X_t^T B||x_t| ||_inf:
    kappa_c,inf <= max_{i,t} m_{i,t} / ||A(X)||_{1,inf};  kappa_cc <= max_{i,t} m_{i,t} / |A(X)_{i,t}|
    (A(X) generic).  Remark 3.15: kappa_cc <= xi [1 + 4 ||B||_2 max_t ||x_t||_2^2] with xi =
    max_{i,t} |e_i^T W_v||X_t| psi_t / |e_i^T W_v X_t psi_t|, and, for normalised inputs
    (||x_t||_2^2 = d, as after N or R), kappa_cc <= xi [1 + 4 d ||B||_2]; ``normalised`` says
    whether max_t ||x_t||_2^2 <= d holds (to a relative 1e-12).
    """
    d, n = X.shape
    B = bilinear(Wq, Wk)
    P, mask, out, plain, generic, xi = _xi_parts(X, Wq, Wk, Wv)
    absX = jnp.abs(X)
    # z[j, t] = |x_j|^T |B x_t| + |x_j^T B| |x_t| for j <= t
    z = absX.T @ jnp.abs(B @ X) + jnp.abs(X.T @ B) @ absX
    z_inf = jnp.max(jnp.where(mask, z, 0.0), axis=0)
    weighted = jnp.abs(Wv @ X) @ P  # (i, t): |e_i^T W_v X_t| psi_t (P is zero below row t)
    m = plain + 2 * weighted * z_inf[None, :]
    spectral = spectral_norm(B)
    max_sq = jnp.max(jnp.sum(X * X, axis=0))
    return Attention(
        attention_jacobian(X, Wq, Wk, Wv),
        operator_norm(Wv, jnp.inf, jnp.inf) + 0.5 * operator_norm(Wv @ X, jnp.inf, jnp.inf)
        * (operator_norm(X.T @ B.T, jnp.inf, jnp.inf) + operator_norm(X.T @ B, jnp.inf, jnp.inf)),
        _ratio(jnp.max(m), _max_abs(out)),
        jnp.where(generic, jnp.max(_ratio(m, jnp.abs(out))), jnp.inf),
        xi,
        xi * (1 + 4 * spectral * max_sq),
        xi * (1 + 4 * d * spectral),
        max_sq <= d * (1 + 1e-12),
        generic,
    )
