"""Condition numbers of any function of arrays from its Jacobian (Lemma 3.3), via autodiff.

Matrices are vectorised column by column, vec(X) = [x_1; ...; x_n] (Section 3.1), so the
Jacobian of f : R^{m x n} -> R^{p x q} is the (pq x mn) matrix of vec(f) against vec(X); a pytree
argument is vectorised leaf by leaf in that way and the pieces concatenated.

* componentwise: kappa_cc(f, x) = ||diag(vec f(x))^-1 J diag(vec x)||_inf, defined only when
  f(x) is generic (no zero entry); otherwise the value is inf and ``defined`` is False.
* mixed: kappa_c,inf(f, x) = ||J diag(vec x)||_inf / ||f(x)||_inf.
* normwise: kappa_p,q(f, x) = ||J||_{p,q} ||x||_p / ||f(x)||_q.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from boundlab.runtime.compilation import compiled
from boundlab.linalg import spectral_norm


class Condition(NamedTuple):
    """A condition number and whether the paper defines it at this point (a pytree).

    ``defined`` is False when the componentwise number meets a non-generic output (Section
    3.1: kappa_cc needs every output entry non-zero) or the input or output is zero; ``value`` is
    then inf, never NaN and never a silent finite number.
    """

    value: jax.Array
    defined: jax.Array


def vec(x) -> jax.Array:
    """vec(X): the columns of X stacked (Section 3.1); vectors unchanged, pytrees concatenated."""
    leaves = jax.tree.leaves(x)
    return jnp.concatenate([jnp.ravel(jnp.asarray(leaf), order="F") for leaf in leaves])


def _unvec_like(template):
    leaves, treedef = jax.tree.flatten(template)
    shapes = [jnp.shape(leaf) for leaf in leaves]
    sizes = [math.prod(shape) for shape in shapes]

    def unvec(v):
        parts, start = [], 0
        for shape, size in zip(shapes, sizes, strict=True):
            parts.append(jnp.reshape(v[start:start + size], shape, order="F"))
            start += size
        return jax.tree.unflatten(treedef, parts)

    return unvec


@compiled(static_argnames=('f', 'mode'))
def jacobian(f, x, mode: str | None = None) -> jax.Array:
    """J_f(x) in the paper's vec convention: entry (i, j) is d vec(f)_i / d vec(x)_j.

    ``mode`` is ``"fwd"`` (``jax.jacfwd``), ``"rev"`` (``jax.jacrev``) or None: forward mode
    unless the output has fewer entries than the input.
    """
    unvec = _unvec_like(x)

    def flat(v):
        return vec(f(unvec(v)))

    point = vec(x)
    if mode is None:
        out_size = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(jax.eval_shape(f, x)))
        mode = "rev" if out_size < point.size else "fwd"
    if mode not in ("fwd", "rev"):
        raise ValueError(f"mode must be 'fwd', 'rev' or None, got {mode!r}")
    return (jax.jacfwd if mode == "fwd" else jax.jacrev)(flat)(point)


@compiled(static_argnames=('f', 'mode'))
def componentwise(f, x, mode: str | None = None, where=None) -> Condition:
    """kappa_cc(f, x) = ||diag(f(x))^-1 J_f(x) diag(x)||_inf (Lemma 3.3).

    ``where`` (a boolean mask of f's output, vectorised) restricts the norm to those outputs:
    the others must be exact zeros that do not depend on x (padding, as when a causal prefix is
    evaluated at a fixed shape under ``vmap``).

    >>> import jax.numpy as jnp
    >>> float(componentwise(lambda v: v * v, jnp.array([1.0, -3.0])).value)  # kappa_cc(x^2) = 2
    2.0
    """
    J = jacobian(f, x, mode)
    out, point = vec(f(x)), vec(x)
    keep = jnp.ones(out.shape, bool) if where is None else vec(where)
    rows = jnp.sum(jnp.abs(J * point[None, :]), axis=1)
    defined = jnp.all((out != 0) | ~keep) & _differentiable(J, out)
    safe = jnp.where(out != 0, jnp.abs(out), 1)
    value = jnp.where(defined, jnp.max(jnp.where(keep, rows / safe, 0.0)), jnp.inf)
    return Condition(value, defined)


def _differentiable(J, out):
    """A NaN in f(x) or J_f(x) means f is not (numerically) differentiable at x, e.g. a norm
    at 0; autodiff cannot see kinks such as ReLU at 0, which the closed forms flag."""
    return jnp.all(jnp.isfinite(J)) & jnp.all(jnp.isfinite(out))


@compiled(static_argnames=('f', 'mode'))
def mixed(f, x, mode: str | None = None) -> Condition:
    """kappa_c,inf(f, x) = ||J_f(x) diag(x)||_inf / ||f(x)||_inf (Lemma 3.3); needs f(x) != 0."""
    J = jacobian(f, x, mode)
    out, point = vec(f(x)), vec(x)
    numerator = jnp.max(jnp.sum(jnp.abs(J * point[None, :]), axis=1))
    denominator = jnp.max(jnp.abs(out))
    defined = (denominator > 0) & jnp.any(point != 0) & _differentiable(J, out)
    return Condition(jnp.where(defined, numerator / jnp.where(defined, denominator, 1), jnp.inf), defined)


def operator_norm(J, p, q) -> jax.Array:
    """||J||_{p,q} = max_{||v||_p = 1} ||J v||_q for the pairs with a closed form.

    (2, 2): largest singular value; (1, q): the largest q-norm of a column; (p, inf): the
    largest p/(p-1)-norm of a row ((inf, inf): largest absolute row sum).  Other pairs are
    NP-hard in general and are refused.
    """
    def dual(r):
        return 1 if r == jnp.inf else (jnp.inf if r == 1 else r / (r - 1))

    if (p, q) == (2, 2):
        return spectral_norm(J)
    if p == 1:
        return jnp.max(jnp.linalg.norm(J, ord=q, axis=0))
    if q == jnp.inf:
        return jnp.max(jnp.linalg.norm(J, ord=dual(p), axis=1))
    raise ValueError(f"||J||_({p},{q}) has no closed form here; use (2, 2), (1, q) or (p, inf)")


@compiled(static_argnames=('f', 'p', 'q', 'mode'))
def normwise(f, x, p=2, q=2, mode: str | None = None) -> Condition:
    """kappa_p,q(f, x) = ||J_f(x)||_{p,q} ||x||_p / ||f(x)||_q (Lemma 3.3); needs x, f(x) != 0."""
    J = jacobian(f, x, mode)
    out, point = vec(f(x)), vec(x)
    numerator = operator_norm(J, p, q) * jnp.linalg.norm(point, ord=p)
    denominator = jnp.linalg.norm(out, ord=q)
    defined = (denominator > 0) & jnp.any(point != 0) & _differentiable(J, out)
    numerator = jnp.where(defined, numerator, 0)
    return Condition(jnp.where(defined, numerator / jnp.where(defined, denominator, 1), jnp.inf), defined)
