"""The paper's network (eqs. 1-10) as Flax NNX modules, and a task wrapper for training.

``Block`` holds one layer's weights as ``nnx.Param`` and applies ``boundlab.models.paper.block``:
the same code path as ``forward``, so every product goes through the arithmetic's contraction
(its ``dot_general`` core) and every other operation through its rounded elementwise methods.
``Transformer`` stacks L blocks in an ``nnx.List``; its arithmetic is a call argument with a
default, so the same weights run exactly or emulated without copying them.  ``to_params`` and
``from_params`` convert to and from ``boundlab.models.paper.Params``, so every bound, condition
number and ``analyze`` applies to a trained model.

Tokens are columns (the paper's convention): a sequence is X in R^{d x n}; a batch is (B, d, n)
and is mapped with ``jax.vmap`` (sample b of a stochastic run uses fold_in(key, b)).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from boundlab.runtime import draws
from boundlab.arithmetic import Exact
from boundlab.models.blocks import NORMS
from boundlab.models.paper.network import Params, block, forward


def _normal(rngs: nnx.Rngs, shape, variance: float, dtype):
    return jnp.sqrt(jnp.asarray(variance, dtype)) * draws.normal(rngs.params(), shape, dtype)


def _check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {tuple(NORMS)}, got {norm!r}")


def _default_dtype():
    return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32


class Block(nnx.Module):
    """One pre-norm block T = (Id + M o N) o (Id + A o N) (eq. 6; eq. 9 with ``norm="rms"``).

    Weights (the ``Params`` layout): W_q, W_k, W_v (d, d); A_1 (D, d), b_1 (D,); A_2 (d, D),
    b_2 (d,).  Initialisation (a choice; the paper trains nothing): W_q, W_k, W_v and A_1 with
    N(0, 1/d) entries, A_2 with N(0, 1/D), biases zero.
    """

    def __init__(self, d: int, D: int, *, norm: str = "layer", rngs: nnx.Rngs, dtype=None):
        _check_norm(norm)
        dtype = _default_dtype() if dtype is None else dtype
        self.norm = norm
        self.Wq = nnx.Param(_normal(rngs, (d, d), 1.0 / d, dtype))
        self.Wk = nnx.Param(_normal(rngs, (d, d), 1.0 / d, dtype))
        self.Wv = nnx.Param(_normal(rngs, (d, d), 1.0 / d, dtype))
        self.A1 = nnx.Param(_normal(rngs, (D, d), 1.0 / d, dtype))
        self.b1 = nnx.Param(jnp.zeros((D,), dtype))
        self.A2 = nnx.Param(_normal(rngs, (d, D), 1.0 / D, dtype))
        self.b2 = nnx.Param(jnp.zeros((d,), dtype))

    def params(self) -> Params:
        """This layer's weights as an (unstacked) ``Params`` record."""
        return Params(*(getattr(self, name)[...] for name in Params._fields))

    def __call__(self, X, arithmetic=Exact(), key=None, return_intermediates: bool = False):
        """T(X) for X (d, n) whose entries are already numbers of the arithmetic's format."""
        layer = jax.tree.map(arithmetic.cast, self.params())
        return block(X, layer, arithmetic, self.norm, key, return_intermediates=return_intermediates)


