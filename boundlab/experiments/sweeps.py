"""Sweeps over random initialisations: jit + vmap, chunks with a progress bar, and the
initialisation axis sharded over every device through ``jax.sharding``.

Determinism: initialisation i always gets ``jax.random.fold_in(key, i)``, so a result does not
depend on the chunk size or on the number of devices (each chunk is padded to a multiple of
the device count and the padding is dropped).  Several hosts: start every process with
``jax.distributed.initialize()``; ``jax.devices()`` then lists the devices of all hosts and the
same code shards the initialisation axis over all of them (each host must run the same sweep).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from boundlab.output.progress import ProgressBar
from boundlab.output.run_folder import checkpoint


def _mesh(devices=None) -> Mesh:
    devices = np.asarray(jax.devices() if devices is None else devices)
    return Mesh(devices, ("inits",))


def sweep(function: Callable, key, count: int, chunk: int = 1000, progress: bool = True, description: str = "",
          devices=None):
    """Evaluate ``function(key_i, i)`` for i = 0 .. count - 1, key_i = fold_in(key, i), and
    stack the results (NumPy arrays with a leading axis of length ``count``).

    ``function`` maps one PRNG key and the index (an int32 scalar, e.g. to pick a grid point) to
    a pytree of arrays; it is vmapped, jitted once and run chunk by chunk, with the chunk sharded
    over ``devices`` (default: all).
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    mesh = _mesh(devices)
    n_devices = mesh.devices.size
    chunk = max(n_devices, math.ceil(min(chunk, count) / n_devices) * n_devices)
    sharding = NamedSharding(mesh, PartitionSpec("inits"))
    batched = jax.jit(jax.vmap(lambda i: function(jax.random.fold_in(key, i), i)), in_shardings=sharding,
                      out_shardings=sharding)
    indices = np.arange(count)
    results = []
    bar = ProgressBar(count, description) if progress else None
    for start in range(0, count, chunk):
        if bar is not None and start == 0:
            bar.status("compiling (the first chunk waits for XLA)")
        index = indices[start:start + chunk]
        padded = np.concatenate([index, np.full(chunk - len(index), index[-1])])
        out = batched(jax.device_put(jnp.asarray(padded, dtype=jnp.int32), sharding))
        checkpoint()  # a Ctrl-C or SIGTERM that Python swallowed (run_folder) stops the sweep here
        results.append(jax.tree.map(lambda a, m=len(index): np.asarray(a)[:m], out))
        if bar is not None:
            bar.update(len(index), description or "sweep")
    if bar is not None:
        bar.close()
    return jax.tree.map(lambda *parts: np.concatenate(parts), *results)
