"""The decoder family (``boundlab.models.decoder.network``) as a Flax NNX module.

``Decoder(config, params)`` (or ``Decoder(config, rngs=...)``) holds the weights of
``network.forward`` as ``nnx.Param``s (the layers stacked on a leading axis, as the pure function
takes them; float64 when ``jax_enable_x64`` is on, as ``Exact()`` needs, else float32), and
``decoder(ids, arithmetic=..., key=...)`` *is* ``forward_batch(decoder.params(), ids, config,
arithmetic, key)``: the same code, so the module is bit for bit the pure function, exactly,
emulated and natively.  ``decoder.generate(prompt, steps, ...)`` is ``generation.generate``.
``Decoder.from_model(boundlab.models.load("smollm2"))`` takes a loaded model's weights.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from boundlab.arithmetic import Exact
from boundlab.models.decoder.generation import CacheFormat, generate
from boundlab.models.decoder.network import DecoderConfig, check_params, forward_batch, init_params


class Decoder(nnx.Module):
    """``forward_batch`` with its weights as ``nnx.Param``s (see the module docstring).

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> config = DecoderConfig(d=8, heads=2, kv_heads=1, ffn=16, layers=2, vocab=11)
    >>> model = Decoder(config, rngs=nnx.Rngs(0))
    >>> model(jnp.array([[1, 5, 7]])).shape
    (1, 11, 3)
    """

    def __init__(self, config: DecoderConfig, params: dict | None = None, *, rngs: nnx.Rngs | None = None,
                 dtype=None, unroll_layers: bool = False):
        dtype = (jnp.float64 if jax.config.jax_enable_x64 else jnp.float32) if dtype is None else dtype
        if params is None:
            if rngs is None:
                raise ValueError("Decoder without params needs rngs= to initialise them")
            params = init_params(config, rngs.params(), dtype)
        params = jax.tree.map(lambda a: jnp.asarray(a, dtype), params)
        check_params(params, config)
        self.config = config
        self.unroll_layers = unroll_layers  # the default of __call__: layers as sites of their own (model_diagnostics)
        self.weights = nnx.Dict({name: nnx.Param(value) for name, value in params.items() if name != "layers"})
        self.layers = nnx.Dict({name: nnx.Param(value) for name, value in params["layers"].items()})

    def params(self) -> dict:
        """The weights as ``network.forward`` takes them."""
        return {**{name: self.weights[name][...] for name in self.weights},
                "layers": {name: self.layers[name][...] for name in self.layers}}

    def __call__(self, ids, *, arithmetic=Exact(), key=None, return_layers: bool = False,
                 unroll_layers: bool | None = None):
        """Logits (B, V, n) of id sequences (B, n) (``network.forward_batch``); ``unroll_layers``
        defaults to the module's (``Decoder(..., unroll_layers=True)``: each layer's parts found
        and diagnosed on their own by ``model_diagnostics``)."""
        unroll = self.unroll_layers if unroll_layers is None else unroll_layers
        return forward_batch(self.params(), ids, self.config, arithmetic, key, return_layers, unroll)

    def generate(self, prompt, steps: int, *, arithmetic=Exact(), key=None, temperature: float = 0.0,
                 sample_key=None, cache_format: CacheFormat = CacheFormat(), return_logits: bool = False):
        """``steps`` tokens after the prompt ids (n0,) (``generation.generate``)."""
        return generate(self.params(), prompt, steps, self.config, arithmetic, key, temperature, sample_key,
                        cache_format, return_logits)

    @classmethod
    def from_model(cls, model, dtype=None, unroll_layers: bool = False) -> "Decoder":
        """The decoder of a loaded model (``boundlab.models.load("smollm2")``)."""
        return cls(model.config, jax.tree.map(np.asarray, model.params), dtype=dtype, unroll_layers=unroll_layers)
