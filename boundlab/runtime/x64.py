"""Checks for float64 support: JAX silently computes in float32 unless x64 is enabled."""

from __future__ import annotations

import jax

X64_HINT = (
    "enable 64-bit JAX before creating arrays: jax.config.update('jax_enable_x64', True) "
    "or set the environment variable JAX_ENABLE_X64=1"
)


def x64_enabled() -> bool:
    """Whether JAX keeps float64 arrays as float64 (``jax_enable_x64``)."""
    return bool(jax.config.jax_enable_x64)


def require_x64(what: str) -> None:
    """Raise a RuntimeError naming ``what`` when float64 is needed but x64 is off."""
    if not x64_enabled():
        raise RuntimeError(f"{what} needs float64, but jax_enable_x64 is off; {X64_HINT}")
