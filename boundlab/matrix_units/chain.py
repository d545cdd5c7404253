"""The fused chain of a matrix unit, bit for bit (the package docstring states the model): one
instruction's step (T-FDPA, TR-FDPA, GTR-FDPA), the chain of steps through the accumulator,
the recipe's promotion and split-K (``recipe_dot``), ``dot``, ``promoted_dot`` and ``matmul``.
The pieces the Pallas kernel ``boundlab.kernels.unit_matmul`` runs (``STEPS``, ``split``,
``layout``, ``fl32``) are public for it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from boundlab.formats import get_format
from boundlab.matrix_units.catalogue import get_unit
from boundlab.matrix_units.unit import ABSENT, MatrixUnit


def pow2(e):
    """2^e in float64 for an int array e, exactly (subnormal powers and 0 below, inf above),
    built from the bit pattern: jnp.ldexp multiplies by 2.0 ** e, a pow that a GPU's libm (the
    Pallas kernels' Triton) need not compute exactly."""
    e = e.astype(jnp.int64)
    normal = binade_scale(e)
    subnormal = lax.bitcast_convert_type(jnp.int64(1) << jnp.clip(e + 1074, 0, 51), jnp.float64)
    return jnp.where(e > 1023, jnp.inf, jnp.where(e >= -1022, normal, jnp.where(e >= -1074, subnormal, 0.0)))


def split(x, e_subnormal: int):
    """(s, e) with x = s 2^e, 1 <= |s| < 2 for normal x, e = e_subnormal for subnormal and zero x."""
    mantissa, exponent = jnp.frexp(x)
    s, e = mantissa * 2.0, exponent - 1
    sub = e < e_subnormal
    s = jnp.where(sub, s * pow2(jnp.where(sub, e - e_subnormal, 0)), s)
    e = jnp.where(sub | (s == 0), e_subnormal, e)
    return s, e


def round_half_even(x):
    """jnp.round(x) (to the nearest integer, ties to even) from trunc and exact float operations
    (x - trunc(x) and r / 2 are exact), because Pallas's Triton lowering has no round primitive."""
    r = jnp.trunc(x)
    frac = jnp.abs(x - r)
    odd = r != 2.0 * jnp.trunc(r * 0.5)
    away = (frac > 0.5) | ((frac == 0.5) & odd)
    return jnp.where(away, r + jnp.sign(x), r)


def write_back(total, e_max, rule: str):
    """rho(total 2^e_max), as a float64 holding the float32 or float16 result."""
    value = total * pow2(e_max)
    if rule == "RNE-FP32":
        return value.astype(jnp.float32).astype(jnp.float64)
    bits, e_subnormal, dtype = {"RZ-FP32": (23, -126, jnp.float32), "RZ-E8M13": (13, -126, jnp.float32),
                                "RNE-FP16": (10, -14, jnp.float16)}[rule]
    s, e = split(value, e_subnormal)
    scaled = s * 2.0**bits
    s = (round_half_even(scaled) if rule == "RNE-FP16" else jnp.trunc(scaled)) * 2.0**-bits
    # exact now, or beyond the range: the conversion gives inf, as the hardware model does
    return (s * pow2(e)).astype(dtype).astype(jnp.float64)


def binade_scale(e):
    """2^e for an int array e, built from its exponent bits (far cheaper than ``jnp.ldexp``);
    clamped to float64's normal range, which only ever multiplies a zero or a term that the
    truncation removes anyway."""
    e = jnp.clip(e, -1022, 1023).astype(jnp.int64)
    return lax.bitcast_convert_type((e + 1023) << 52, jnp.float64)


def t_step(unit: MatrixUnit, a, b, e_a, e_b, c, present):
    """One T-FDPA step: a, b (..., L) with their exponents e_a, e_b (``split``), c (...) -> d (...).
    A term is trunc(a_i b_i 2^(F - E)) 2^(E - F): the product is exact in float64, and scaling by
    2^(F - E) is exact, so this is the aligned, truncated significand of the module docstring."""
    p = a * b
    e = jnp.where(p == 0, unit.e_zero, e_a + e_b)
    if present is not None:
        e = jnp.where(present, e, ABSENT)
    e_c = split(c, get_format(unit.accumulator).emin)[1]
    e_c = jnp.where(c == 0, unit.e_zero, e_c)
    e_max = jnp.maximum(jnp.max(e, axis=-1), e_c)
    scale = binade_scale(unit.F - e_max)
    total = jnp.sum(jnp.trunc(p * scale[..., None]), axis=-1) + jnp.trunc(c * scale)
    return write_back(total * 2.0**-unit.F, e_max, unit.write_back) + 0.0  # -0 becomes +0


