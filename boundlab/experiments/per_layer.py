"""Per-layer measured errors of a network in several arithmetics at once, exact and emulated in
lockstep (no intermediates kept)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from boundlab.accumulation import fold_key
from boundlab.arithmetic import Exact
from boundlab.errors import relative_componentwise, relative_normwise
from boundlab.models.blocks import NORMS, attention, perceptron
from boundlab.models.paper.network import Params, block

EXACT = Exact()


def post_norm_block(X, layer, arithmetic=EXACT, norm: str = "layer", key=None, max_shift: bool = False):
    """Figure 4 b: the normalisation put immediately after, instead of before, the attention,
    T = (Id + M o N) o (Id + N o A), instead of (6): the attention sees the raw residual stream."""
    normalise = NORMS[norm]
    attended = attention(X, layer.Wq, layer.Wk, layer.Wv, arithmetic, fold_key(key, 1), max_shift=max_shift)
    Y = arithmetic.add(X, normalise(attended, arithmetic, fold_key(key, 3)), fold_key(key, 2))
    mlp = perceptron(normalise(Y, arithmetic, fold_key(key, 4)), layer.A1, layer.b1, layer.A2, layer.b2, arithmetic,
                     fold_key(key, 5))
    return arithmetic.add(Y, mlp, fold_key(key, 6))


def layer_errors(params: Params, X, arithmetics, norm: str = "layer", max_shift: bool = False, key=None,
                 post_norm: bool = False, exact=EXACT, format_numbers: bool = False) -> dict:
    """rho_c and rho (normwise, Frobenius) of every layer's output under each arithmetic in
    ``arithmetics`` against the float64 output: {"componentwise": (P, L), "normwise": (P, L)}.

    ``params`` and ``X`` must be format numbers of every arithmetic (round them to the
    narrowest first), so that one exact forward is the reference of all: Model 4.1's operands
    are floating-point numbers.  NaN marks an overflow (exp or the activations leaving the
    range), inf a support mismatch.  Exact and emulated forwards run side by side in one
    ``lax.scan`` and only the errors are kept, so memory does not grow with L.  ``exact`` is the
    reference arithmetic (``Exact()``, XLA's float64 dot products; ``Exact("recursive")``
    follows the emulated order, so that ``Emulated("t53")`` gives exactly zero).
    ``format_numbers=True`` says the caller has rounded ``params`` and ``X`` so that they are
    numbers of every format (``Figure1.narrow``); the cast into each arithmetic, then an identity,
    is skipped wherever its container is float64 (a pass over all the weights per arithmetic and
    a copy of them in the scan: 19 % of the Figure 1 sweep).
    """
    step_block = post_norm_block if post_norm else block
    wide = lambda a: jnp.asarray(a, jnp.float64)  # noqa: E731
    X = wide(X)
    params = jax.tree.map(wide, params)
    shared = [format_numbers and np.dtype(a.dtype) == np.float64 for a in arithmetics]
    narrowed = [None if share else jax.tree.map(a.cast, params) for a, share in zip(arithmetics, shared)]
    for a in arithmetics:  # concrete inputs: check they are format numbers
        for name, value in params._asdict().items():
            if isinstance(value, jax.core.Tracer):
                continue
            if not bool(jnp.all(wide(a.cast(value)) == value)):
                raise ValueError(f"{name} is not made of {a.fmt} numbers; round params and X to the narrowest "
                                 "format first")

    def step(carry, inputs):
        exact_in, emulated_in = carry
        index = inputs[0]
        exact_out = step_block(exact_in, inputs[1], exact, norm, max_shift=max_shift)
        outs, componentwise, normwise = [], [], []
        own = iter(inputs[2:])
        layers = [inputs[1] if share else next(own) for share in shared]
        for a, x, layer in zip(arithmetics, emulated_in, layers):
            layer_key = None if key is None else jax.random.fold_in(key, index)
            out = step_block(x, layer, a, norm, layer_key, max_shift=max_shift)
            outs.append(out)
            componentwise.append(relative_componentwise(wide(out), exact_out))
            normwise.append(relative_normwise(wide(out), exact_out))
        if not arithmetics:
            empty = jnp.zeros((0,), jnp.float64)
            return (exact_out, ()), (empty, empty)
        return (exact_out, tuple(outs)), (jnp.stack(componentwise), jnp.stack(normwise))

    L = params.A1.shape[0]
    start = (X, tuple(X if share else a.cast(X) for a, share in zip(arithmetics, shared)))
    own = [layers for layers in narrowed if layers is not None]
    _, (componentwise, normwise) = lax.scan(step, start, (jnp.arange(L), params, *own))
    return {"componentwise": componentwise.T, "normwise": normwise.T}
