"""``matmul(a, b, arithmetic)``: C = A B with every product and partial sum rounded, as a Pallas
kernel with the accumulator held in registers over the K loop.

On an accelerator the XLA emulation of Model 4.1 (``Emulated._product``) pays for each rounded
partial sum with a pass over the whole M x N accumulator in memory; here each program owns a
``block_m x block_n`` tile of C, loads its rows of A and columns of B once, and runs the K loop
on the tile in registers.  The loop body is the reference's own: the arithmetic's ``_reduce``
(``boundlab.accumulation``), so the order and every rounding are those of ``Emulated`` and the
result is bit for bit the XLA path's:

* ``recursive``: fl(fl(a_i1 b_1j) + fl(a_i2 b_2j)) ... in index order (Lemma 4.3); the product is
  rounded by bit operations before it is added, so no backend can contract it into an FMA;
* ``blocked``: the unrounded products of each k-block of ``block_size`` summed exactly (float64),
  each block sum rounded once, the block results added recursively.

``hardware=True`` is the separately named mode of the seed paper's authors' Triton kernel: each
k-block's product through the MMA unit (``jnp.dot(..., precision=HIGHEST,
preferred_element_type=container)``: true float32 on GPUs, never TF32), the accumulator rounded
after each block.  Inside a block the order and the width of the accumulation are the
hardware's, so it is not bit-identical to anything; its tests use a tolerance derived from u.

Tiling: a grid over (M / block_m, N / block_n); M and N are padded with exact zeros (sliced off),
K is padded with zeros to whole k-blocks and a multiple of 16, but the exact modes' loops stop at
the true K, so no term is added that the reference would not add (the hardware mode's last MMA
takes the padding's 0 * 0 products: Triton's dot wants power-of-two tiles of at least 16).
Batch dimensions go through ``vmap``.  Differentiation: a ``custom_vjp`` whose backward pass is
the VJP of the reference (the straight-through convention of ``round_to``), so gradients equal
the XLA path's bit for bit.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from boundlab.kernels.common import compiler_params, interpret_default, round_up
from boundlab.rounding import bit_operations_only

BLOCK = 32


def _loop_arithmetic(arithmetic):
    """The arithmetic as the kernel body uses it: loops (short code), no kernel dispatch."""
    return dataclasses.replace(arithmetic, unroll=0, kernel="xla")


def _kernel(arithmetic, k, hardware, a_ref, b_ref, o_ref):
    with bit_operations_only():  # integer rounding only inside the kernel (the same bits)
        _kernel_body(_loop_arithmetic(arithmetic), k, hardware, a_ref, b_ref, o_ref)


def _kernel_body(arithmetic, k, hardware, a_ref, b_ref, o_ref):
    if not hardware:
        def term(j):
            return a_ref[:, pl.ds(j, 1)] * b_ref[pl.ds(j, 1), :]

        o_ref[...] = arithmetic._reduce(term, k, None, products=True)
        return
    size = arithmetic.block_size
    acc = None
    # the authors' kernel: an MMA per k-block, the accumulator rounded.  K is padded with zeros to
    # whole blocks (Triton's dot wants power-of-two shapes): the last block's extra terms are 0 * 0.
    for start in range(0, k, size):
        stop = start + size
        block = jnp.dot(a_ref[:, start:stop], b_ref[start:stop, :], precision=lax.Precision.HIGHEST,
                        preferred_element_type=o_ref.dtype)
        acc = arithmetic._round_acc(block if acc is None else acc + block, None)
    if arithmetic.accumulator is not None and arithmetic.accumulator != arithmetic.fmt:
        acc = arithmetic.round(acc)
    o_ref[...] = acc


def _pallas_product(a, b, arithmetic, hardware, block_m, block_n, interpret):
    """(m, k) x (k, n) -> (m, n) for operands that are format numbers in the container."""
    m, k = a.shape
    n = b.shape[1]
    smallest = 16 if hardware else 8  # Triton's dot: tiles of at least 16 x 16 x 16
    bm = min(block_m, max(smallest, pl.next_power_of_2(m)))
    bn = min(block_n, max(smallest, pl.next_power_of_2(n)))
    mp, np_ = round_up(m, bm), round_up(n, bn)
    # whole k-blocks (blocked and hardware modes read up to the end of the last block) and a
    # multiple of 16
    kp = round_up(round_up(k, arithmetic.block_size), 16)
    a = jnp.pad(a, ((0, mp - m), (0, kp - k)))
    b = jnp.pad(b, ((0, kp - k), (0, np_ - n)))
    out = pl.pallas_call(
        functools.partial(_kernel, arithmetic, k, hardware),
        out_shape=jax.ShapeDtypeStruct((mp, np_), a.dtype),
        grid=(mp // bm, np_ // bn),
        in_specs=[pl.BlockSpec((bm, kp), lambda i, j: (i, 0)), pl.BlockSpec((kp, bn), lambda i, j: (0, j))],
        out_specs=pl.BlockSpec((bm, bn), lambda i, j: (i, j)),
        interpret=interpret,
        compiler_params=compiler_params(),
        name="rounded_matmul_hardware" if hardware else f"rounded_matmul_{arithmetic.accumulation}",
    )(a, b)
    return out[:m, :n]


def reference_product(a, b, arithmetic):
    """The XLA path (``Emulated._product``): the reference the kernel is tested against."""
    return dataclasses.replace(arithmetic, kernel="xla")._product(a, b, None)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5, 6))
def _product(a, b, arithmetic, hardware, block_m, block_n, interpret):
    batch = a.shape[:-2]
    if batch:
        flat_a = a.reshape((-1,) + a.shape[-2:])
        flat_b = b.reshape((-1,) + b.shape[-2:])
        out = jax.vmap(lambda x, y: _pallas_product(x, y, arithmetic, hardware, block_m, block_n, interpret))(
            flat_a, flat_b)
        return out.reshape(batch + out.shape[-2:])
    return _pallas_product(a, b, arithmetic, hardware, block_m, block_n, interpret)


def _product_fwd(a, b, arithmetic, hardware, block_m, block_n, interpret):
    return _product(a, b, arithmetic, hardware, block_m, block_n, interpret), (a, b)


def _product_bwd(arithmetic, hardware, block_m, block_n, interpret, residuals, g):
    a, b = residuals
    _, vjp = jax.vjp(lambda x, y: reference_product(x, y, arithmetic), a, b)
    return vjp(g)


_product.defvjp(_product_fwd, _product_bwd)


def product(a, b, arithmetic, *, hardware: bool = False, block_m: int = BLOCK, block_n: int = BLOCK,
            interpret: bool | None = None):
    """(..., m, k) x (..., k, n) -> (..., m, n) on operands that are already format numbers in
    the arithmetic's container (what ``Emulated._product`` receives); see the module docstring."""
    if arithmetic.accumulation not in ("recursive", "blocked"):
        raise ValueError(f"the Pallas matmul implements recursive and blocked accumulation, not "
                         f"{arithmetic.accumulation!r} (use kernel='xla')")
    if arithmetic.mode == "stochastic":
        raise ValueError("the Pallas matmul rounds deterministically; stochastic rounding uses kernel='xla'")
    if a.shape[:-2] != b.shape[:-2] or a.shape[-1] != b.shape[-2]:
        raise ValueError(f"matmul: needs (..., m, k) @ (..., k, n) with equal batch shapes, got {a.shape} @ {b.shape}")
    interpret = interpret_default(interpret)
    size = arithmetic.block_size
    if hardware and not interpret and (size < 16 or size & (size - 1)):
        raise ValueError(f"hardware=True compiles an MMA per k-block, which Triton needs as a power of two >= 16; "
                         f"got block_size={size} (interpret=True takes any size)")
    # the caller's arithmetic (its unroll too) for the backward pass: gradients equal the XLA path's
    return _product(a, b, dataclasses.replace(arithmetic, kernel="xla"), bool(hardware), int(block_m), int(block_n),
                    interpret)


def matmul(a, b, arithmetic, *, hardware: bool = False, block_m: int = BLOCK, block_n: int = BLOCK,
           interpret: bool | None = None):
    """C = A B in ``arithmetic`` (an ``Emulated``), the operands first rounded into its format
    (as ``dot_general`` does): bit for bit ``arithmetic.matmul(arithmetic.cast(a),
    arithmetic.cast(b))`` for recursive and blocked accumulation; ``hardware=True`` for the
    MMA-per-block mode (not bit-identical; see the module docstring).  ``interpret``: None
    compiles on GPU/TPU and interprets on the CPU.  Differentiable."""
    return product(arithmetic.cast(a), arithmetic.cast(b), arithmetic, hardware=hardware, block_m=block_m,
                   block_n=block_n, interpret=interpret)
