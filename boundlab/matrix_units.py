"""The arithmetic of GPU matrix-multiply units (tensor cores, matrix cores), bit for bit.

A matrix unit does not round each product and partial sum (Model 4.1).  Per instruction it
multiplies a group of L products exactly, aligns them and the accumulator c to the largest
exponent among them, truncates each aligned term to F fractional bits, adds them exactly in a
fused adder, and writes the sum back with its own rounding rho; a dot product of length K chains
ceil(K / L) such steps through the accumulator (the T-FDPA model of MMA-Sim: Zhang et al.,
"MMA-Sim", arXiv 2511.10909, whose PyTorch reference ``mmasim`` 2.1.1 the fixtures in
``tests/data/mma_fixtures.npz`` come from; ``tests/data/make_mma_fixtures.py`` writes them).
In exact terms, one step computes

    d = rho( sum_{i <= L} trunc_F(a_i b_i / 2^E) 2^E + trunc_F(c / 2^E) 2^E ),
    E = max(exponents of a_i b_i and c; a zero term counts as e_zero),

with trunc_F(x) = sign(x) floor(|x| 2^F) 2^-F, and rho one of: round toward zero into float32
(``"RZ-FP32"``), toward zero with 13 fractional bits and float32's exponent range (``"RZ-E8M13"``,
the FP8 path of Ada and Hopper's wgmma: DeepSeek-V3's "about 14 bits"), round to nearest into
float16 (``"RNE-FP16"``), or into float32 (``"RNE-FP32"``).

AMD's CDNA3 matrix cores (MFMA) fuse in two levels (MMA-Sim's TR-FDPA, ``kind="TR-FDPA"``): the
products alone are aligned to their largest exponent e_dot and truncated to F bits and summed;
that sum, floored to F2 + 1 fractional bits, and c, floored to F bits, are aligned to
max(e_dot, e_c) and added; the sum is normalised, floored to F2 bits and rounded to nearest
into float32.  A zero product takes no part in the alignment; a product beyond float32's range
is infinite.

On top of the unit, what software does with it (``MatrixUnit.recipe``):

* promotion every N_C products (DeepSeek-V3, arXiv 2412.19437, Section 3.3.2: N_C = 128): the
  unit accumulates each chunk of N_C products from zero and the chunk's result is added into a
  float32 total with round to nearest (on the CUDA cores); c starts the total;
* split-K into S slices (each a multiple of L products, the last one shorter): each slice is
  computed on its own (promoted inside when asked), and the S results are added into c in
  float32 with round to nearest, in slice order;
* FP8 scaling of the operands (``scaling="tensor"``: one float32 scale per operand,
  s = fl32(max |X| / max_finite); ``"block"``: one per row of A and column of B and per block of
  ``scale_block`` = 128 entries along K, DeepSeek-V3's 1 x 128 tiles): X is stored as
  fl_fmt(X / s), and the result is scaled back in float32 (fl32(fl32(s_a s_b) P), per chunk for
  blocks, where promotion every ``scale_block`` products does the dequantisation).

Values are held in float64 (each input a number of its format, as everywhere in boundlab), where
every step above is exact: a product of two significands of <= 24 bits, shifted and truncated to
F <= 25 fractional bits, is an integer multiple of 2^-F below 2^2, and a group of at most 33 of
them sums without rounding.  Vectorised, jit- and vmap-friendly; the chain is a ``lax.scan``.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from jax import lax

from boundlab._x64 import require_x64
from boundlab.formats import get_format
from boundlab.rounding import round_bits

WRITE_BACKS = ("RZ-FP32", "RZ-E8M13", "RNE-FP16", "RNE-FP32")
KINDS = ("T-FDPA", "TR-FDPA", "GTR-FDPA")
SCALINGS = (None, "tensor", "block")
_FP32 = get_format("fp32")
_ABSENT = -(2**20)  # the exponent of a term that takes no part in a step


@dataclasses.dataclass(frozen=True)
class MatrixUnit:
    """One matrix-multiply instruction's arithmetic (see the module docstring), and the recipe
    that software runs on it.

    Hardware: ``inputs``, the format of A and B (``fp16``, ``bf16``, ``tf32``, ``fp8_e4m3``,
    ``fp8_e5m2``); ``accumulator``: ``fp32`` or ``fp16`` (C and D); ``F``: fractional bits kept
    after alignment; ``group``: products fused per step (L); ``write_back``: rho; ``e_zero``: the
    exponent a zero term is given when the largest exponent is found; ``kind``: ``"T-FDPA"``
    (NVIDIA) or ``"TR-FDPA"`` (AMD CDNA3, with ``F2``); ``source``: where the parameters come from.

    Recipe (``unit.recipe(...)``): ``promote_every`` (N_C, a multiple of ``group``), ``split_k``
    (slices), ``scaling`` (None, ``"tensor"`` or ``"block"``) and ``scale_block``.

    Hashable: usable as ``Emulated(fmt, accumulation=unit)`` and as a static jit argument.
    """

    name: str
    inputs: str
    accumulator: str
    F: int
    group: int
    write_back: str
    e_zero: int
    source: str = "MMA-Sim (arXiv 2511.10909), mmasim 2.1.1: nv_ptx/sim.py"
    kind: str = "T-FDPA"
    F2: int = 0
    promote_every: int | None = None
    split_k: int = 1
    scaling: str | None = None
    scale_block: int = 128

    def __post_init__(self):
        if self.write_back not in WRITE_BACKS:
            raise ValueError(f"write_back must be one of {WRITE_BACKS}, got {self.write_back!r}")
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if not 1 <= self.F <= 30 or self.group < 1 or (self.kind != "T-FDPA" and not self.F <= self.F2 <= 40):
            raise ValueError(f"F must be in [1, 30] (F2 in [F, 40] for TR-FDPA) and group >= 1, got F = {self.F}, "
                             f"F2 = {self.F2}, group = {self.group}")
        get_format(self.inputs)  # a clear error for an unknown format
        if self.accumulator not in ("fp32", "fp16"):
            raise ValueError(f"accumulator must be fp32 or fp16, got {self.accumulator!r}")
        self._check_recipe()

    def _check_recipe(self):
        multiples = ", ".join(str(self.group * m) for m in (1, 2, 4, 8))
        if self.scaling not in SCALINGS:
            raise ValueError(f"{self.name}: scaling must be one of {SCALINGS}, got {self.scaling!r}")
        if not isinstance(self.scale_block, int) or self.scale_block < 1 or self.scale_block % self.group:
            raise ValueError(f"{self.name}: scale_block must be a positive multiple of the group length "
                             f"{self.group} ({multiples}, ...), got {self.scale_block!r}")
        every = self.promote_every
        if every is not None and (not isinstance(every, int) or isinstance(every, bool) or every < 1
                                  or every % self.group):
            raise ValueError(f"{self.name}: promote_every must be a positive multiple of the group length "
                             f"{self.group} ({multiples}, ...) or None, got {every!r}")
        if self.scaling == "block" and every not in (None, self.scale_block):
            raise ValueError(f"{self.name}: block scaling dequantises at each promotion, so promote_every must "
                             f"equal scale_block = {self.scale_block} (or be None), got {every}")
        if not isinstance(self.split_k, int) or isinstance(self.split_k, bool) or self.split_k < 1:
            raise ValueError(f"{self.name}: split_k must be a positive int, got {self.split_k!r}")

    def recipe(self, promote_every: int | None = None, split_k: int = 1, scaling: str | None = None,
               scale_block: int = 128) -> "MatrixUnit":
        """This unit with a software recipe: promotion every ``promote_every`` products into a
        float32 total, ``split_k`` slices, FP8 ``scaling`` of the operands (``"block"`` sets
        ``promote_every = scale_block`` when it is None)."""
        if scaling == "block" and promote_every is None:
            promote_every = scale_block
        return dataclasses.replace(self, promote_every=promote_every, split_k=split_k, scaling=scaling,
                                   scale_block=scale_block)

    @property
    def hardware(self) -> "MatrixUnit":
        """The unit without a recipe."""
        return dataclasses.replace(self, promote_every=None, split_k=1, scaling=None, scale_block=128)

    def __str__(self) -> str:
        parts = [f"promote every {self.promote_every}"] if self.promote_every else []
        parts += [f"split-K {self.split_k}"] if self.split_k > 1 else []
        parts += [f"{self.scaling} scaling" + (f" ({self.scale_block})" if self.scaling == "block" else "")] \
            if self.scaling else []
        return self.name + (f" ({', '.join(parts)})" if parts else "")


def _pow2(e):
    """2^e in float64 for an int array e, exactly (subnormal powers and 0 below, inf above),
    built from the bit pattern: jnp.ldexp multiplies by 2.0 ** e, a pow that a GPU's libm (the
    Pallas kernels' Triton) need not compute exactly."""
    e = e.astype(jnp.int64)
    normal = _scale(e)
    subnormal = lax.bitcast_convert_type(jnp.int64(1) << jnp.clip(e + 1074, 0, 51), jnp.float64)
    return jnp.where(e > 1023, jnp.inf, jnp.where(e >= -1022, normal, jnp.where(e >= -1074, subnormal, 0.0)))


