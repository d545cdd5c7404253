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

from boundlab.errors import ratio
from boundlab.linalg import singular_values, symmetric_eigenvalues
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


def softmax_sensitivity(scores, probabilities) -> jax.Array:
    """kappa_softmax = max_t lambda_max(diag(p_t) - p_t p_t^T) ||s_t||_2 / ||p_t||_2 (columns t;
    masked entries are zeros and add nothing)."""

    def column(s, p):
        jacobian = jnp.diag(p) - jnp.outer(p, p)
        return symmetric_eigenvalues(jacobian)[-1] * jnp.linalg.norm(s) / jnp.linalg.norm(p)

    return jnp.max(jax.vmap(column, in_axes=(1, 1))(scores, probabilities))


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
