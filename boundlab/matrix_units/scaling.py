"""Real operands into a matrix unit: quantisation into its input format with the recipe's FP8
scales (per tensor or 1 x 128 blocks), and ``product``, the unit's matrix product of real
operands, scaled back in float32."""

from __future__ import annotations

import jax.numpy as jnp

from boundlab.formats import get_format
from boundlab.matrix_units.catalogue import get_unit
from boundlab.matrix_units.chain import check_length, fl32, layout, recipe_dot
from boundlab.matrix_units.unit import MatrixUnit
from boundlab.rounding import round_bits
from boundlab.runtime.x64 import require_x64


def scales(x, fmt, axis: int, unit: MatrixUnit):
    """The float32 scales of x along its contracting ``axis``: one for the whole operand
    (``"tensor"``) or one per block of ``scale_block`` entries along the axis for every other
    index (``"block"``, a size-(blocks) axis in place of ``axis``); s = fl32(max |x| / max_finite),
    1 where the block is zero."""
    magnitude = jnp.abs(x)
    if unit.scaling == "tensor":
        amax = jnp.max(magnitude)
    else:
        K = x.shape[axis]
        blocks = -(-K // unit.scale_block)
        padded = jnp.pad(jnp.moveaxis(magnitude, axis, -1), [(0, 0)] * (x.ndim - 1) + [(0, blocks * unit.scale_block - K)])
        amax = jnp.max(padded.reshape(padded.shape[:-1] + (blocks, unit.scale_block)), axis=-1)
    return jnp.where(amax > 0, fl32(amax / fmt.max_finite), 1.0)


def quantize(unit: MatrixUnit, x, axis: int):
    """(q, s): x as numbers of the unit's input format, fl(x / s) rounded to nearest, and the
    scales s (``scales``; s = 1 without scaling).  ``axis``: x's contracting axis."""
    fmt = get_format(unit.inputs)
    x = jnp.asarray(x, jnp.float64)
    if unit.scaling is None:
        return round_bits(x, fmt, "nearest"), jnp.ones((), jnp.float64)
    s = scales(x, fmt, axis, unit)
    if unit.scaling == "tensor":
        return round_bits(x / s, fmt, "nearest"), s
    K = x.shape[axis]
    expanded = jnp.moveaxis(jnp.repeat(s, unit.scale_block, axis=-1)[..., :K], -1, axis)
    return round_bits(x / expanded, fmt, "nearest"), s


def product(unit: MatrixUnit, A, B, chains=None):
    """(..., m, K) x (..., K, n) -> (..., m, n) as the unit and its recipe compute it from real
    operands: each operand quantised into the unit's input format (``quantize``: with the
    recipe's scales, else rounded to nearest), every entry a chained dot product with promotion
    and split-K, scaled back in float32.  Float64 in, float64 holding float32 (float16) out.
    ``chains``: a function ``(qa, qb, unit) -> D`` that runs the chains of the quantised operands
    qa (..., m, K) and qb (..., n, K) instead of the XLA path, e.g. the Pallas kernel
    ``boundlab.kernels.unit_matmul.product`` (the same
    bits; not with block scales, which stay on this XLA path)."""
    unit = get_unit(unit)
    require_x64(f"the matrix unit {unit.name} (its fused sums are formed in float64)")
    A, B = jnp.asarray(A, jnp.float64), jnp.asarray(B, jnp.float64)
    check_length(unit, A.shape[-1])
    qa, sa = quantize(unit, A, A.ndim - 1)
    qb, sb = quantize(unit, jnp.swapaxes(B, -1, -2), B.ndim - 1)  # (..., n, K): blocks along K
    a, b = qa[..., :, None, :], qb[..., None, :, :]
    zeros = jnp.zeros(jnp.broadcast_shapes(a.shape[:-1], b.shape[:-1]), jnp.float64)
    if unit.scaling == "block":
        scale = fl32(sa[..., :, None, :] * sb[..., None, :, :])  # (..., m, n, blocks)
        return recipe_dot(unit, a, b, zeros, chunk_scale=chunk_scales(unit, scale, A.shape[-1]))
    if chains is not None:
        d = chains(qa, qb, unit)
    else:
        d = recipe_dot(unit, a, b, zeros)
    return d if unit.scaling is None else fl32(d * fl32(sa * sb))


def chunk_scales(unit: MatrixUnit, scale, K: int):
    """The block scales (..., blocks) laid out over the recipe's chunks (slices x chunks per
    slice; a slice's padding chunks get scale 1 and contribute zero)."""
    slices, per_slice, length = layout(unit, K)
    blocks = scale.shape[-1]
    return jnp.pad(scale, [(0, 0)] * (scale.ndim - 1) + [(0, slices * per_slice - blocks)], constant_values=1.0)
