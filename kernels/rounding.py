"""``round(x, fmt, mode)``: the bit-level rounding of ``boundlab.rounding`` as a Pallas kernel.

The kernel body is the reference itself (``boundlab.rounding.round_bit_pattern``, integer operations
on the bit pattern), applied to blocks of the flattened array: one pass over memory, fused, on
every backend.  Stochastic rounding takes its random bits as an array of the container's width
(``random_bits``), so it is portable (Pallas's own ``stochastic_round`` is TPU v5+ only).  The
array is padded to a multiple of the block with zeros, which round to zero and are dropped.
Straight-through derivative (``custom_vjp``), as ``round_to``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl

from boundlab.formats import Format, get_format
from boundlab.rounding import MODES, round_bit_pattern, bit_operations_only
from boundlab.kernels.common import compiler_params, interpret_default, round_up

BLOCK = 1024  # elements per program: a power of two, as Triton wants


def _kernel(fmt, mode, x_ref, *refs):
    with bit_operations_only():  # the integer algorithm inside the kernel (the same bits)
        _kernel_body(fmt, mode, x_ref, *refs)


def _kernel_body(fmt, mode, x_ref, *refs):
    if mode == "stochastic":
        bits_ref, o_ref = refs
        o_ref[...] = round_bit_pattern(x_ref[...], fmt, mode, bits_ref[...])
    else:
        (o_ref,) = refs
        o_ref[...] = round_bit_pattern(x_ref[...], fmt, mode, None)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _round(x, random_bits, fmt, mode, block, interpret):
    shape, size = x.shape, x.size
    padded = round_up(max(size, 1), block)
    flat = jnp.pad(x.reshape(-1), (0, padded - size))
    operands = [flat]
    if mode == "stochastic":
        operands.append(jnp.pad(random_bits.reshape(-1), (0, padded - size)))
    spec = pl.BlockSpec((block,), lambda i: (i,))
    out = pl.pallas_call(
        functools.partial(_kernel, fmt, mode),
        out_shape=jax.ShapeDtypeStruct(flat.shape, flat.dtype),
        grid=(padded // block,),
        in_specs=[spec] * len(operands),
        out_specs=spec,
        interpret=interpret,
        compiler_params=compiler_params(),
        name=f"round_{fmt.name or 't' + str(fmt.precision)}_{mode}",
    )(*operands)
    return out[:size].reshape(shape)


def _round_fwd(x, random_bits, fmt, mode, block, interpret):
    return _round(x, random_bits, fmt, mode, block, interpret), random_bits


def _round_bwd(fmt, mode, block, interpret, random_bits, g):
    return g, None if random_bits is None else jnp.zeros_like(random_bits)


_round.defvjp(_round_fwd, _round_bwd)


def round(x, fmt: Format | str, mode: str = "nearest", random_bits=None, *, block: int = BLOCK,
          interpret: bool | None = None) -> jax.Array:
    """Every element of ``x`` (float32 or float64) rounded to ``fmt`` in ``mode``, bit for bit
    ``boundlab.rounding.round_bits(x, fmt, mode, random_bits)``.

    ``random_bits``: for ``"stochastic"``, unsigned integers of the container's width and ``x``'s
    shape (``boundlab.rounding.random_bits_for``).  ``interpret``: None compiles on GPU/TPU and
    interprets on the CPU.  Differentiable (derivative 1, straight-through).
    """
    fmt = get_format(fmt)
    if mode not in MODES:
        raise ValueError(f"unknown rounding mode {mode!r}; use one of {MODES}")
    x = jnp.asarray(x)
    if np.dtype(x.dtype) not in (np.float32, np.float64):
        raise TypeError(f"kernels.round takes float32 or float64 arrays, got {x.dtype}")
    if (mode == "stochastic") != (random_bits is not None):
        raise ValueError("random_bits is required by mode='stochastic' and used by no other mode")
    if random_bits is not None and random_bits.shape != x.shape:
        raise ValueError(f"random_bits must have x's shape {x.shape}, got {random_bits.shape}")
    return _round(x, random_bits, fmt, mode, int(block), interpret_default(interpret))
