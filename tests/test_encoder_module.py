"""boundlab.models.encoder.module: the encoder family as an NNX module, bit for bit the pure
function, trainable with optax and diagnosed inside the training step."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from test_encoder import IDS, VALID, random_params

from boundlab import Emulated, Exact
from boundlab.analysis import model_diagnostics
from boundlab.models import Encoder
from boundlab.models.encoder.network import EncoderConfig, encode_batch

CONFIG = EncoderConfig(d=8, heads=2, ffn=12, layers=2)


@pytest.mark.parametrize("arithmetic", [Exact(), Emulated("bf16")], ids=["exact", "bf16"])
def test_the_module_is_the_pure_function_bit_for_bit(arithmetic):
    params = random_params(CONFIG)
    model = Encoder(CONFIG, params)
    np.testing.assert_array_equal(model(IDS, VALID, arithmetic=arithmetic),
                                  encode_batch(params, IDS, VALID, CONFIG, arithmetic))


@pytest.mark.fast_compile
def test_fine_tuning_with_diagnostics_in_the_step():
    model = Encoder(CONFIG, vocab=20, positions=12, rngs=nnx.Rngs(0), dtype=jnp.float64)
    optimizer = nnx.Optimizer(model, optax.sgd(1e-2), wrt=nnx.Param)
    target = jnp.ones((2, CONFIG.d))

    @nnx.jit
    def step(model, optimizer):
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(IDS, VALID) - target) ** 2))(model)
        optimizer.update(model, grads)
        return loss, model_diagnostics(model, IDS, VALID, formats=("bf16",), first_order=False, condition=False)

    losses = []
    for _ in range(3):
        loss, result = step(model, optimizer)
        losses.append(float(loss))
    assert losses[-1] < losses[0]
    kinds = [(p.layer, p.kind) for p in result.structure.parts if p.layer is not None]
    assert kinds == [(l, k) for l in (1, 2) for k in ("attention", "layer_norm", "perceptron", "layer_norm")]
    assert bool(result.flags["finite"])
    assert all(np.isfinite(float(p.baek["kappa_softmax"])) for n, p in result.parts.items() if "attention" in n)


def test_missing_initialisation_arguments_are_named():
    with pytest.raises(ValueError, match="vocab=, positions= and rngs="):
        Encoder(CONFIG)
    with pytest.raises(ValueError, match="lacks 'W1'"):
        params = random_params(CONFIG)
        del params["layers"]["W1"]
        Encoder(CONFIG, params)
