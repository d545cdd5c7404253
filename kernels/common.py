"""What the kernels share: backend choice and the interpret-mode default."""

from __future__ import annotations

import jax


def on_accelerator() -> bool:
    """True on a GPU or TPU backend, where Pallas kernels compile; on the CPU they only interpret."""
    return jax.default_backend() in ("gpu", "cuda", "rocm", "tpu")


def interpret_default(interpret):
    """``interpret=None`` means: compile on an accelerator, interpret on the CPU."""
    return (not on_accelerator()) if interpret is None else bool(interpret)


def compiler_params():
    """Pallas's compiler parameters: the kernels are written for Triton's programming model (one
    program per output tile, the tile in registers), so for GPUs they ask for the Triton backend
    explicitly (jax >= 0.8 lowers ``pallas_call`` to Mosaic GPU unless told otherwise, whose
    block-shape rules they do not follow).  Interpret mode ignores it; None on TPUs (Mosaic TPU).
    Chosen by the default backend, not at lowering, so that a program exported for CUDA from a
    CPU host (``jax.export``) lowers the same kernels a GPU run compiles.  jax 0.11 deprecates
    Pallas's Triton backend (a DeprecationWarning, seen on an H200 with jax 0.11.2); moving the
    kernels to Mosaic GPU (``plgpu.kernel``, its own block-shape and memory rules) is open."""
    if jax.default_backend() == "tpu":
        return None
    from jax.experimental.pallas import triton as pltriton

    return pltriton.CompilerParams()


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple
