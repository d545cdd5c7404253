"""A model's weights in a plain ``.npz`` file: ``save_state(model, path)``, ``load_state(model, path)``.

The arrays of ``nnx.state(model)`` are stored under their pytree paths (``jax.tree_util.keystr``,
e.g. ``['blocks'][0]['attn']['query']['kernel'].value``); loading puts them back into a model
built by the same code, checking that every path is there with its shape.  No pickle: the file
is read with ``allow_pickle=False``.  This is what ``boundlab analyze --model`` reads.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def save_state(model, path) -> None:
    """Write the arrays of ``nnx.state(model)`` to ``path`` (.npz)."""
    leaves = jax.tree_util.tree_flatten_with_path(nnx.state(model))[0]
    np.savez(path, **{jax.tree_util.keystr(p): np.asarray(leaf) for p, leaf in leaves})


def load_state(model, path) -> None:
    """Put the arrays saved by ``save_state`` back into ``model`` (built by the same code).

    Raises ValueError naming the first path that is missing, unexpected, or of another shape."""
    state = nnx.state(model)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(state)
    with np.load(path, allow_pickle=False) as data:
        saved = {name: data[name] for name in data.files}
    names = [jax.tree_util.keystr(p) for p, _ in leaves]
    for name, (_, leaf) in zip(names, leaves):
        if name not in saved:
            raise ValueError(f"{path} has no array {name}: was it saved from this model?")
        if saved[name].shape != tuple(jnp.shape(leaf)):
            raise ValueError(f"{path}: {name} has shape {saved[name].shape}, the model's is {tuple(jnp.shape(leaf))}")
    extra = sorted(set(saved) - set(names))
    if extra:
        raise ValueError(f"{path} holds {extra[0]}, which the model does not have")
    values = [jnp.asarray(saved[name], jnp.asarray(leaf).dtype) for name, (_, leaf) in zip(names, leaves)]
    nnx.update(model, jax.tree_util.tree_unflatten(treedef, values))
