"""What the Section 4 statements share: strict argument handling and the terms several of them
are built from, each written once (the singular values of Remark 4.18, the growth factor G, the
alpha-conditions of Lemmas 4.11 and 4.14, the perceptron's xi and support).
"""

from __future__ import annotations

import functools
import inspect
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from boundlab.runtime.compilation import compiled
from boundlab.runtime.x64 import require_x64
from boundlab.bounds.record import guard_unit_roundoff
from boundlab.errors import ratio
from boundlab.formats import gamma
from boundlab.linalg import singular_values, spectral_norm
from boundlab.quantities import centre, score_magnitude

FLOAT64_EPS = 2.0**-52


def statement(*, vectors: tuple[str, ...] = ()):
    """Make a Section 4 function strict.

    * ``u`` (unit roundoff) is a required keyword-only argument of the decorated function; a
      concrete u must satisfy 0 < u < 1 (checked here: ValueError); a traced one outside (0, 1)
      gives NaN in every field and the flag "0 < u < 1" False (``record.guard_unit_roundoff``).
    * Every array argument is converted to float64, which needs ``jax_enable_x64`` (a clear
      RuntimeError otherwise, as ``forward`` gives): the bounds are exact quantities.
    * The arguments named in ``vectors`` must be one vector each: a matrix raises ValueError
      (apply the statement to its columns with ``jax.vmap(..., in_axes=1)``).
    """

    def decorate(function):
        signature = inspect.signature(function)
        name = f"bounds.{function.__name__}"
        # the options that are Python values (norm, sigma_min_free) are static; arrays and u traced
        static = tuple(key for key, parameter in signature.parameters.items()
                       if isinstance(parameter.default, (str, bool)))
        @functools.wraps(function)
        def guarded(*args, **kwargs):
            return guard_unit_roundoff(function(*args, **kwargs), signature.bind(*args, **kwargs).arguments["u"])

        program = compiled(guarded, static_argnames=static)

        @functools.wraps(function)
        def strict(*args, **kwargs):
            bound_arguments = signature.bind(*args, **kwargs)
            arguments = dict(bound_arguments.arguments)
            check_unit_roundoff(arguments["u"], name)
            for key, value in arguments.items():
                if key != "u" and not isinstance(value, (str, bool)) and value is not None:
                    arguments[key] = as_float64(name, value)
            _check_shapes(name, arguments)
            for key in vectors:
                shape = jnp.shape(arguments[key])
                if len(shape) != 1:
                    raise ValueError(
                        f"{name}: {key} must be one vector of shape (d,), got shape {shape}; the statement is "
                        f"about one vector: for the columns of a matrix use "
                        f"jax.vmap(lambda {key}: {name}(..., u=u), in_axes=1)")
            return program(**arguments)

        strict.jitted = program.jitted
        return strict

    return decorate


def _check_shapes(name: str, arguments: dict) -> None:
    """X is (d, n) with tokens as columns, and the attention weights are (d, d)."""
    if "X" not in arguments:
        return
    shape = jnp.shape(arguments["X"])
    if len(shape) != 2:
        raise ValueError(f"{name}: X must be (d, n) with tokens as columns, got shape {shape}")
    d = shape[0]
    for key in ("Wq", "Wk", "Wv"):
        if key in arguments and jnp.shape(arguments[key]) != (d, d):
            raise ValueError(f"{name}: {key} must be ({d}, {d}) for X of shape {shape}, got {jnp.shape(arguments[key])}")


def as_float64(name: str, tree):
    """Every array of a pytree in float64; a RuntimeError naming ``name`` when x64 is off (JAX
    would silently compute in float32)."""
    require_x64(name)
    return jax.tree.map(lambda a: jnp.asarray(a, dtype=jnp.float64), tree)


def check_unit_roundoff(u, name: str) -> None:
    """A concrete u must be a number in (0, 1); a traced one cannot be checked here: the records
    flag it ("0 < u < 1") and are NaN where it fails (``record.guard_unit_roundoff``)."""
    if isinstance(u, jax.core.Tracer):
        return
    value = np.asarray(u)
    if value.dtype.kind not in "fiu" or not np.all(np.isfinite(value)) or np.any(value <= 0) or np.any(value >= 1):
        raise ValueError(f"{name}: u must be a unit roundoff in (0, 1) (2^-t for t-bit arithmetic, "
                         f"e.g. boundlab.get_format('fp16').unit_roundoff), got {u!r}")


class Spectral(NamedTuple):
    """Singular values of Remark 4.18: sigma_max(|W_k|^T |W_q|), and sigma_max, sigma_min of
    W_k^T W_q; ``nonsingular`` is sigma_min > d eps sigma_max (eps = 2^-52: below that the computed
    sigma_min is round-off of an exactly singular product, as for numpy's matrix_rank)."""

    sigma_abs: jax.Array
    sigma_max: jax.Array
    sigma_min: jax.Array
    nonsingular: jax.Array


