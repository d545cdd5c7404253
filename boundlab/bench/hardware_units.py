"""A matrix unit's FP8 dot products (boundlab's chain against MMA-Sim, when installed)."""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np

from boundlab.rounding import round_to
from boundlab.bench.timing import Timing, mismatches, time_call


def mmasim_wgmma_fp8():
    """MMA-Sim's Hopper wgmma FP8 e4m3 model and torch, or None when they are not installed (its
    float64 FMA model, which builds a C++ extension at import, is stubbed out: never used here)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return None
    import importlib.util
    import sys
    import types

    if importlib.util.find_spec("mmasim") is None:
        return None
    sys.modules.setdefault("mmasim.arithmetic.fma", types.SimpleNamespace(MMA_FMA=None))
    from mmasim.nv_ptx import WGMMA

    return WGMMA("Hopper", "m64n8k32.f32.e4m3.e4m3")


def hardware_benchmark(m: int = 256, n: int = 256, K: int = 4096, repeats: int = 1, seed: int = 0) -> list[Timing]:
    """C = A B (m x K times K x n, e4m3 operands) on Hopper's wgmma FP8 model
    (``boundlab.matrix_units``, the baseline), with promotion every 128, beside MMA-Sim's PyTorch
    model of the same unit (when torch and mmasim are installed; its bit mismatches in the note),
    the recursive Model 4.1 emulation of e4m3 (every product and partial sum rounded) and a plain
    float32 matmul."""
    from boundlab.arithmetic import Emulated
    from boundlab.matrix_units import get_unit, matmul_jit

    unit = get_unit("hopper-wgmma-fp8_e4m3-fp32")
    keys = jax.random.split(jax.random.key(seed), 2)
    A = np.asarray(round_to(jax.random.normal(keys[0], (m, K), jnp.float64) * 8, "fp8_e4m3"))
    B = np.asarray(round_to(jax.random.normal(keys[1], (K, n), jnp.float64) * 8, "fp8_e4m3"))
    note = f"{m} x {K} x {n}, e4m3 operands, on {jax.default_backend()}"
    base, base_first = time_call(lambda: matmul_jit(unit, A, B), repeats)
    D = np.asarray(matmul_jit(unit, A, B))
    rows = [Timing("boundlab hopper-wgmma-fp8_e4m3-fp32", base, base_first, 1.0, note=note)]
    promoted = unit.recipe(promote_every=128)
    best, first = time_call(lambda: matmul_jit(promoted, A, B), repeats)
    rows.append(Timing("boundlab, promotion every 128", best, first, best / base, note=note))
    reference = mmasim_wgmma_fp8()
    if reference is not None:
        import torch

        At, Bt = torch.tensor(A).to(torch.float8_e4m3fn), torch.tensor(B).to(torch.float8_e4m3fn)
        Ct = torch.zeros((m, n), dtype=torch.float32)
        best, first = time_call(lambda: reference(At, Bt, Ct), repeats)
        mismatches = mismatches(D, reference(At, Bt, Ct).double().numpy())
        rows.append(Timing("MMA-Sim (PyTorch, CPU), the same unit", best, first, best / base,
                           note=f"{mismatches} of {m * n} entries differ from boundlab's"))
    else:
        rows.append(Timing("MMA-Sim (PyTorch, CPU), the same unit", float("nan"), float("nan"), None,
                           note="not installed: pip install torch mmasim"))
    model41 = Emulated("fp8_e4m3", unroll=0, kernel="xla")
    product = jax.jit(lambda x, y: model41._product(x, y, None))
    a32, b32 = model41.cast(A), model41.cast(B)
    best, first = time_call(lambda: product(a32, b32), repeats)
    rows.append(Timing("Model 4.1 e4m3, recursive (every product and partial sum rounded)", best, first,
                       best / base, note=note))
    plain = jax.jit(lambda x, y: jnp.matmul(x, y, precision=jax.lax.Precision.HIGHEST))
    a, b = jnp.asarray(A, jnp.float32), jnp.asarray(B, jnp.float32)
    best, first = time_call(lambda: plain(a, b), repeats)
    rows.append(Timing("plain float32 matmul (XLA)", best, first, best / base, note=note))
    return rows