class Transformer(nnx.Module):
    """The depth-L network (7) (``norm="layer"``) or (10) (``norm="rms"``) as an NNX module.

    ``model(X)`` is ``forward(to_params(model), X, arithmetic, norm)``: the layers' weights are
    stacked and the network runs as one ``lax.scan`` over ``transformer.block``, the operands
    rounded into the format on entry (layer l of a stochastic run uses fold_in(key, l)).  It
    is therefore bit for bit the pure function's result wherever both are compiled alike; with
    ``Exact()`` (native accumulation: XLA's summation order) an eager call and a jitted one may
    differ in the last bit, as they do for ``forward`` itself.

    >>> import jax
    >>> from flax import nnx
    >>> from boundlab import Emulated
    >>> model = Transformer(4, 6, 2, rngs=nnx.Rngs(0))
    >>> model(jax.random.normal(jax.random.key(1), (4, 3)), arithmetic=Emulated("bf16")).shape
    (4, 3)
    """

    def __init__(self, d: int, D: int, L: int, *, norm: str = "layer", arithmetic=Exact(), rngs: nnx.Rngs,
                 dtype=None):
        _check_norm(norm)
        for name, value in (("d", d), ("D", D), ("L", L)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.d, self.D, self.L = d, D, L
        self.norm = norm
        self.arithmetic = arithmetic
        self.layers = nnx.List([Block(d, D, norm=norm, rngs=rngs, dtype=dtype) for _ in range(L)])

    def __call__(self, X, *, arithmetic=None, key=None, return_intermediates: bool = False):
        """Apply the network to X (d, n) or a batch (B, d, n); ``arithmetic`` overrides the default.

        ``return_intermediates`` also returns ``transformer.Intermediates`` stacked over layers
        (and over the batch, first, for a batch).
        """
        arithmetic = self.arithmetic if arithmetic is None else arithmetic
        X = jnp.asarray(X)
        if X.ndim == 3:
            keys = None if key is None else jax.vmap(lambda b: jax.random.fold_in(key, b))(jnp.arange(X.shape[0]))
            return jax.vmap(lambda x, k: self(x, arithmetic=arithmetic, key=k,
                                              return_intermediates=return_intermediates))(X, keys)
        if X.ndim != 2 or X.shape[0] != self.d:
            raise ValueError(f"X must be (d, n) or (B, d, n) with d = {self.d}, got shape {tuple(X.shape)}")
        return forward(to_params(self), X, arithmetic, self.norm, key, return_intermediates=return_intermediates)


def to_params(model: Transformer) -> Params:
    """The model's weights stacked over layers: a ``boundlab.models.paper.Params``."""
    layers = [layer.params() for layer in model.layers]
    return Params(*(jnp.stack(values) for values in zip(*layers)))


def from_params(params, *, norm: str = "layer", arithmetic=Exact()) -> Transformer:
    """A ``Transformer`` holding ``params`` (stacked ``Params`` or a mapping with their names)."""
    params = Params(*params) if isinstance(params, Params) else Params(**{k: params[k] for k in Params._fields})
    L, D, d = params.A1.shape
    model = Transformer(d, D, L, norm=norm, arithmetic=arithmetic, rngs=nnx.Rngs(0), dtype=params.A1.dtype)
    for index, layer in enumerate(model.layers):
        for name in Params._fields:
            getattr(layer, name)[...] = getattr(params, name)[index]
    return model


class SequenceClassifier(nnx.Module):
    """A task wrapper: token embedding, the paper's stack, a readout from the last token.

    Input: a batch (B, n, f) of n tokens with f features (for 8x8 digit images: the rows).
    ``tokens`` maps it to X (B, d, n) = E x_t + p_t (learned linear embedding and positions),
    exactly (the arithmetic applies to the stack only: the diagnostics and bounds are about it);
    the class logits are W z_n + b with z_n the last column of the stack's output (the causal
    network's last token sees the whole sequence).
    """

    def __init__(self, features: int, n: int, classes: int, d: int, D: int, L: int, *, norm: str = "layer",
                 arithmetic=Exact(), rngs: nnx.Rngs, dtype=None):
        dtype = _default_dtype() if dtype is None else dtype
        self.embed = nnx.Linear(features, d, rngs=rngs, dtype=dtype, param_dtype=dtype)
        self.position = nnx.Param(_normal(rngs, (d, n), 1.0, dtype))
        self.transformer = Transformer(d, D, L, norm=norm, arithmetic=arithmetic, rngs=rngs, dtype=dtype)
        self.readout = nnx.Linear(d, classes, rngs=rngs, dtype=dtype, param_dtype=dtype)

    def tokens(self, inputs):
        """X = E x_t + p_t with tokens as columns: (B, n, f) -> (B, d, n)."""
        return jnp.swapaxes(self.embed(inputs), -1, -2) + self.position[...]

    def __call__(self, inputs, *, arithmetic=None, key=None):
        Z = self.transformer(self.tokens(inputs), arithmetic=arithmetic, key=key)
        return self.readout(Z[..., -1].astype(self.readout.kernel[...].dtype))


__all__ = ["Block", "SequenceClassifier", "Transformer", "from_params", "to_params"]
