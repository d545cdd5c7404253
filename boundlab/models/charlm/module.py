"""The character-level model (``boundlab.models.charlm.network``) as a Flax NNX module.

``CharLM(config, vocab, rngs=...)`` (or ``CharLM(config, params=...)``) holds the weights of
``network.forward`` as ``nnx.Param``s, and ``model(ids, eps)`` *is* ``forward`` mapped over a
batch of id sequences (B, n): the same code, so the module is bit for bit the pure function,
natively and under ``boundlab.emulate``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from boundlab.models.charlm.network import CharLMConfig, forward, init_params


class CharLM(nnx.Module):
    """``forward`` with its weights as ``nnx.Param``s (see the module docstring).

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> config = CharLMConfig(d=8, heads=2, ffn=16, layers=1, context=6)
    >>> model = CharLM(config, vocab=12, rngs=nnx.Rngs(0), dtype=jnp.float32)
    >>> model(jnp.array([[1, 5, 7, 0]]), jnp.full((config.norms,), 1e-5, jnp.float32)).shape
    (1, 12, 4)
    """

    def __init__(self, config: CharLMConfig, vocab: int | None = None, params: dict | None = None, *,
                 rngs: nnx.Rngs | None = None, dtype=None):
        dtype = (jnp.float64 if jax.config.jax_enable_x64 else jnp.float32) if dtype is None else dtype
        if params is None:
            if vocab is None or rngs is None:
                raise ValueError("CharLM without params needs vocab= and rngs= to initialise them")
            params = init_params(config, vocab, rngs.params(), dtype)
        self.config = config
        self.weights = nnx.Dict({name: nnx.Param(jnp.asarray(value, dtype)) for name, value in params.items()
                                 if name != "layers"})
        self.layers = nnx.Dict({name: nnx.Param(jnp.asarray(value, dtype)) for name, value in params["layers"].items()})

    def params(self) -> dict:
        """The weights as ``network.forward`` takes them."""
        return {**{name: self.weights[name][...] for name in self.weights},
                "layers": {name: self.layers[name][...] for name in self.layers}}

    def __call__(self, ids, eps):
        """Logits (B, V, n) of id sequences (B, n) with the layer norms' epsilons ``eps`` (norms,)."""
        params = self.params()
        return jax.vmap(lambda sequence: forward(params, sequence, eps, self.config))(ids)
