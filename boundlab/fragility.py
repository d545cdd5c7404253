"""Baek's layer-wise fragility diagnostics ("Numerical Fragility in Transformers", arXiv 2510.21770).

Evaluated per layer on the exact (float64) intermediates of one input X (d x n, tokens as
columns), for the paper's single-head causal attention.  With N = N(X) the normalised input,
Q = W_q N, K = W_k N, V = W_v N (d x n) and S = Q^T K / sqrt(d) (n x n, before the causal mask):

* score-scale ratio kappa_score = ||Q||_2 ||K||_2 / (||S||_2 sqrt(d)) (>= 1; spectral norms,
  computed exactly here where Baek's code uses a few power iterations);
* softmax sensitivity kappa_softmax = max_t lambda_max(diag(p_t) - p_t p_t^T) ||s_t||_2 / ||p_t||_2
  over query columns t, with s_t the visible scores and p_t = psi(s_t);
* value conditioning kappa(V) = sigma_max(V) / sigma_min(V) over the min(d, n) singular values
  (inf when V is rank-deficient);
* layer-norm indicators C_LN = sigma_med / sqrt(eps) + sigma_med^2 / eps + 1 and
  rho_LN = sigma_med^2 / eps * d * u, with sigma_med the median over tokens of the standard
  deviation of a normalisation's input (the root mean square for RMS norm), the larger of the
  block's two normalisations.  The paper's N (eq. 1) has no epsilon, so Baek's indicators are
  evaluated with ``eps``, the epsilon a typical implementation would add (1e-5 by default), and
  u = 2^-t is the unit roundoff (Baek's code uses machine epsilon 2^(1-t));
* the per-layer predictor kappa_softmax (1 + kappa_score) kappa(V) ||W_O||_2 + kappa(W_1) +
  kappa(W_2) + kappa(W_O) + C_LN with W_1 = A_1, W_2 = A_2 and W_O = I (the paper's attention
  has no output projection: W_v is its value map), so ||W_O||_2 = kappa(W_O) = 1; the network's
  predictor is the sum over layers.

Non-finite intermediates (NaN weights, a constant layer-norm input) give NaN or inf, never a
finite number.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from boundlab.errors import ratio
from boundlab.linalg import singular_values
from boundlab.quantities import centre


def spectral_norm(M) -> jax.Array:
    """||M||_2, the largest singular value (NaN when M holds NaN)."""
    return singular_values(M)[0]


def matrix_condition(M) -> jax.Array:
    """sigma_max / sigma_min over the min(rows, columns) singular values (x/0 = inf, 0/0 = 0)."""
    s = singular_values(M)
    return ratio(s[0], s[-1])


def score_scale_ratio(N, Wq, Wk) -> jax.Array:
    """kappa_score = ||Q||_2 ||K||_2 / (||S||_2 sqrt(d)) with Q = W_q N, K = W_k N, S = Q^T K / sqrt(d)."""
    d = N.shape[0]
    Q, K = Wq @ N, Wk @ N
    S = Q.T @ K / jnp.sqrt(d)
    return ratio(spectral_norm(Q) * spectral_norm(K), spectral_norm(S) * jnp.sqrt(d))


@jax.custom_jvp
def softmax_jacobian_top(p) -> jax.Array:
    """lambda_max(diag(p) - p p^T) for a vector p >= 0 (a softmax column; masked entries 0), without
    LAPACK: the root in [p_(2), p_(1)] of the secular equation sum_i p_i^2 / (p_i - lambda) = 1
    (det(diag(p) - lambda I - p p^T) = det(diag(p) - lambda I) (1 - p^T (diag(p) - lambda I)^-1 p);
    the left side increases on (p_(2), p_(1)) and the eigenvalues interlace those of diag(p)),
    found by bisection on the bit patterns of the nonnegative float64 numbers, 64 steps: the two
    neighbouring numbers around the root, as well as the computed sign of the left side decides.
    A tie p_(1) = p_(2) gives p_(1) (e_1 - e_2 is an eigenvector).  Vectorised over leading axes.
    Differentiable: d lambda = v^T (diag(dp) - dp p^T - p dp^T) v with v_i ~ p_i / (p_i - lambda).
    On columns whose largest entry is near 1 it is more accurate than LAPACK on the formed matrix,
    whose entry p_(1) - p_(1)^2 cancels: for p = (1 - e, e), e = 1e-10, it gives 2 e (1 - e) to
    about 1e-15, LAPACK to 2e-8 (and e times the golden ratio once 1 - e rounds to 1)."""
    p = jnp.asarray(p, jnp.float64)
    top2 = lax.top_k(p, 2)[0] if p.shape[-1] > 1 else jnp.concatenate([p, jnp.zeros_like(p)], axis=-1)
    high, low = top2[..., 0], top2[..., 1]

    total = jnp.sum(p, axis=-1)

    def excess(lam):
        # sum_i p_i^2 / (p_i - lambda) - 1 = (sum_i p_i - 1) + lambda sum_i p_i / (p_i - lambda),
        # increasing in lambda on (p_(2), p_(1)); the second form keeps a peaked column's small
        # lambda (about 2 p_(2) when p_(1) is near 1) to full relative accuracy, where the first
        # (and the matrix diag(p) - p p^T formed in floating point) cancels it away
        gap = p - lam[..., None]
        terms = jnp.where(gap == 0, -jnp.inf, p / jnp.where(gap == 0, 1.0, gap))  # lambda = p_i: the pole
        return (total - 1) + lam * jnp.sum(jnp.where(p > 0, terms, 0.0), axis=-1)

    as_bits = lambda x: lax.bitcast_convert_type(x, jnp.int64)  # noqa: E731  ordered for x >= 0
    as_float = lambda b: lax.bitcast_convert_type(b, jnp.float64)  # noqa: E731

    def halve(_, bounds):
        lo, hi = bounds
        mid = lo + (hi - lo) // 2
        above = excess(as_float(mid)) > 0
        return jnp.where(above, lo, mid), jnp.where(above, mid, hi)

    lo, hi = lax.fori_loop(0, 64, halve, (as_bits(jnp.maximum(low, 0.0)), as_bits(jnp.maximum(high, 0.0))))
    lo, hi = as_float(lo), as_float(hi)  # neighbours around the root: the one nearer to it
    root = jnp.where(jnp.abs(excess(lo)) <= jnp.abs(excess(hi)), lo, hi)
    root = jnp.where((low == 0) & (total >= 1), 0.0, root)  # one nonzero entry of at least 1: the root is 0
    root = jnp.where(high == low, high, root)
    return jnp.where(jnp.all(jnp.isfinite(p), axis=-1), root, jnp.nan)


@softmax_jacobian_top.defjvp
def _softmax_jacobian_top_jvp(primals, tangents):
    (p,), (dp,) = primals, tangents
    lam = softmax_jacobian_top(p)
    gap = p - lam[..., None]
    v = jnp.where(p > 0, p / jnp.where(gap == 0, 1.0, gap), 0.0)
    v = v / jnp.linalg.norm(v, axis=-1, keepdims=True)
    return lam, jnp.sum(v * v * dp, axis=-1) - 2 * jnp.sum(v * dp, axis=-1) * jnp.sum(v * p, axis=-1)


def softmax_sensitivity(scores, probabilities) -> jax.Array:
    """kappa_softmax = max_t lambda_max(diag(p_t) - p_t p_t^T) ||s_t||_2 / ||p_t||_2 (columns t;
    masked entries are zeros and add nothing); lambda_max by ``softmax_jacobian_top``."""
    top = softmax_jacobian_top(probabilities.T)
    return jnp.max(top * jnp.linalg.norm(scores, axis=0) / jnp.linalg.norm(probabilities, axis=0))


def spread(X, norm: str) -> jax.Array:
    """sigma_med: the median over columns of the standard deviation (layer norm) or the root
    mean square (RMS norm) of each column of a normalisation's input."""
    centred = centre(X) if norm == "layer" else X
    return jnp.median(jnp.sqrt(jnp.mean(centred**2, axis=0)))