def tr_step(unit: MatrixUnit, a, b, e_a, e_b, c, present):
    """One TR-FDPA step (AMD CDNA3; MMA-Sim's ``tr_fdpa``): a, b (..., L), c (...) -> d (...)."""
    p = a * b
    e = e_a + e_b
    too_big = e + (jnp.abs(p) >= binade_scale(e + 1)).astype(e.dtype) >= 128  # beyond float32's range
    p = jnp.where(too_big, p * jnp.inf, p)
    e = jnp.where(p == 0, -999, e)  # a zero product takes no part
    if present is not None:
        e = jnp.where(present, e, ABSENT)
        p = jnp.where(present, p, 0.0)
    e_dot = jnp.max(e, axis=-1)
    s_dot = jnp.sum(jnp.trunc(p * binade_scale(unit.F - e_dot)[..., None]), axis=-1) * 2.0**-unit.F
    s_c, e_c = split(c, -126)
    e_max = jnp.maximum(e_dot, e_c)
    s_dot = jnp.floor(s_dot * pow2(e_dot - e_max + unit.F2 + 1)) * 2.0 ** -(unit.F2 + 1)
    s_c = jnp.floor(s_c * pow2(e_c - e_max + unit.F)) * 2.0**-unit.F
    s_sum, e_sum = split((s_dot + s_c) * pow2(e_max), -126)
    s_sum = jnp.floor(s_sum * 2.0**unit.F2) * 2.0**-unit.F2
    return write_back(s_sum, e_sum, unit.write_back)


def gtr_step(unit: MatrixUnit, a, b, e_a, e_b, c, present):
    """One GTR-FDPA step (AMD CDNA3's FP8 MFMA; MMA-Sim's ``gtr_fdpa``): the even- and
    odd-indexed products are fused separately (each against its own largest exponent, truncated
    to F bits), the two sums floored to F bits against the larger of their exponents and added;
    then as TR-FDPA, except that c is dropped when it lies more than F + 1 binades below."""
    p = a * b
    e = jnp.where(p == 0, -999, e_a + e_b)  # a zero product takes no part
    if present is not None:
        e = jnp.where(present, e, ABSENT)
        p = jnp.where(present, p, 0.0)

    # the halves by a parity mask, not strided slices (Pallas's Triton lowering has no slice): an
    # entry of the other half takes no part in the max (ABSENT) and adds +0 to the exact
    # fixed-point sum, which starts from +0 anyway
    odd_index = lax.broadcasted_iota(jnp.int32, p.shape, p.ndim - 1) % 2 == 1

    def fused(half):
        mine = odd_index == half
        e_top = jnp.max(jnp.where(mine, e, ABSENT), axis=-1)
        terms = jnp.where(mine, jnp.trunc(p * binade_scale(unit.F - e_top)[..., None]), 0.0)
        return jnp.sum(terms, axis=-1) * 2.0**-unit.F, e_top

    s_even, e_even = fused(False)
    s_odd, e_odd = fused(True)
    e_dot = jnp.maximum(e_even, e_odd)
    s_dot = jnp.floor(s_even * pow2(e_even - e_dot + unit.F)) * 2.0**-unit.F
    s_dot = s_dot + jnp.floor(s_odd * pow2(e_odd - e_dot + unit.F)) * 2.0**-unit.F
    s_c, e_c = split(c, -126)
    e_max = jnp.maximum(e_dot, e_c)
    s_dot = jnp.floor(s_dot * pow2(e_dot - e_max + unit.F2 + 1)) * 2.0 ** -(unit.F2 + 1)
    s_c = jnp.floor(s_c * pow2(e_c - e_max + unit.F)) * 2.0**-unit.F
    s_c = jnp.where(e_c < e_max - unit.F - 1, 0.0, s_c)
    s_sum, e_sum = split((s_dot + s_c) * pow2(e_max), -126)
    s_sum = jnp.floor(s_sum * 2.0**unit.F2) * 2.0**-unit.F2
    return write_back(s_sum, e_sum, unit.write_back)


STEPS = {"T-FDPA": t_step, "TR-FDPA": tr_step, "GTR-FDPA": gtr_step}


