"""The encoder family (``boundlab.models.encoder.network``: BERT/MiniLM and GPT-2 style) as a Flax NNX module.

``Encoder(config, params)`` holds the weights of ``encoder.encode`` as ``nnx.Param``s (the
layers stacked on a leading axis, as in the pure function's ``params``; float64 when
``jax_enable_x64`` is on, as ``Exact()`` needs, else float32), and ``encoder(ids,
valid, arithmetic=..., key=...)`` *is* ``encode_batch(encoder.params(), ids, valid, config,
arithmetic, key)``: the same code, so the module is bit for bit the pure function, exactly and
emulated.  It can therefore be fine-tuned with optax (``nnx.Optimizer``) and diagnosed in the
loop (``model_diagnostics(encoder, ids, valid)``: the layers are found in the named scopes
"layer1", "layer2", ...).  ``Encoder.from_minilm(model)`` takes the weights of
``boundlab.models.minilm.load()``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from boundlab.runtime import draws
from boundlab.arithmetic import Exact
from boundlab.models.encoder.network import EncoderConfig, check_params, encode_batch

EMBEDDINGS = ("word", "position", "type", "ln_gamma", "ln_beta")
LAYERS = ("Wq", "bq", "Wk", "bk", "Wv", "bv", "Wo", "bo", "ln1_gamma", "ln1_beta", "W1", "b1", "W2", "b2", "ln2_gamma",
          "ln2_beta")


def init_params(config: EncoderConfig, vocab: int, positions: int, key, dtype=jnp.float32) -> dict:
    """Random weights in the layout of ``encoder.encode`` (BERT's initialisation: N(0, 0.02^2)
    matrices and embeddings, zero biases, layer-norm scales 1 and shifts 0)."""
    L, d, F = config.layers, config.d, config.ffn
    keys = iter(jax.random.split(key, 16))

    def normal(*shape):
        return 0.02 * draws.normal(next(keys), shape, dtype)

    embeddings = {"word": normal(vocab, d), "position": normal(positions, d), "type": normal(2, d),
                  "ln_gamma": jnp.ones((d,), dtype), "ln_beta": jnp.zeros((d,), dtype)}
    layers = {"Wq": normal(L, d, d), "Wk": normal(L, d, d), "Wv": normal(L, d, d), "Wo": normal(L, d, d),
              "W1": normal(L, F, d), "W2": normal(L, d, F)}
    layers.update({name: jnp.zeros((L, d), dtype) for name in ("bq", "bk", "bv", "bo", "b2", "ln1_beta", "ln2_beta")})
    layers.update({"b1": jnp.zeros((L, F), dtype), "ln1_gamma": jnp.ones((L, d), dtype),
                   "ln2_gamma": jnp.ones((L, d), dtype)})
    return {"embeddings": embeddings, "layers": layers}


class Encoder(nnx.Module):
    """``encode_batch`` with its weights as ``nnx.Param``s (see the module docstring).

    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> from boundlab.models.encoder.network import EncoderConfig
    >>> config = EncoderConfig(d=8, heads=2, ffn=16, layers=2)
    >>> model = Encoder(config, vocab=20, positions=6, rngs=nnx.Rngs(0))
    >>> ids = jnp.array([[1, 5, 7, 0]]); valid = ids > 0
    >>> model(ids, valid).shape
    (1, 8)
    """

    def __init__(self, config: EncoderConfig, params: dict | None = None, *, vocab: int | None = None,
                 positions: int | None = None, rngs: nnx.Rngs | None = None, dtype=None):
        dtype = (jnp.float64 if jax.config.jax_enable_x64 else jnp.float32) if dtype is None else dtype
        if params is None:
            if vocab is None or positions is None or rngs is None:
                raise ValueError("Encoder without params needs vocab=, positions= and rngs= to initialise them")
            params = init_params(config, vocab, positions, rngs.params(), dtype)
        params = jax.tree.map(lambda a: jnp.asarray(a, dtype), params)
        check_params(params, config)
        self.config = config
        self.embeddings = nnx.Dict({name: nnx.Param(params["embeddings"][name]) for name in EMBEDDINGS})
        self.layers = nnx.Dict({name: nnx.Param(params["layers"][name]) for name in LAYERS})

    def params(self) -> dict:
        """The weights as ``encoder.encode`` takes them."""
        return {"embeddings": {name: self.embeddings[name][...] for name in EMBEDDINGS},
                "layers": {name: self.layers[name][...] for name in LAYERS}}

    def __call__(self, ids, valid, *, arithmetic=Exact(), key=None, types=None, return_layers: bool = False):
        """Pooled embeddings (B, d) of token ids and validity masks (B, n) (``encode_batch``)."""
        return encode_batch(self.params(), ids, valid, self.config, arithmetic, key, types, return_layers)

    @classmethod
    def from_minilm(cls, model, dtype=None) -> "Encoder":
        """The encoder of a ``boundlab.models.minilm.Model`` (its config and weights; float32 in
        the file, widened exactly to float64 when x64 is on)."""
        return cls(model.config, jax.tree.map(np.asarray, model.params), dtype=dtype)
