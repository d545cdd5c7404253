"""Correctly rounded elementary functions for the emulation: exp, and the sticky sum.

Model 4.1 rounds the exact exp(x) once.  The container's ``jnp.exp`` has an error of about one
ulp of the container, so rounding its result to t bits is wrong whenever the exact value and
the container value lie on different sides of a rounding boundary (a midpoint for round to
nearest, a format number for the directed and stochastic modes).  ``exp`` therefore

1. evaluates exp in the widest float available: float64 when x64 is on (also for a float32
   container), else the container;
2. flags the elements whose value lies within ``MARGIN_ULPS`` ulps of a rounding boundary
   (rounding the two ends of that interval gives two different results);
3. recomputes the flagged ones in double-word arithmetic (a pair hi + lo of floats, about
   2p - 6 bits: ~100 bits from float64, ~42 from float32), makes hi "round to odd" with the sign
   of lo as the sticky bit, and rounds that: correct whenever the exact value is farther from the
   boundary than the double-word error.

exp(x) is transcendental for every nonzero floating-point x (Lindemann), so it never equals a
boundary; for inputs that are t-bit format numbers its distance to one is about 2^-(2t + 11)
relative in the worst case, far above the double-word error for every format boundlab emulates
(t <= 25 in float64; t <= 11 in float32, where the tests check every finite fp16, bf16 and fp8
argument against MPFR).  Without x64 a float32 container uses float-float pairs (~2^-42).

The double-word operations survive XLA's contraction of products and sums into fused
multiply-adds: the split is a bit mask (26 + 27 bits in float64, 12 + 12 in float32), so the
partial products are exact and fusing one of them changes nothing, and the rounded product p of
TwoProduct sits behind an optimisation barrier, so no FMA can fuse the product that must stay
rounded (XLA:CPU did so when this code ran inside ``lax.fori_loop``: the tests caught it).
"""

from __future__ import annotations

import decimal
import functools
import math
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from boundlab.runtime.x64 import x64_enabled
from boundlab.formats import Format
from boundlab.rounding import round_bits

MARGIN_ULPS = 8  # the container exp is trusted to this many ulps (XLA's is within 1-2)

_UINT = {np.dtype(np.float32): np.uint32, np.dtype(np.float64): np.uint64}
_PRECISION = {np.dtype(np.float32): 24, np.dtype(np.float64): 53}


def sticky(total, error):
    """``total`` made round-to-odd: when ``error`` (the exact value minus ``total``) is nonzero,
    the last bit of ``total`` is set on the side of the exact value.  A second rounding to
    t <= p - 2 bits of the result is then the correct rounding of total + error in every mode."""
    uint = _UINT[np.dtype(total.dtype)]
    bits = lax.bitcast_convert_type(total, uint)
    inexact = (error != 0) & jnp.isfinite(total)
    below = inexact & (jnp.signbit(error) != jnp.signbit(total))  # |exact| < |total|
    odd = (bits - below.astype(uint)) | jnp.asarray(1, uint)
    return lax.bitcast_convert_type(jnp.where(inexact, odd, bits), total.dtype)


# -- double-word arithmetic (pairs hi + lo, |lo| <= ulp(hi) / 2) ---------------------------------

def _two_sum(a, b):
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _fast_two_sum(a, b):  # |a| >= |b|
    s = a + b
    return s, b - (s - a)


def _split(a):
    """a = hi + lo with hi the leading 26 (float64) or 12 (float32) significand bits (a mask,
    never a product, so no FMA can change it)."""
    uint = _UINT[np.dtype(a.dtype)]
    low_bits = 27 if a.dtype == jnp.float64 else 12
    mask = jnp.asarray(~((1 << low_bits) - 1) & np.iinfo(uint).max, uint)
    hi = lax.bitcast_convert_type(lax.bitcast_convert_type(a, uint) & mask, a.dtype)
    return hi, a - hi


def _two_prod(a, b):
    # the barrier keeps p a rounded value: contracting p's product into ``ah * bh - p`` (an FMA on
    # the wrong product, which XLA:CPU does inside loops) would make the error term wrong
    p = lax.optimization_barrier(a * b)
    ah, al = _split(a)
    bh, bl = _split(b)
    return p, (((ah * bh - p) + ah * bl) + al * bh) + al * bl