def layer_norm_indicators(sigma_med, d: int, eps: float, u) -> tuple[jax.Array, jax.Array]:
    """(C_LN, rho_LN) = (sigma/sqrt(eps) + sigma^2/eps + 1, sigma^2/eps * d * u), with x/0 = inf
    and 0/0 = 0 (a model that adds no epsilon: inf)."""
    return ratio(sigma_med, jnp.sqrt(eps)) + ratio(sigma_med**2, eps) + 1, ratio(sigma_med**2, eps) * d * u


def layer_diagnostics(layer, intermediates, norm: str, eps: float, units: dict) -> dict:
    """Baek's diagnostics of one layer from its exact ``transformer.Intermediates``.

    ``units``: name -> u for the rho_LN of each format.  Returns a dict of scalars.
    """
    d = intermediates.inputs.shape[0]
    N = intermediates.attention_input
    sigma_med = jnp.maximum(spread(intermediates.inputs, norm), spread(intermediates.attention_residual, norm))
    C_LN, _ = layer_norm_indicators(sigma_med, d, eps, 0.0)
    values = {
        "kappa_score": score_scale_ratio(N, layer.Wq, layer.Wk),
        "kappa_softmax": softmax_sensitivity(intermediates.scores, intermediates.softmax),
        "kappa_V": matrix_condition(layer.Wv @ N),
        "kappa_A1": matrix_condition(layer.A1),
        "kappa_A2": matrix_condition(layer.A2),
        "C_LN": C_LN,
    }
    values["baek_layer"] = values["kappa_softmax"] * (1 + values["kappa_score"]) * values["kappa_V"] \
        + values["kappa_A1"] + values["kappa_A2"] + 1 + C_LN
    for name, u in units.items():
        values[f"rho_LN/{name}"] = layer_norm_indicators(sigma_med, d, eps, u)[1]
    return values
