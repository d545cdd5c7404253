"""Emulated training steps of each recipe against the native float32 step."""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np

from boundlab.bench.timing import Timing, time_call


def training_benchmark(recipes=("float64", "float32", "bf16-mixed", "bf16-autocast", "bf16-pure", "bf16-pure-kahan",
                                "fp16-mixed-scaled",
                                "fp8-gemms"), width: int = 16, layers: int = 2, batch: int = 64,
                       repeats: int = 3) -> list[Timing]:
    """One training step of ``boundlab train --recipes``'s classifier (Adam, a batch of digits)
    under each recipe (``boundlab.training.make_step``: forward, backward and update emulated),
    against the native float32 step (``jax.grad`` and optax's update, jitted) in the same process."""
    import optax

    from flax import nnx

    from boundlab.experiments.recipe_study import recipe_programs, classifier_loss
    from boundlab.models import SequenceClassifier
    from boundlab.training import get_recipe, init_state

    graphdef, params = nnx.split(SequenceClassifier(8, 8, 10, width, 2 * width, layers, rngs=nnx.Rngs(0)), nnx.Param)
    loss64 = classifier_loss(graphdef)
    optimizer = optax.adam(1e-3)
    rng = np.random.default_rng(0)
    batch_data = (jnp.asarray(rng.uniform(0, 1, (batch, 8, 8))), jnp.asarray(rng.integers(0, 10, batch), jnp.int32))
    model32 = SequenceClassifier(8, 8, 10, width, 2 * width, layers, rngs=nnx.Rngs(0), dtype=jnp.float32)
    graphdef32, params32 = nnx.split(model32, nnx.Param)
    loss_fn = classifier_loss(graphdef32)

    @jax.jit
    def native(params, opt_state, batch):
        grads = jax.grad(loss_fn)(params, batch)
        with jax.numpy_dtype_promotion("standard"):
            updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    images32 = (batch_data[0].astype(jnp.float32), batch_data[1])
    with jax.numpy_dtype_promotion("standard"):
        opt32 = optimizer.init(params32)
    base, base_first = time_call(lambda: native(params32, opt32, images32), repeats)
    note = f"d = {width}, L = {layers}, batch {batch}, Adam, on {jax.default_backend()}"
    rows = [Timing("native float32 step (jax.grad + optax, jit)", base, base_first, 1.0, note=note)]
    for name in recipes:
        step = recipe_programs(graphdef, loss64, name, optimizer)[0]
        state = init_state(params, optimizer, name)
        key = jax.random.key(0) if get_recipe(name).update == "stochastic" else None
        best, first = time_call(lambda: step(state, batch_data, key=key)[1].loss, repeats)
        rows.append(Timing(f"recipe {name}", best, first, best / base, note=note))
    return rows