def _add(x, y):
    s, e = _two_sum(x[0], y[0])
    t, f = _two_sum(x[1], y[1])
    s, e = _fast_two_sum(s, e + t)
    return _fast_two_sum(s, e + f)


def _mul(x, y):
    p, e = _two_prod(x[0], y[0])
    return _fast_two_sum(p, e + (x[0] * y[1] + x[1] * y[0]))


def _constant(value: Fraction, dtype, bits: int | None = None):
    """(hi, lo) of an exact rational; ``bits`` truncates hi to that many significand bits."""
    hi = float(value)
    if bits is not None:
        exponent = math.frexp(hi)[1]
        hi = math.ldexp(math.floor(math.ldexp(abs(hi), bits - exponent)), exponent - bits) * (1 if hi > 0 else -1)
    hi = np.dtype(dtype).type(hi)
    return hi, np.dtype(dtype).type(float(value - Fraction(float(hi))))


def _ln2() -> Fraction:
    with decimal.localcontext() as context:
        context.prec = 60
        return Fraction(decimal.Decimal(2).ln())


_LN2 = _ln2()
_SQUARINGS = {np.dtype(np.float64): 8, np.dtype(np.float32): 4}  # exp(r) = exp(r / 2^s)^(2^s)
# Taylor terms for |r / 2^s| <= ln2 / 2^(s+1): the remainder r^(N+1)/(N+1)! is below 2^-117 (float64,
# |r| <= 2^-9.5) and 2^-51 (float32, |r| <= 2^-5.5), still below 2^-109 and 2^-47 after the s squarings
_TERMS = {np.dtype(np.float64): 9, np.dtype(np.float32): 6}


def double_word_exp(x):
    """exp(x) as a double-word pair (hi, lo) in x's dtype, for x where exp(x) is a normal number.

    x = k ln2 + r (Cody-Waite with ln2 in three parts, k r exact), exp(r / 2^s) by its Taylor
    polynomial, squared s times, times 2^k.  Relative error about 2^-100 in float64 and 2^-42
    in float32; outside the normal range the pair is meaningless (callers mask it).
    """
    dtype = np.dtype(x.dtype)
    p = _PRECISION[dtype]
    k_bits = 11 if p == 53 else 8  # |k| < 2^k_bits over the normal range
    L1, _ = _constant(_LN2, dtype, bits=p - k_bits - 1)
    rest = _LN2 - Fraction(float(L1))
    L2, _ = _constant(rest, dtype, bits=p - k_bits - 1)
    L3, _ = _constant(rest - Fraction(float(L2)), dtype)
    limit = 708.0 if p == 53 else 87.0
    x = jnp.clip(x, -limit, limit)  # the pair is only used where exp(x) is normal
    k = jnp.round(x * dtype.type(1 / math.log(2)))
    r1 = x - k * L1  # exact: k L1 has at most p - 1 bits and lies within a factor 2 of x
    r = _two_sum(r1, -(k * L2))  # k L2 exact
    r = _add(r, (-(k * L3), jnp.zeros_like(x)))
    scale = dtype.type(2.0 ** -_SQUARINGS[dtype])
    r = (r[0] * scale, r[1] * scale)  # exact (a power of two)
    terms = _TERMS[dtype]
    acc = _constant(Fraction(1, math.factorial(terms)), dtype)
    acc = (jnp.full_like(x, acc[0]), jnp.full_like(x, acc[1]))
    for i in range(terms - 1, -1, -1):
        c = _constant(Fraction(1, math.factorial(i)), dtype)
        acc = _add(_mul(acc, r), (jnp.full_like(x, c[0]), jnp.full_like(x, c[1])))
    for _ in range(_SQUARINGS[dtype]):
        acc = _mul(acc, acc)
    k = k.astype(jnp.int32)
    half = k // 2  # two factors, so that 2^k is never formed outside the normal range
    uint = _UINT[dtype]
    bias = 1023 if p == 53 else 127

    def power_of_two(e):
        return lax.bitcast_convert_type(lax.shift_left((e + bias).astype(uint), jnp.asarray(p - 1, uint)), dtype)

    f1, f2 = power_of_two(half), power_of_two(k - half)
    return acc[0] * f1 * f2, acc[1] * f1 * f2


