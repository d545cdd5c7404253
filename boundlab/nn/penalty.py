"""A differentiable bound penalty: log10 of a first-order error bound, for ``loss + beta * penalty``."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from boundlab.arithmetic import Exact
from boundlab.bounds.network import block_factors, theorem_4_30
from boundlab.transformer.network import Params, forward

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


def bound_penalty(model, X, *, u: float, kind: str = "theorem") -> jax.Array:
    """Mean over the batch X (B, d, n) (or one input (d, n)) of ``log10_bound`` for an NNX
    ``boundlab.nn.Transformer``; differentiable w.r.t. every parameter (``nnx.grad``).

    >>> import jax
    >>> from flax import nnx
    >>> from boundlab.nn import Transformer
    >>> jax.config.update("jax_enable_x64", True)
    >>> model = Transformer(4, 6, 2, rngs=nnx.Rngs(0))
    >>> X = jax.random.normal(jax.random.key(1), (3, 4, 5))
    >>> bool(bound_penalty(model, X, u=2.0**-8) > 0)
    True
    """
    from boundlab.nn.modules import to_params

    X = jnp.asarray(X, jnp.float64)
    X = X[None] if X.ndim == 2 else X
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), to_params(model))
    return jnp.mean(jax.vmap(lambda x: log10_bound(params, x, norm=model.norm, u=u, kind=kind))(X))