def chain(unit: MatrixUnit, a, b, c, present=None):
    """The chain of fused steps over the last axis of a, b (..., K) from the accumulator c (...).
    ``present`` (broadcastable to a's shape) masks entries that take no part (the tail of a
    shorter last group or chunk); a step with no entry present leaves the accumulator alone."""
    K = a.shape[-1]
    L = min(K, unit.group)
    steps = -(-K // L)
    pad = steps * L - K
    if pad:
        widths = [(0, 0)] * (a.ndim - 1) + [(0, pad)]
        a, b = jnp.pad(a, widths), jnp.pad(b, widths)
        tail = jnp.arange(steps * L) < K
        present = tail if present is None else jnp.pad(jnp.broadcast_to(present, a.shape[:-1] + (K,)), widths) & tail
    e_in = get_format(unit.inputs).emin
    e_a, e_b = split(a, e_in)[1], split(b, e_in)[1]  # once, on the operands, not per output entry

    def by_step(x):
        return jnp.moveaxis(x.reshape(x.shape[:-1] + (steps, L)), -2, 0)

    step = STEPS[unit.kind]
    operands = (by_step(a), by_step(b), by_step(e_a), by_step(e_b))
    if present is None:
        def body(carry, xs):
            return step(unit, *xs, carry, None), None

        result, _ = lax.scan(body, c, operands)
        return result

    def masked_body(carry, xs):
        d = step(unit, *xs[:4], carry, xs[4])
        return jnp.where(jnp.any(xs[4], axis=-1), d, carry), None

    result, _ = lax.scan(masked_body, c, operands + (by_step(jnp.broadcast_to(present, a.shape)),))
    return result


def fl32(x):
    """x rounded to nearest into float32 (x a float64 sum or product of float32 numbers: one
    rounding to 53 bits and one to 24 is innocuous, 53 >= 2 * 24 + 2), held in float64."""
    return x.astype(jnp.float32).astype(jnp.float64)


def fold32(start, parts):
    """start + parts[..., 0] + parts[..., 1] + ..., every addition rounded into float32."""
    total, _ = lax.scan(lambda t, p: (fl32(t + p), None), start, jnp.moveaxis(parts, -1, 0))
    return total


def layout(unit: MatrixUnit, K: int):
    """(slices, chunks per slice, chunk length) of the recipe for a dot product of length K."""
    L = min(K, unit.group)
    slice_len = -(-(-(-K // unit.split_k)) // L) * L  # ceil(K / S), up to a multiple of L
    if unit.promote_every is not None:
        slice_len = -(-slice_len // unit.promote_every) * unit.promote_every
        return unit.split_k, slice_len // unit.promote_every, unit.promote_every
    return unit.split_k, 1, slice_len


def check_length(unit: MatrixUnit, K: int):
    if K == 0:
        raise ValueError(f"{unit.name}: a dot product of length K = 0 runs no instruction; K must be >= 1 "
                         f"(the unit fuses {unit.group} products a step)")


def recipe_dot(unit: MatrixUnit, a, b, c, chunk_scale=None):
    """``dot`` with the recipe's promotion and split-K; ``chunk_scale`` (..., chunks) multiplies
    each chunk's result in float32 before it is added (block-scaled FP8)."""
    K = a.shape[-1]
    if unit.promote_every is None and unit.split_k == 1 and chunk_scale is None:
        return chain(unit, a, b, c)
    slices, per_slice, length = layout(unit, K)
    chunks = slices * per_slice
    widths = [(0, 0)] * (a.ndim - 1) + [(0, chunks * length - K)]
    a, b = jnp.pad(a, widths), jnp.pad(b, widths)
    present = (jnp.arange(chunks * length) < K).reshape(chunks, length)
    a = a.reshape(a.shape[:-1] + (chunks, length))
    b = b.reshape(b.shape[:-1] + (chunks, length))
    zeros = jnp.zeros(jnp.broadcast_shapes(a.shape[:-1], b.shape[:-1]), jnp.float64)
    parts = chain(unit.hardware, a, b, zeros, present)  # (..., chunks)
    if chunk_scale is not None:
        parts = fl32(parts * jnp.broadcast_to(chunk_scale, parts.shape))
    if slices == 1:
        return fold32(c, parts)
    parts = parts.reshape(parts.shape[:-1] + (slices, per_slice))
    slice_totals = fold32(jnp.zeros(parts.shape[:-1], jnp.float64), parts) if per_slice > 1 else parts[..., 0]
    return fold32(c, slice_totals)


def dot(unit: MatrixUnit, a, b, c=None):
    """The unit's dot product of a and b (..., K) added to c (..., default 0): the chain of
    ceil(K / group) fused steps through the accumulator, with the unit's recipe (promotion,
    split-K; scaling applies to ``matmul``, whose operands are real numbers).  Inputs are taken
    as numbers of the unit's formats (round them first: ``boundlab.round_to``); the result is a
    float64 array holding float32 (or float16) values."""
    unit = get_unit(unit)
    a, b = jnp.asarray(a, jnp.float64), jnp.asarray(b, jnp.float64)
    check_length(unit, a.shape[-1])
    shape = jnp.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    c = jnp.broadcast_to(jnp.zeros(shape, jnp.float64) if c is None else jnp.asarray(c, jnp.float64), shape)
    return recipe_dot(unit, a, b, c)


def promoted_dot(unit: MatrixUnit, a, b, c=None, every: int = 128):
    """DeepSeek-V3's promotion (arXiv 2412.19437, Section 3.3.2): ``dot`` with
    ``unit.recipe(promote_every=every)``: the unit accumulates ``every`` products (N_C = 128
    there) from zero, and each such partial result is added into a float32 total with round to
    nearest (on the CUDA cores); c starts the total."""
    return dot(get_unit(unit).recipe(promote_every=every), a, b, c)


def matmul(unit: MatrixUnit, A, B, C=None):
    """D = A B + C (A: (m, K), B: (K, n), C: (m, n)) as the unit computes it, every entry a
    chained dot product (``dot``, with the recipe's promotion and split-K).  A and B must be
    numbers of the unit's input format (``product`` quantises real operands)."""
    A, B = jnp.asarray(A, jnp.float64), jnp.asarray(B, jnp.float64)
    C = jnp.zeros((A.shape[0], B.shape[1]), jnp.float64) if C is None else C
    return dot(unit, A[:, None, :], B.T[None, :, :], C)


matmul_jit = jax.jit(matmul, static_argnums=0)