def _split(x, e_subnormal: int):
    """(s, e) with x = s 2^e, 1 <= |s| < 2 for normal x, e = e_subnormal for subnormal and zero x."""
    mantissa, exponent = jnp.frexp(x)
    s, e = mantissa * 2.0, exponent - 1
    sub = e < e_subnormal
    s = jnp.where(sub, s * _pow2(jnp.where(sub, e - e_subnormal, 0)), s)
    e = jnp.where(sub | (s == 0), e_subnormal, e)
    return s, e


def _round_half_even(x):
    """jnp.round(x) (to the nearest integer, ties to even) from trunc and exact float operations
    (x - trunc(x) and r / 2 are exact), because Pallas's Triton lowering has no round primitive."""
    r = jnp.trunc(x)
    frac = jnp.abs(x - r)
    odd = r != 2.0 * jnp.trunc(r * 0.5)
    away = (frac > 0.5) | ((frac == 0.5) & odd)
    return jnp.where(away, r + jnp.sign(x), r)


def _write_back(total, e_max, rule: str):
    """rho(total 2^e_max), as a float64 holding the float32 or float16 result."""
    value = total * _pow2(e_max)
    if rule == "RNE-FP32":
        return value.astype(jnp.float32).astype(jnp.float64)
    bits, e_subnormal, dtype = {"RZ-FP32": (23, -126, jnp.float32), "RZ-E8M13": (13, -126, jnp.float32),
                                "RNE-FP16": (10, -14, jnp.float16)}[rule]
    s, e = _split(value, e_subnormal)
    scaled = s * 2.0**bits
    s = (_round_half_even(scaled) if rule == "RNE-FP16" else jnp.trunc(scaled)) * 2.0**-bits
    # exact now, or beyond the range: the conversion gives inf, as the hardware model does
    return (s * _pow2(e)).astype(dtype).astype(jnp.float64)


