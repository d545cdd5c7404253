"""What the kernels share: backend choice and the interpret-mode default."""

from __future__ import annotations

import jax


def on_accelerator() -> bool:
    """True on a GPU or TPU backend, where Pallas kernels compile; on the CPU they only interpret."""
    return jax.default_backend() in ("gpu", "cuda", "rocm", "tpu")


def interpret_default(interpret):
    """``interpret=None`` means: compile on an accelerator, interpret on the CPU."""
    return (not on_accelerator()) if interpret is None else bool(interpret)


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple
