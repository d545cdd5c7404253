"""``product(a, bt, unit)``: C = A B on a matrix unit (``boundlab.matrix_units``) as a Pallas
kernel, the accumulator of each output tile held over the K loop.

Each program owns a ``block_m x block_n`` tile of C and runs the unit's chain on it: per step the
group of L products of the tile (a (block_m, block_n, L) block), aligned to the largest exponent
with the accumulator, truncated to F bits, added exactly and written back by the unit's rounding
(the step functions of ``boundlab.matrix_units``, so the arithmetic is the XLA path's own), and
with a recipe the promotion every N_C products into a float32 total and the split-K slices, in
the XLA path's order.  So the result is bit for bit ``boundlab.matrix_units`` (tested in
interpret mode).  Per-block scales (``scaling="block"``) dequantise inside the chain and are not
in the kernel: ``boundlab.matrix_units.product`` keeps those on the XLA path.

Operands: A (m, K) and B transposed (n, K), numbers of the unit's input format held in float64
(the unit's fused sums are exact there; a GPU runs float64, a TPU does not: this kernel is for
GPUs and the interpreter).  M and N are padded with zeros (sliced off); K is padded to the
recipe's layout, the padding masked out of every step as in the XLA path.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from boundlab.formats import get_format
from boundlab.kernels.common import compiler_params, interpret_default, round_up
from boundlab.matrix_units.chain import STEPS, fl32, layout, split
from boundlab.matrix_units.unit import MatrixUnit

BLOCK = 16


def _kernel(unit: MatrixUnit, k: int, a_ref, bt_ref, o_ref):
    step = STEPS[unit.kind]
    e_in = get_format(unit.inputs).emin
    recipe = unit.promote_every is not None or unit.split_k > 1
    slices, per_slice, length = layout(unit, k)
    L = min(length if recipe else k, unit.group)
    zeros = jnp.zeros(o_ref.shape, jnp.float64)

    def chain(start, steps, c):
        def body(j, c):
            lo = start + j * L
            a, b = a_ref[:, pl.ds(lo, L)], bt_ref[:, pl.ds(lo, L)]
            present = lo + lax.iota(jnp.int32, L) < k
            e_a, e_b = split(a, e_in)[1], split(b, e_in)[1]
            d = step(unit, a[:, None, :], b[None, :, :], e_a[:, None, :], e_b[None, :, :], c, present)
            return jnp.where(lo < k, d, c)  # a chunk past K (split-K padding) adds nothing

        return lax.fori_loop(0, steps, body, c)

    if not recipe:
        o_ref[...] = chain(0, -(-k // L), zeros)
        return
    steps = length // L

    def fold_chunks(first_chunk, count, total):
        return lax.fori_loop(0, count, lambda i, t: fl32(t + chain((first_chunk + i) * length, steps, zeros)), total)

    if slices == 1:
        o_ref[...] = fold_chunks(0, per_slice, zeros)
        return

    def slice_total(s):
        if per_slice == 1:
            return chain(s * length, steps, zeros)
        return fold_chunks(s * per_slice, per_slice, zeros)

    o_ref[...] = lax.fori_loop(0, slices, lambda s, t: fl32(t + slice_total(s)), zeros)


def _padded_length(unit: MatrixUnit, k: int) -> int:
    if unit.promote_every is None and unit.split_k == 1:
        L = min(k, unit.group)
        return -(-k // L) * L
    slices, per_slice, length = layout(unit, k)
    return slices * per_slice * length


def _pallas_product(a, bt, unit, block_m, block_n, interpret):
    m, k = a.shape
    n = bt.shape[0]
    bm = min(block_m, max(8, pl.next_power_of_2(m)))
    bn = min(block_n, max(8, pl.next_power_of_2(n)))
    mp, np_, kp = round_up(m, bm), round_up(n, bn), _padded_length(unit, k)
    a = jnp.pad(a, ((0, mp - m), (0, kp - k)))
    bt = jnp.pad(bt, ((0, np_ - n), (0, kp - k)))
    out = pl.pallas_call(
        functools.partial(_kernel, unit, k),
        out_shape=jax.ShapeDtypeStruct((mp, np_), jnp.float64),
        grid=(mp // bm, np_ // bn),
        in_specs=[pl.BlockSpec((bm, kp), lambda i, j: (i, 0)), pl.BlockSpec((bn, kp), lambda i, j: (j, 0))],
        out_specs=pl.BlockSpec((bm, bn), lambda i, j: (i, j)),
        interpret=interpret,
        compiler_params=compiler_params(),
        name=f"unit_matmul_{unit.kind.replace('-', '_').lower()}",
    )(a, bt)
    return out[:m, :n]


def product(a, bt, unit: MatrixUnit, *, block_m: int = BLOCK, block_n: int = BLOCK, interpret: bool | None = None):
    """(..., m, K) x (..., n, K) -> (..., m, n): every entry the unit's dot product of a row of a
    and a row of bt, with the recipe's promotion and split-K (not its scales: the operands are
    already numbers of the unit's input format, in float64)."""
    if unit.scaling == "block":
        raise ValueError(f"{unit}: block scales dequantise inside the chain, which the kernel does not do; "
                         f"use the XLA path (kernel='xla')")
    if a.shape[:-2] != bt.shape[:-2] or a.shape[-1] != bt.shape[-1]:
        raise ValueError(f"unit matmul: needs (..., m, K) and (..., n, K) with equal batch shapes, got {a.shape}, "
                         f"{bt.shape}")
    a, bt = jnp.asarray(a, jnp.float64), jnp.asarray(bt, jnp.float64)
    interpret = interpret_default(interpret)
    batch = a.shape[:-2]
    if batch:
        flat = jax.vmap(lambda x, y: _pallas_product(x, y, unit, block_m, block_n, interpret))(
            a.reshape((-1,) + a.shape[-2:]), bt.reshape((-1,) + bt.shape[-2:]))
        return flat.reshape(batch + flat.shape[-2:])
    return _pallas_product(a, bt, unit, block_m, block_n, interpret)