def _scale(e):
    """2^e for an int array e, built from its exponent bits (far cheaper than ``jnp.ldexp``);
    clamped to float64's normal range, which only ever multiplies a zero or a term that the
    truncation removes anyway."""
    e = jnp.clip(e, -1022, 1023).astype(jnp.int64)
    return lax.bitcast_convert_type((e + 1023) << 52, jnp.float64)


def _t_step(unit: MatrixUnit, a, b, e_a, e_b, c, present):
    """One T-FDPA step: a, b (..., L) with their exponents e_a, e_b (``_split``), c (...) -> d (...).
    A term is trunc(a_i b_i 2^(F - E)) 2^(E - F): the product is exact in float64, and scaling by
    2^(F - E) is exact, so this is the aligned, truncated significand of the module docstring."""
    p = a * b
    e = jnp.where(p == 0, unit.e_zero, e_a + e_b)
    if present is not None:
        e = jnp.where(present, e, _ABSENT)
    e_c = _split(c, get_format(unit.accumulator).emin)[1]
    e_c = jnp.where(c == 0, unit.e_zero, e_c)
    e_max = jnp.maximum(jnp.max(e, axis=-1), e_c)
    scale = _scale(unit.F - e_max)
    total = jnp.sum(jnp.trunc(p * scale[..., None]), axis=-1) + jnp.trunc(c * scale)
    return _write_back(total * 2.0**-unit.F, e_max, unit.write_back) + 0.0  # -0 becomes +0


def _tr_step(unit: MatrixUnit, a, b, e_a, e_b, c, present):
    """One TR-FDPA step (AMD CDNA3; MMA-Sim's ``tr_fdpa``): a, b (..., L), c (...) -> d (...)."""
    p = a * b
    e = e_a + e_b
    too_big = e + (jnp.abs(p) >= _scale(e + 1)).astype(e.dtype) >= 128  # beyond float32's range
    p = jnp.where(too_big, p * jnp.inf, p)
    e = jnp.where(p == 0, -999, e)  # a zero product takes no part
    if present is not None:
        e = jnp.where(present, e, _ABSENT)
        p = jnp.where(present, p, 0.0)
    e_dot = jnp.max(e, axis=-1)
    s_dot = jnp.sum(jnp.trunc(p * _scale(unit.F - e_dot)[..., None]), axis=-1) * 2.0**-unit.F
    s_c, e_c = _split(c, -126)
    e_max = jnp.maximum(e_dot, e_c)
    s_dot = jnp.floor(s_dot * _pow2(e_dot - e_max + unit.F2 + 1)) * 2.0 ** -(unit.F2 + 1)
    s_c = jnp.floor(s_c * _pow2(e_c - e_max + unit.F)) * 2.0**-unit.F
    s_sum, e_sum = _split((s_dot + s_c) * _pow2(e_max), -126)
    s_sum = jnp.floor(s_sum * 2.0**unit.F2) * 2.0**-unit.F2
    return _write_back(s_sum, e_sum, unit.write_back)


