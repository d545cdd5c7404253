"""The Pallas kernels (rounding, rounded matmul, the matrix-unit kernel) against their XLA paths."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from boundlab.bench.timing import Timing, mismatches, time_call


def kernels_benchmark(size: int = 256, fmt: str = "fp16", repeats: int = 3, seed: int = 0,
                      wide: tuple[int, int, int] | None = None,
                      layer: tuple[int, int, int] | None = None) -> list[Timing]:
    """The rounded matmul (every product and partial sum rounded, recursive) of two size x size
    matrices: the XLA path (the baseline) beside the Pallas kernel (``kernel="pallas"``; on the CPU
    Pallas only interprets, so there the row measures the interpreter, not the kernel), and the
    kernel's hardware mode (an MMA per k-block of 32).

    ``wide = (m, K, n)``: the same comparison at a long K (the speed goal on a GPU: the recursive
    kernel >= 5x the XLA path at K = 768, i.e. a ratio <= 0.2).  ``layer = (d, n, D)``: one block
    of the paper's transformer (eq. 6) with every product and partial sum rounded in ``fmt``
    through the kernel, beside the XLA path and the exact float64 block (the goal on a GPU: a
    GPT-2-sized layer, d = 768, n = 1024, D = 3072, in < 0.1 s once compiled)."""
    from boundlab.arithmetic import Emulated
    from boundlab.kernels.rounded_matmul import product

    arithmetic = Emulated(fmt, unroll=0, kernel="xla")
    backend = jax.default_backend()
    where = f"{fmt}, on {backend}" + (" (Pallas interprets on the CPU)" if backend == "cpu" else "")

    def compare(m, k, n, key, goal=None, hardware=True):
        keys = jax.random.split(key, 2)
        a = arithmetic.cast(jax.random.normal(keys[0], (m, k)))
        b = arithmetic.cast(jax.random.normal(keys[1], (k, n)))
        note = f"{m} x {k} x {n}, {where}"
        xla = jax.jit(lambda x, y: arithmetic._product(x, y, None))
        base, base_first = time_call(lambda: xla(a, b), repeats)
        pallas = jax.jit(lambda x, y: product(x, y, arithmetic))
        best, first = time_call(lambda: pallas(a, b), repeats)  # the first call compiles
        same = mismatches(np.asarray(pallas(a, b)), np.asarray(xla(a, b))) == 0  # signed zeros too
        rows = [Timing(f"XLA path (Emulated._product), K = {k}", base, base_first, 1.0, note=note),
                Timing(f"Pallas kernel, recursive, K = {k}", best, first, best / base, goal_ratio=goal,
                       note=note + ("; bit for bit the XLA path's" if same else "; NOT bit for bit the XLA path's"))]
        if hardware:
            blocked = dataclasses.replace(arithmetic, accumulation="blocked", block_size=32)
            mma = jax.jit(lambda x, y: product(x, y, blocked, hardware=True))
            best, first = time_call(lambda: mma(a, b), repeats)
            rows.append(Timing(f"Pallas kernel, hardware (MMA per k-block of 32), K = {k}", best, first,
                               best / base, note=note))
        return rows

    keys = jax.random.split(jax.random.key(seed), 3)
    rows = compare(size, size, size, keys[0])
    if wide is not None:
        rows += compare(*wide, keys[1], goal=0.2, hardware=False)
    if layer is not None:
        rows += _layer_rows(*layer, fmt, keys[2], repeats)
    return rows


def _layer_rows(d: int, n: int, D: int, fmt: str, key, repeats: int) -> list[Timing]:
    """One block of the paper's transformer (d x n tokens, perceptron width D): exact float64, the
    XLA emulation and the Pallas kernel (the format's every product and partial sum rounded)."""
    from boundlab.arithmetic import Emulated, Exact
    from boundlab.models.paper import forward, init

    params, X = init(key, "figure1", d=d, n=n, D=D, L=1)
    note = f"d = {d}, n = {n}, D = {D}, L = 1, {fmt}, on {jax.default_backend()}"
    exact = jax.jit(lambda p, x: forward(p, x, Exact()))
    base, base_first = time_call(lambda: exact(params, X), repeats)
    rows = [Timing("one block, exact float64", base, base_first, None, note=note)]
    for kernel in ("xla", "pallas"):
        emulated = Emulated(fmt, kernel=kernel)
        f = jax.jit(lambda p, x, e=emulated: forward(p, x, e))
        best, first = time_call(lambda: f(params, X), repeats)
        rows.append(Timing(f"one block, every partial sum rounded ({kernel})", best, first, None, note=note,
                           goal_seconds=0.1 if kernel == "pallas" else None, goal_steady=True))
    return rows