def _nudge(y, ulps):
    """y moved by ``ulps`` units in the last place (positive finite y)."""
    uint = _UINT[np.dtype(y.dtype)]
    bits = lax.bitcast_convert_type(y, uint)
    step = jnp.asarray(abs(ulps), uint)
    return lax.bitcast_convert_type(bits + step if ulps > 0 else bits - step, y.dtype)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def exp(x, fmt: Format, mode: str, random_bits=None):
    """fl(exp(x)) correctly rounded to ``fmt`` in ``mode`` (see the module docstring), held in
    x's dtype.  ``random_bits`` as for ``round_bits`` (stochastic mode: drawn for x's dtype).
    A format as wide as the container (t > p - 2, float64 itself) gets the container's exp, the
    one ``Exact()`` uses.  Derivative exp(x) (straight-through, as ``round_to``).

    Under ``vmap`` the whole batch is one elementwise call, so the double-word path runs only when
    some element of the batch is near a boundary (a batched ``lax.cond`` would run it always)."""
    if random_bits is None:
        return _batched(fmt, mode, False)(x)
    return _batched(fmt, mode, True)(x, random_bits)


@functools.lru_cache(maxsize=None)
def _batched(fmt: Format, mode: str, with_bits: bool):
    """The elementwise exp as a ``custom_vmap`` whose batching rule is: the same function on the
    batched array."""

    @jax.custom_batching.custom_vmap
    def elementwise(*operands):
        return _exp(operands[0], fmt, mode, operands[1] if with_bits else None)

    @elementwise.def_vmap
    def batched(axis_size, in_batched, *operands):
        operands = [v if b else jnp.broadcast_to(v, (axis_size,) + v.shape) for v, b in zip(operands, in_batched)]
        return elementwise(*operands), True

    return elementwise


def _exp(x, fmt: Format, mode: str, random_bits):
    container = x.dtype
    wide = jnp.float64 if x64_enabled() else container
    if fmt.precision > _PRECISION[np.dtype(wide)] - 2:
        return round_bits(jnp.exp(x), fmt, mode, random_bits)
    xw = x.astype(wide)
    y = jnp.exp(xw)
    tiny = fmt.min_subnormal / 4  # below half the smallest format number: no boundary nearby
    finfo = np.finfo(np.dtype(wide))
    if tiny >= float(finfo.tiny):  # exp underflowed: the exact value is positive, not zero
        y = jnp.where((y == 0) & jnp.isfinite(xw), jnp.asarray(tiny, wide), y)
    # exp overflowed the wide float: the exact value is finite (toward zero it rounds to the
    # largest format number); the largest float lies beyond every format's overflow threshold
    y = jnp.where(jnp.isinf(y) & jnp.isfinite(xw), jnp.asarray(finfo.max, wide), y)
    checkable = jnp.isfinite(y) & (y >= finfo.tiny) & (y < finfo.max / 2)
    probe = "zero" if mode == "stochastic" else mode  # boundaries of stochastic: format numbers
    safe_y = jnp.where(checkable, y, 1)
    near = checkable & (round_bits(_nudge(safe_y, -MARGIN_ULPS), fmt, probe)
                        != round_bits(_nudge(safe_y, MARGIN_ULPS), fmt, probe))

    def resolve(values):
        hi, lo = double_word_exp(jnp.where(near, xw, 0))
        return jnp.where(near, sticky(hi, lo), values)

    y = lax.cond(jnp.any(near), resolve, lambda values: values, y)
    if wide == container:
        return round_bits(y, fmt, mode, random_bits)
    if mode != "stochastic":  # rounded in the wide dtype; the format number fits the container
        return round_bits(y, fmt, mode).astype(container)
    # the random bits are the container's: narrow y keeping its side of every format number
    narrow = y.astype(container)
    return round_bits(sticky(narrow, y - narrow.astype(wide)), fmt, mode, random_bits)


@exp.defjvp
def _exp_jvp(fmt, mode, primals, tangents):
    x, random_bits = primals
    x_dot, _ = tangents
    return exp(x, fmt, mode, random_bits), jnp.exp(x) * x_dot