def _gtr_step(unit: MatrixUnit, a, b, e_a, e_b, c, present):
    """One GTR-FDPA step (AMD CDNA3's FP8 MFMA; MMA-Sim's ``gtr_fdpa``): the even- and
    odd-indexed products are fused separately (each against its own largest exponent, truncated
    to F bits), the two sums floored to F bits against the larger of their exponents and added;
    then as TR-FDPA, except that c is dropped when it lies more than F + 1 binades below."""
    p = a * b
    e = jnp.where(p == 0, -999, e_a + e_b)  # a zero product takes no part
    if present is not None:
        e = jnp.where(present, e, _ABSENT)
        p = jnp.where(present, p, 0.0)

    # the halves by a parity mask, not strided slices (Pallas's Triton lowering has no slice): an
    # entry of the other half takes no part in the max (_ABSENT) and adds +0 to the exact
    # fixed-point sum, which starts from +0 anyway
    odd_index = lax.broadcasted_iota(jnp.int32, p.shape, p.ndim - 1) % 2 == 1

    def fused(half):
        mine = odd_index == half
        e_top = jnp.max(jnp.where(mine, e, _ABSENT), axis=-1)
        terms = jnp.where(mine, jnp.trunc(p * _scale(unit.F - e_top)[..., None]), 0.0)
        return jnp.sum(terms, axis=-1) * 2.0**-unit.F, e_top

    s_even, e_even = fused(False)
    s_odd, e_odd = fused(True)
    e_dot = jnp.maximum(e_even, e_odd)
    s_dot = jnp.floor(s_even * _pow2(e_even - e_dot + unit.F)) * 2.0**-unit.F
    s_dot = s_dot + jnp.floor(s_odd * _pow2(e_odd - e_dot + unit.F)) * 2.0**-unit.F
    s_c, e_c = _split(c, -126)
    e_max = jnp.maximum(e_dot, e_c)
    s_dot = jnp.floor(s_dot * _pow2(e_dot - e_max + unit.F2 + 1)) * 2.0 ** -(unit.F2 + 1)
    s_c = jnp.floor(s_c * _pow2(e_c - e_max + unit.F)) * 2.0**-unit.F
    s_c = jnp.where(e_c < e_max - unit.F - 1, 0.0, s_c)
    s_sum, e_sum = _split((s_dot + s_c) * _pow2(e_max), -126)
    s_sum = jnp.floor(s_sum * 2.0**unit.F2) * 2.0**-unit.F2
    return _write_back(s_sum, e_sum, unit.write_back)


_STEPS = {"T-FDPA": _t_step, "TR-FDPA": _tr_step, "GTR-FDPA": _gtr_step}


def _chain(unit: MatrixUnit, a, b, c, present=None):
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
    e_a, e_b = _split(a, e_in)[1], _split(b, e_in)[1]  # once, on the operands, not per output entry

    def by_step(x):
        return jnp.moveaxis(x.reshape(x.shape[:-1] + (steps, L)), -2, 0)

    step = _STEPS[unit.kind]
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


def _fl32(x):
    """x rounded to nearest into float32 (x a float64 sum or product of float32 numbers: one
    rounding to 53 bits and one to 24 is innocuous, 53 >= 2 * 24 + 2), held in float64."""
    return x.astype(jnp.float32).astype(jnp.float64)


def _fold32(start, parts):
    """start + parts[..., 0] + parts[..., 1] + ..., every addition rounded into float32."""
    total, _ = lax.scan(lambda t, p: (_fl32(t + p), None), start, jnp.moveaxis(parts, -1, 0))
    return total


