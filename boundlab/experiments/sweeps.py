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

from boundlab.experiments.run_folder import checkpoint


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


class ProgressBar:
    """Progress on stderr: a rich bar on a terminal; plain log lines otherwise (a pipe or a log
    file gets "description: k/N (s)" at about every tenth of the work, never blank lines).
    ``status(text)`` says what is happening now (e.g. compiling) without advancing."""

    def __init__(self, total, description):
        import sys
        import time

        self._total, self._done, self._description = total, 0, description or "sweep"
        self._start, self._clock = time.perf_counter(), time.perf_counter
        self._next_report = max(1, total // 10)
        self._terminal = sys.stderr.isatty()
        self._progress = None
        if self._terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), transient=True)
            self._progress.start()
            self._task = self._progress.add_task(self._description, total=total)
        else:
            self._log(f"{self._description}: 0/{total}")

    def _log(self, text):
        import sys

        print(f"{text} ({self._clock() - self._start:.0f} s)", file=sys.stderr, flush=True)

    def status(self, text):
        if self._progress is not None:
            self._progress.update(self._task, description=f"{self._description}: {text}")
        else:
            self._log(f"{self._description}: {text}")

    def update(self, advance, description=None):
        checkpoint()
        self._done += advance
        if description is not None:
            self._description = description
        if self._progress is not None:
            self._progress.update(self._task, advance=advance, description=self._description)
        elif self._done >= self._next_report or self._done >= self._total:
            self._log(f"{self._description}: {self._done}/{self._total}")
            self._next_report = self._done + max(1, self._total // 10)

    def close(self):
        if self._progress is not None:
            self._progress.stop()
