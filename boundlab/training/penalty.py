"""A differentiable bound penalty: log10 of a first-order error bound, for ``loss + beta * penalty``."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from boundlab.arithmetic import Exact
from boundlab.bounds.network import block_factors, theorem_4_30
from boundlab.models.paper.network import Params, forward

KINDS = ("theorem", "layerwise")


def log10_bound(params: Params, X, *, norm: str = "layer", u: float, kind: str = "theorem") -> jax.Array:
    """log10 of the sigma_min-free bound on rho_c(fl(T(X)), T(X)) / u for one input X (d, n).

    ``kind="theorem"``: Theorem 4.30's coefficient prod_l K_l c^L/(c - 1) C with the
    sigma_min-free G_l (the printed G rests on Remark 4.18, false in general, and needs
    sigma_min(W_k^T W_q), whose derivative is unstable); ``kind="layerwise"``: the layer-by-layer
    composition rho_l = K_l (C u + c rho_{l-1}) / u, never larger.  Both come from the exact
    float64 forward; inf when a factor is undefined (a non-generic output, a constant layer-norm
    input), and then the gradient is not finite either.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    _, inter = forward(params, X, Exact(), norm, return_intermediates=True, cast=False)
    factors = jax.vmap(lambda layer, i: block_factors(i.inputs, layer, norm, u, i))(params, inter)
    result = theorem_4_30(params, X, norm=norm, u=u, factors=factors, sigma_min_free=True)
    return result.terms["log10_coefficient" if kind == "theorem" else "log10_layerwise"]


def bound_penalty(model, X, *, u: float | None = None, kind: str = "theorem", part: str | None = None) -> jax.Array:
    """A differentiable penalty: log10 of a first-order error bound, in units of u.

    For the paper's network (an NNX ``boundlab.models.Transformer``): the mean over the batch X
    (B, d, n) (or one input (d, n)) of ``log10_bound`` (Theorem 4.30's coefficient, ``kind``
    "theorem" or "layerwise"; ``u`` required).

    For any other model (a Flax NNX module; ``X`` its batch, or a tuple of its arguments):
    ``log10(C)`` with C the
    coefficient of the first-order bound of the whole output in the 1-norm,

        ||y^ - y||_1 <= C u ||y||_1 + O(u^2),   C = sum_j sum_i |dy_j/dv_i| |v_i| / ||y||_1,

        over every rounding v_i of Model 4.1 in the recursive summation order, one site per dot
        product and sum (``first_order(..., lumped=True)`` with ``Exact()``: the inputs and
        weights taken as they are, not rounded, so the penalty is a smooth function of them;
        C does not depend on the format).  ``part``: a part's name (``boundlab.structure``)
        counts only the roundings of that part's operations.  ``u`` and ``kind`` are unused.

    Differentiable w.r.t. every parameter (``nnx.grad``); under ``jit`` a non-finite value says
    that the bound is undefined (a zero output, an overflow).

    >>> import jax
    >>> from flax import nnx
    >>> from boundlab.models import Transformer
    >>> jax.config.update("jax_enable_x64", True)
    >>> model = Transformer(4, 6, 2, rngs=nnx.Rngs(0))
    >>> X = jax.random.normal(jax.random.key(1), (3, 4, 5))
    >>> bool(bound_penalty(model, X, u=2.0**-8) > 0)
    True
    """
    from boundlab.models.paper.module import Transformer, to_params

    if not isinstance(model, Transformer):
        from boundlab.analysis.part_diagnostics import first_order_coefficient

        return first_order_coefficient(model, *(X if isinstance(X, tuple) else (X,)), part=part)
    if u is None:
        raise ValueError("bound_penalty of the paper's network needs u= (the unit roundoff of Theorem 4.30)")
    X = jnp.asarray(X, jnp.float64)
    X = X[None] if X.ndim == 2 else X
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), to_params(model))
    return jnp.mean(jax.vmap(lambda x: log10_bound(params, x, norm=model.norm, u=u, kind=kind))(X))