def _layout(unit: MatrixUnit, K: int):
    """(slices, chunks per slice, chunk length) of the recipe for a dot product of length K."""
    L = min(K, unit.group)
    slice_len = -(-(-(-K // unit.split_k)) // L) * L  # ceil(K / S), up to a multiple of L
    if unit.promote_every is not None:
        slice_len = -(-slice_len // unit.promote_every) * unit.promote_every
        return unit.split_k, slice_len // unit.promote_every, unit.promote_every
    return unit.split_k, 1, slice_len


def _check_length(unit: MatrixUnit, K: int):
    if K == 0:
        raise ValueError(f"{unit.name}: a dot product of length K = 0 runs no instruction; K must be >= 1 "
                         f"(the unit fuses {unit.group} products a step)")


def _recipe_dot(unit: MatrixUnit, a, b, c, chunk_scale=None):
    """``dot`` with the recipe's promotion and split-K; ``chunk_scale`` (..., chunks) multiplies
    each chunk's result in float32 before it is added (block-scaled FP8)."""
    K = a.shape[-1]
    if unit.promote_every is None and unit.split_k == 1 and chunk_scale is None:
        return _chain(unit, a, b, c)
    slices, per_slice, length = _layout(unit, K)
    chunks = slices * per_slice
    widths = [(0, 0)] * (a.ndim - 1) + [(0, chunks * length - K)]
    a, b = jnp.pad(a, widths), jnp.pad(b, widths)
    present = (jnp.arange(chunks * length) < K).reshape(chunks, length)
    a = a.reshape(a.shape[:-1] + (chunks, length))
    b = b.reshape(b.shape[:-1] + (chunks, length))
    zeros = jnp.zeros(jnp.broadcast_shapes(a.shape[:-1], b.shape[:-1]), jnp.float64)
    parts = _chain(unit.hardware, a, b, zeros, present)  # (..., chunks)
    if chunk_scale is not None:
        parts = _fl32(parts * jnp.broadcast_to(chunk_scale, parts.shape))
    if slices == 1:
        return _fold32(c, parts)
    parts = parts.reshape(parts.shape[:-1] + (slices, per_slice))
    slice_totals = _fold32(jnp.zeros(parts.shape[:-1], jnp.float64), parts) if per_slice > 1 else parts[..., 0]
    return _fold32(c, slice_totals)


def dot(unit: MatrixUnit, a, b, c=None):
    """The unit's dot product of a and b (..., K) added to c (..., default 0): the chain of
    ceil(K / group) fused steps through the accumulator, with the unit's recipe (promotion,
    split-K; scaling applies to ``matmul``, whose operands are real numbers).  Inputs are taken
    as numbers of the unit's formats (round them first: ``boundlab.round_to``); the result is a
    float64 array holding float32 (or float16) values."""
    unit = get_unit(unit)
    a, b = jnp.asarray(a, jnp.float64), jnp.asarray(b, jnp.float64)
    _check_length(unit, a.shape[-1])
    shape = jnp.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    c = jnp.broadcast_to(jnp.zeros(shape, jnp.float64) if c is None else jnp.asarray(c, jnp.float64), shape)
    return _recipe_dot(unit, a, b, c)


def promoted_dot(unit: MatrixUnit, a, b, c=None, every: int = 128):
    """DeepSeek-V3's promotion (arXiv 2412.19437, Section 3.3.2): ``dot`` with
    ``unit.recipe(promote_every=every)``: the unit accumulates ``every`` products (N_C = 128
    there) from zero, and each such partial result is added into a float32 total with round to
    nearest (on the CUDA cores); c starts the total."""
    return dot(get_unit(unit).recipe(promote_every=every), a, b, c)


def _scales(x, fmt, axis: int, unit: MatrixUnit):
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
    return jnp.where(amax > 0, _fl32(amax / fmt.max_finite), 1.0)


def quantize(unit: MatrixUnit, x, axis: int):
    """(q, s): x as numbers of the unit's input format, fl(x / s) rounded to nearest, and the
    scales s (``_scales``; s = 1 without scaling).  ``axis``: x's contracting axis."""
    fmt = get_format(unit.inputs)
    x = jnp.asarray(x, jnp.float64)
    if unit.scaling is None:
        return round_bits(x, fmt, "nearest"), jnp.ones((), jnp.float64)
    s = _scales(x, fmt, axis, unit)
    if unit.scaling == "tensor":
        return round_bits(x / s, fmt, "nearest"), s
    K = x.shape[axis]
    expanded = jnp.moveaxis(jnp.repeat(s, unit.scale_block, axis=-1)[..., :K], -1, axis)
    return round_bits(x / expanded, fmt, "nearest"), s


def product(unit: MatrixUnit, A, B, kernel: bool = False):
    """(..., m, K) x (..., K, n) -> (..., m, n) as the unit and its recipe compute it from real
    operands: each operand quantised into the unit's input format (``quantize``: with the
    recipe's scales, else rounded to nearest), every entry a chained dot product with promotion
    and split-K, scaled back in float32.  Float64 in, float64 holding float32 (float16) out.
    ``kernel``: the chains run in the Pallas kernel ``boundlab.kernels.unit_matmul`` (the same
    bits; not with block scales, which stay on this XLA path)."""
    unit = get_unit(unit)
    require_x64(f"the matrix unit {unit.name} (its fused sums are formed in float64)")
    A, B = jnp.asarray(A, jnp.float64), jnp.asarray(B, jnp.float64)
    _check_length(unit, A.shape[-1])
    qa, sa = quantize(unit, A, A.ndim - 1)
    qb, sb = quantize(unit, jnp.swapaxes(B, -1, -2), B.ndim - 1)  # (..., n, K): blocks along K
    a, b = qa[..., :, None, :], qb[..., None, :, :]
    zeros = jnp.zeros(jnp.broadcast_shapes(a.shape[:-1], b.shape[:-1]), jnp.float64)
    if unit.scaling == "block":
        scale = _fl32(sa[..., :, None, :] * sb[..., None, :, :])  # (..., m, n, blocks)
        return _recipe_dot(unit, a, b, zeros, chunk_scale=_chunk_scales(unit, scale, A.shape[-1]))
    if kernel:
        from boundlab.kernels.unit_matmul import product as unit_kernel

        d = unit_kernel(qa, qb, unit)
    else:
        d = _recipe_dot(unit, a, b, zeros)
    return d if unit.scaling is None else _fl32(d * _fl32(sa * sb))


def _chunk_scales(unit: MatrixUnit, scale, K: int):
    """The block scales (..., blocks) laid out over the recipe's chunks (slices x chunks per
    slice; a slice's padding chunks get scale 1 and contribute zero)."""
    slices, per_slice, length = _layout(unit, K)
    blocks = scale.shape[-1]
    return jnp.pad(scale, [(0, 0)] * (scale.ndim - 1) + [(0, slices * per_slice - blocks)], constant_values=1.0)


def matmul(unit: MatrixUnit, A, B, C=None):
    """D = A B + C (A: (m, K), B: (K, n), C: (m, n)) as the unit computes it, every entry a
    chained dot product (``dot``, with the recipe's promotion and split-K).  A and B must be
    numbers of the unit's input format (``product`` quantises real operands)."""
    A, B = jnp.asarray(A, jnp.float64), jnp.asarray(B, jnp.float64)
    C = jnp.zeros((A.shape[0], B.shape[1]), jnp.float64) if C is None else C
    return dot(unit, A[:, None, :], B.T[None, :, :], C)


_WRITE_BACK_UNITS = {  # (relative error delta, absolute error mu in the subnormal range) of rho
    "RZ-FP32": (2.0**-23, 2.0**-149), "RZ-E8M13": (2.0**-13, 2.0**-139), "RNE-FP16": (2.0**-11, 2.0**-25),
    "RNE-FP32": (2.0**-24, 2.0**-150)}


def step_constants(unit: MatrixUnit, L: int, M):
    """(eta, delta, mu') of one step of L products (see ``dot_error_bound``); M = max_i
    max(|a_i|, |b_i|) bounds what subnormal inputs can do to the alignment."""
    delta, mu = _WRITE_BACK_UNITS[unit.write_back]
    emin = get_format(unit.inputs).emin
    if unit.kind != "T-FDPA":  # products against their largest, the sum and c against the larger
        eta = L * 2.0**-unit.F + 2.0 ** -(unit.F2 + 1) + 2.0**-unit.F
        if unit.kind == "GTR-FDPA":  # the even and odd sums floored against the larger of the two
            eta = eta + 2 * 2.0**-unit.F
        delta = (1 + 2.0**-unit.F2) * (1 + delta) - 1  # the floor to F2 bits, then rho
        nu = jnp.maximum(2.0**emin * M, 2.0 ** max(2 * emin, -126))
        return eta, delta, mu + 2.0 ** (-126 - unit.F2) + (1 + delta) * eta * nu
    eta = (L + 1) * 2.0**-unit.F
    nu = jnp.maximum(2.0**emin * M, 2.0 ** max(2 * emin, unit.e_zero, get_format(unit.accumulator).emin))
    return eta, delta, mu + (1 + delta) * eta * nu


def dot_error_bound(unit: MatrixUnit, a, b, c=None, every: int | None = None):
    """A deterministic bound on |d - (a^T b + c)| for ``dot`` with the unit's recipe (``every``:
    promotion every that many products, as ``promoted_dot``) on these operands (..., K); no
    overflow assumed (the hypothesis of Model 4.1 too).

    One T-FDPA step (L products and the accumulator, aligned to 2^E, E the largest exponent among
    them) loses less than 2^(E - F) per aligned term to truncation.  2^E <= max |term| when that
    term's factors are normal; a subnormal factor, a zero term (exponent e_zero) or a subnormal
    accumulator can make 2^E larger, but never larger than nu = max(2^emin M, 2^(2 emin),
    2^e_zero, 2^emin_acc), M = max_i max(|a_i|, |b_i|), emin that of the inputs' format.  So the
    step's sum is off by at most eta (|d_prev| + G) + eta nu, eta = (L + 1) 2^-F, G = sum over the
    group of |a_i b_i|; the write-back adds a relative delta (2^-23 for RZ-FP32, 2^-13 for
    RZ-E8M13, 2^-11 for RNE-FP16, 2^-24 for RNE-FP32) and an absolute mu in the subnormal range.
    (TR-FDPA: eta = L 2^-F + 2^-(F2+1) + 2^-F, the products' truncation against their largest and
    the floors of their sum and of c against the larger; delta = (1 + 2^-F2)(1 + 2^-24) - 1;
    GTR-FDPA adds 2 2^-F for the floors of the even and odd sums.)
    With kappa = eta + delta (1 + eta) and mu' = mu + (1 + delta) eta nu, the error after j steps
    obeys B_j <= B_(j-1) + kappa (A_j + B_(j-1)) + mu', A_j = |c| + sum so far of |a_i b_i|, so
    after s = ceil(K / L) steps

        |d - (a^T b + c)| <= ((1 + kappa)^s - 1) A + s (1 + kappa)^(s - 1) mu':

    Lemma 4.3's gamma_K u |a|^T |b| with kappa in place of u and the number of steps in place of
    K.  With promotion or split-K, each of the m chunks has this bound (c = 0; linear in its A,
    so the chunks' bounds add up to the same form in A, s the longest chunk's steps), and the
    float32 round-to-nearest additions (at most m + S of them on any path) add
    gamma_(m+S) (|c| + A + chunk errors), u = 2^-24, and (m + S) 2^-150.
    """
    unit = get_unit(unit)
    if every is not None:
        unit = unit.recipe(promote_every=every, split_k=unit.split_k)
    a, b = jnp.asarray(a, jnp.float64), jnp.asarray(b, jnp.float64)
    c = jnp.zeros(a.shape[:-1], jnp.float64) if c is None else jnp.asarray(c, jnp.float64)
    K = a.shape[-1]
    _check_length(unit, K)
    L = min(K, unit.group)
    M = jnp.max(jnp.maximum(jnp.abs(a), jnp.abs(b)), axis=-1)
    eta, delta, mu = step_constants(unit, L, M)
    kappa = eta + delta * (1 + eta)
    A = jnp.sum(jnp.abs(a * b), axis=-1)
    if unit.promote_every is None and unit.split_k == 1:
        s = -(-K // L)
        return (((1 + kappa) ** s - 1) * (A + jnp.abs(c)) + s * (1 + kappa) ** (s - 1) * mu) * (1 + 2.0**-50)
    slices, per_slice, length = _layout(unit, K)
    chunks = slices * per_slice
    s = -(-min(length, K) // L)  # steps of the longest chunk
    chunk_errors = ((1 + kappa) ** s - 1) * A + chunks * s * (1 + kappa) ** (s - 1) * mu
    adds = chunks + slices
    gamma = adds * 2.0**-24 / (1 - adds * 2.0**-24)
    return (chunk_errors + gamma * (jnp.abs(c) + A + chunk_errors) + adds * 2.0**-150) * (1 + 2.0**-50)


def first_order_error(unit: MatrixUnit, A, B):
    """The first-order error bound, entrywise, of ``product(unit, A, B)`` against A B (exact
    A, B (..., m, K), (..., K, n)): the local error model of a dot product computed by the unit,
    as ``boundlab.first_order`` uses it.

        e = q + sum over chunks [ sum over steps j (eta (|S_(j-1)| + G_j) + delta |S_j| + mu')
                                   + u32 |T_c| ] (+ u32 (|T| + |D|) for the float32 dequantisation),

    S_j the exact partial sums of a chunk after j steps, G_j the step's sum of |a_i b_i|, T_c
    the exact running total after chunk c (the float32 promotion or split-K additions), and q the
    operands' own rounding into the input format: (u |A| + s_A h) |B| + |A| (u |B| + s_B h), u the
    input format's unit roundoff, h half its smallest subnormal, s the scales (1 without
    scaling).  Terms of order u^2 are left out: this is a first-order estimate (flags in
    ``first_order`` say when underflow or overflow void it), not ``dot_error_bound``."""
    unit = get_unit(unit)
    A, B = jnp.asarray(A, jnp.float64), jnp.asarray(B, jnp.float64)
    K = A.shape[-1]
    _check_length(unit, K)
    fmt = get_format(unit.inputs)
    u, h = fmt.unit_roundoff, fmt.min_subnormal / 2
    hi = lax.Precision.HIGHEST
    absA, absB = jnp.abs(A), jnp.abs(B)
    if unit.scaling is None:
        sa = sb = jnp.ones((), jnp.float64)
        qA, qB = u * absA + h, u * absB + h
    else:
        sa = _scales(A, fmt, A.ndim - 1, unit)
        sb = _scales(jnp.swapaxes(B, -1, -2), fmt, B.ndim - 1, unit)
        if unit.scaling == "block":
            qA = u * absA + h * jnp.repeat(sa, unit.scale_block, axis=-1)[..., :K]
            qB = u * absB + h * jnp.swapaxes(jnp.repeat(sb, unit.scale_block, axis=-1)[..., :K], -1, -2)
        else:
            qA, qB = u * absA + h * sa, u * absB + h * sb
    q = jnp.matmul(qA, absB, precision=hi) + jnp.matmul(absA, qB, precision=hi)

    slices, per_slice, length = _layout(unit, K)
    chunks = slices * per_slice
    L = min(length, unit.group)  # as ``_chain`` groups each chunk (length is a multiple of L)
    steps = -(-length // L)
    total_len = chunks * steps * L
    pad = total_len - K
    Ap = jnp.pad(A, [(0, 0)] * (A.ndim - 1) + [(0, pad)])
    Bp = jnp.pad(B, [(0, 0)] * (B.ndim - 2) + [(0, pad), (0, 0)])
    Ag = Ap.reshape(A.shape[:-1] + (chunks, steps, L))
    Bg = Bp.reshape(B.shape[:-2] + (chunks, steps, L, B.shape[-1]))
    G_signed = jnp.einsum("...mcsl,...csln->...mncs", Ag, Bg, precision=hi)
    G = jnp.einsum("...mcsl,...csln->...mncs", jnp.abs(Ag), jnp.abs(Bg), precision=hi)
    S = jnp.cumsum(G_signed, axis=-1)  # within each chunk
    S_prev = S - G_signed
    M = jnp.maximum(jnp.max(absA, axis=-1)[..., :, None], jnp.max(absB, axis=-2)[..., None, :])
    eta, delta, mu = step_constants(unit, L, M)
    chain = jnp.sum(eta * (jnp.abs(S_prev) + G) + delta * jnp.abs(S), axis=(-1, -2)) + (chunks * steps) * mu
    e = q + chain
    if unit.promote_every is not None or unit.split_k > 1:
        totals = jnp.cumsum(S[..., -1], axis=-1)  # the exact running total after each chunk
        e = e + 2.0**-24 * jnp.sum(jnp.abs(totals), axis=-1) + chunks * 2.0**-150
        if unit.split_k > 1:  # the slices' own totals (before the final additions)
            e = e + 2.0**-24 * jnp.sum(jnp.abs(totals), axis=-1)
    if unit.scaling is not None:  # fl32(s_a s_b) and the product with it, per chunk or once
        e = e + 2 * 2.0**-24 * (jnp.sum(jnp.abs(S[..., -1]), axis=-1) if unit.scaling == "block"
                                else jnp.abs(jnp.sum(S[..., -1], axis=-1)))
    return e


def _nvidia_units() -> dict:
    """The T-FDPA parameters of MMA-Sim's nv_ptx/sim.py, per architecture and instruction."""
    F = {"volta": 23, "turing": 24, "ampere": 24, "ada": 24, "hopper": 25, "blackwell": 25}
    group_bytes = {"volta": 8, "turing": 16, "ampere": 16, "ada": 16, "hopper": 32, "blackwell": 32}
    e_zero = {"volta": (-19, -131), "turing": (-20, -132), "ampere": (-20, -132), "ada": (-20, -132),
              "hopper": (-21, -133), "blackwell": (-21, -133)}  # (fp16 accumulator, fp32 accumulator)
    width = {"fp16": 2, "bf16": 2, "tf32": 4, "fp8_e4m3": 1, "fp8_e5m2": 1}
    inputs = {"volta": ("fp16",), "turing": ("fp16",), "ampere": ("fp16", "bf16", "tf32"),
              "ada": ("fp16", "bf16", "tf32", "fp8_e4m3", "fp8_e5m2"), "hopper": ("fp16", "bf16", "tf32"),
              "blackwell": ("fp16", "bf16", "tf32")}
    units = {}
    for arch in F:
        for fmt in inputs[arch]:
            for acc in ("fp32", "fp16"):
                if acc == "fp16" and fmt in ("bf16", "tf32"):
                    continue  # no such instruction
                f, rule = F[arch], "RNE-FP16" if acc == "fp16" else "RZ-FP32"
                if arch == "ada" and fmt.startswith("fp8"):
                    f, rule = 13, "RNE-FP16" if acc == "fp16" else "RZ-E8M13"
                name = f"{arch}-mma-{fmt}-{acc}"
                units[name] = MatrixUnit(name, fmt, acc, f, group_bytes[arch] // width[fmt], rule,
                                         e_zero[arch][acc == "fp32"])
    for arch, instruction in (("hopper", "wgmma"), ("blackwell", "tcgen05")):
        for fmt in ("fp16", "bf16", "tf32", "fp8_e4m3", "fp8_e5m2"):
            for acc in ("fp32", "fp16"):
                if acc == "fp16" and fmt in ("bf16", "tf32"):
                    continue
                fp8 = fmt.startswith("fp8") and instruction == "wgmma"  # Hopper's FP8 path keeps 13 bits
                rule = "RNE-FP16" if acc == "fp16" else "RZ-E8M13" if fp8 else "RZ-FP32"
                name = f"{arch}-{instruction}-{fmt}-{acc}"
                units[name] = MatrixUnit(name, fmt, acc, 13 if fp8 else 25, 32 // width[fmt], rule,
                                         -21 if acc == "fp16" else -133)
    return units


def _amd_units() -> dict:
    """AMD CDNA3 (MI300) MFMA, float32 accumulator (MMA-Sim's amd/sim.py): fp16, bf16 and xf32
    (tf32) inputs by TR-FDPA with F = 24, F2 = 31, round to nearest into float32, L = 8 (4 for
    xf32); the FP8 inputs (the FNUZ formats fp8_e4m3fnuz and fp8_e5m2fnuz) by GTR-FDPA with
    F = 24, F2 = 31, L = 16."""
    source = "MMA-Sim (arXiv 2511.10909), mmasim 2.1.1: amd/sim.py (CDNA3)"
    units = {}
    for fmt in ("fp16", "bf16", "tf32", "fp8_e4m3fnuz", "fp8_e5m2fnuz"):
        fp8 = fmt.startswith("fp8")
        group = 16 if fp8 else 4 if fmt == "tf32" else 8
        name = f"cdna3-mfma-{fmt}-fp32"
        units[name] = MatrixUnit(name, fmt, "fp32", 24, group, "RNE-FP32", -999, source,
                                 kind="GTR-FDPA" if fp8 else "TR-FDPA", F2=31)
    return units


UNITS = {**_nvidia_units(), **_amd_units()}


def get_unit(name: str | MatrixUnit, **recipe) -> MatrixUnit:
    """A named unit (``UNITS``: e.g. ``"hopper-wgmma-fp8_e4m3-fp32"``), or the unit itself, with
    an optional recipe (``promote_every=128``, ``split_k``, ``scaling``: ``MatrixUnit.recipe``)."""
    if isinstance(name, MatrixUnit):
        return name.recipe(**recipe) if recipe else name
    if not isinstance(name, str) or name not in UNITS:
        family = "-".join(str(name).split("-")[:2])
        known = sorted(n for n in UNITS if n.startswith(family + "-"))
        if known:
            choices = ", ".join(n[len(family) + 1:] for n in known)
            raise ValueError(f"matrix unit {family} has no {name!r}: it takes <inputs>-<accumulator> among {choices}")
        families = sorted({"-".join(n.split("-")[:2]) for n in UNITS})
        raise ValueError(f"unknown matrix unit {name!r}; boundlab knows the families {', '.join(families)} "
                         f"(names <family>-<inputs>-<accumulator>, e.g. hopper-wgmma-fp8_e4m3-fp32)")
    return UNITS[name].recipe(**recipe) if recipe else UNITS[name]


matmul_jit = jax.jit(matmul, static_argnums=0)