def spectral(Wq, Wk) -> Spectral:
    d = Wq.shape[0]
    sigma_abs = spectral_norm(jnp.abs(Wk), jnp.abs(Wq))  # scaled first: no overflow, no LAPACK noise
    singular = singular_values(Wk, Wq)
    nonsingular = singular[-1] > d * FLOAT64_EPS * singular[0]
    return Spectral(sigma_abs, singular[0], jnp.where(nonsingular, singular[-1], 0.0), nonsingular)


def growth(Wq, Wk, normalised_X) -> tuple[jax.Array, jax.Array, Spectral]:
    """(G, G without sigma_min, singular values), G the factor Corollary 4.23 contributes on
    normalised columns (||x_t||_2^2 = d):

    G = 1 + 4 sqrt(d) sigma_max(|W_k|^T|W_q|) sigma_max(W_k^T W_q) / sigma_min(W_k^T W_q) (printed,
    through Remark 4.18, false in general: README errata), and its valid replacement from the
    absolute score bound, 1 + 4 sqrt(d) max_{i,t} |x_i|^T|W_k|^T|W_q||x_t| / d = 1 + 4 max_{i,t}
    |x_i|^T|W_k|^T|W_q||x_t| / sqrt(d).
    """
    values = spectral(Wq, Wk)
    d = Wq.shape[0]
    return printed_growth(values, 4 * jnp.sqrt(d)), 1 + 4 * jnp.max(score_magnitude(normalised_X, Wq, Wk)), values


def printed_growth(values: Spectral, scale, max_square=1.0) -> jax.Array:
    """1 + scale sigma_max(|W_k|^T|W_q|) sigma_max(W_k^T W_q) / sigma_min(W_k^T W_q) max_t ||x_t||_2^2:
    Remark 4.22 (scale 2 / sqrt(d)), Corollary 4.23 (scale 4 / sqrt(d)), and G (4 / sqrt(d) times
    max_t ||x_t||_2^2 = d on normalised columns: scale 4 sqrt(d))."""
    return 1 + scale * ratio(values.sigma_abs, values.sigma_min) * values.sigma_max * max_square


def affine_error_factor(d, u):
    """u + (1 + u) gamma_d: the relative backward error of fl(A x + b) (Lemma 4.3.3)."""
    return u + (1 + u) * gamma(d, u)


def layer_norm_alpha(x, u, alpha=1.0) -> jax.Array:
    """||c(x)||_{-inf} > alpha 2 (1 + u) gamma_d ||x||_inf for one vector x (Lemma 4.11, Cor. 4.12)."""
    d = x.shape[0]
    return jnp.min(jnp.abs(centre(x))) > alpha * 2 * (1 + u) * gamma(d, u) * jnp.max(jnp.abs(x))


class PerceptronTerms(NamedTuple):
    """Lemma 4.14 at one token x: L_1(x), xi(M, x), |Omega| and the alpha-condition."""

    hidden: jax.Array
    output: jax.Array  # M(x) = A_2 ReLU(L_1(x)) + b_2
    xi: jax.Array
    omega: jax.Array
    alpha_condition: jax.Array


def perceptron_terms(x, A1, b1, A2, b2, u, hidden=None) -> PerceptronTerms:
    """xi(M, x) = max_i (|A_2(i, Omega)| (|A_1(Omega, :)| |x| + |b_1(Omega)|) + |b_2(i)|) / |M(x)_i|,
    Omega = supp_+(L_1(x)), and |L_1(x)| > (u + (1 + u) gamma_d)(|A_1||x| + |b_1|) entrywise.
    ``hidden`` = L_1(x) when it is known (the exact intermediates)."""
    d = x.shape[0]
    hidden = A1 @ x + b1 if hidden is None else hidden
    support = hidden > 0
    output = A2 @ jnp.where(support, hidden, 0.0) + b2
    inner = jnp.abs(A1) @ jnp.abs(x) + jnp.abs(b1)
    # |A_2(i, Omega)| v(Omega) = |A_2| (v masked to Omega): a matrix-vector product (a GEMM over
    # the tokens under vmap) rather than a masked copy of A_2 per token
    magnitude = jnp.abs(A2) @ jnp.where(support, inner, 0.0) + jnp.abs(b2)
    xi = jnp.max(ratio(magnitude, jnp.abs(output)))
    alpha = jnp.all(jnp.abs(hidden) > affine_error_factor(d, u) * inner)
    return PerceptronTerms(hidden, output, xi, jnp.sum(support).astype(x.dtype), alpha)


def residual_xi(x, branch) -> jax.Array:
    """xi(f, x) = max_i (|x_i| + |branch_i|) / |x_i + branch_i| of a residual x + branch."""
    return jnp.max(ratio(jnp.abs(x) + jnp.abs(branch), jnp.abs(x + branch)))

