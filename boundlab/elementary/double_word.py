"""Double-word arithmetic: pairs (hi, lo) of floats with |lo| <= ulp(hi) / 2, about 2p - 6 bits
(~100 from float64, ~42 from float32), for the few elements whose wide value lies near a
rounding boundary (``boundlab.elementary.boundary``).

The operations survive XLA's contraction of products and sums into fused multiply-adds: the
split is a bit mask (26 + 27 bits in float64, 12 + 12 in float32), so the partial products are
exact and fusing one of them changes nothing, and the rounded product p of TwoProduct is a select
LLVM cannot see through (``rounded_product``), so no FMA can use the unrounded product in its
place (XLA:CPU did so under jit, with an optimisation barrier too: the tests caught it).

``double_word_exp`` is exp(x) as such a pair; ``exp_of_pair`` extends it to a pair argument and
``expm1_pair`` to exp(x) - 1 without cancellation; ``log_pair`` is log(x) by one Newton step on
``double_word_exp``.  Their relative errors are about 2^-100 in float64 (2^-42 in float32).
"""

from __future__ import annotations

import decimal
import math
from fractions import Fraction

import jax.numpy as jnp
import numpy as np
from jax import lax

UINT = {np.dtype(np.float32): np.uint32, np.dtype(np.float64): np.uint64}
PRECISION = {np.dtype(np.float32): 24, np.dtype(np.float64): 53}


def sticky(total, error):
    """``total`` made round-to-odd: when ``error`` (the exact value minus ``total``) is nonzero,
    the last bit of ``total`` is set on the side of the exact value.  A second rounding to
    t <= p - 2 bits of the result is then the correct rounding of total + error in every mode."""
    uint = UINT[np.dtype(total.dtype)]
    bits = lax.bitcast_convert_type(total, uint)
    inexact = (error != 0) & jnp.isfinite(total)
    below = inexact & (jnp.signbit(error) != jnp.signbit(total))  # |exact| < |total|
    odd = (bits - below.astype(uint)) | jnp.asarray(1, uint)
    return lax.bitcast_convert_type(jnp.where(inexact, odd, bits), total.dtype)


# -- double-word arithmetic (pairs hi + lo, |lo| <= ulp(hi) / 2) ---------------------------------

def two_sum(a, b):
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def fast_two_sum(a, b):  # |a| >= |b|
    s = a + b
    return s, b - (s - a)


def split(a):
    """a = hi + lo with hi the leading 26 (float64) or 12 (float32) significand bits (a mask,
    never a product, so no FMA can change it)."""
    uint = UINT[np.dtype(a.dtype)]
    low_bits = 27 if a.dtype == jnp.float64 else 12
    mask = jnp.asarray(~((1 << low_bits) - 1) & np.iinfo(uint).max, uint)
    hi = lax.bitcast_convert_type(lax.bitcast_convert_type(a, uint) & mask, a.dtype)
    return hi, a - hi


def rounded_product(a, b):
    """fl(a b) as a value no later operation can fuse: selects on ``a == a`` and ``b == b`` (false
    only for NaN, where they give that NaN), which LLVM cannot fold away; two, since a select on a
    constant operand is folded (a product by a constant pair under jit).  A bare product feeding
    ``ah bh - p`` is contracted by XLA:CPU's LLVM into fma(-a, b, ah bh), which uses the unrounded
    product and makes TwoProduct's error term wrong (measured: 2^-54 to 2^-59 relative);
    ``lax.optimization_barrier`` does not prevent it (XLA:CPU removes the barrier before fusion,
    which then recomputes the product inside the consumer)."""
    return jnp.where(b == b, jnp.where(a == a, a * b, a), b)


def two_prod(a, b):
    p = rounded_product(a, b)
    ah, al = split(a)
    bh, bl = split(b)
    return p, (((ah * bh - p) + ah * bl) + al * bh) + al * bl


def add(x, y):
    s, e = two_sum(x[0], y[0])
    t, f = two_sum(x[1], y[1])
    s, e = fast_two_sum(s, e + t)
    return fast_two_sum(s, e + f)


def mul(x, y):
    p, e = two_prod(x[0], y[0])
    return fast_two_sum(p, e + (x[0] * y[1] + x[1] * y[0]))


def div(x, y):
    """x / y for pairs: three quotient words, each from the remainder of the ones before (the
    remainders x - q y are formed in pairs; relative error about 2^-104 in float64)."""
    q1 = x[0] / y[0]
    r = sub(x, mul(pair(q1), y))
    q2 = r[0] / y[0]
    r = sub(r, mul(pair(q2), y))
    q3 = r[0] / y[0]
    return add(fast_two_sum(q1, q2), pair(q3))


def constant(value: Fraction, dtype, bits: int | None = None):
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
    p = PRECISION[dtype]
    k_bits = 11 if p == 53 else 8  # |k| < 2^k_bits over the normal range
    L1, _ = constant(_LN2, dtype, bits=p - k_bits - 1)
    rest = _LN2 - Fraction(float(L1))
    L2, _ = constant(rest, dtype, bits=p - k_bits - 1)
    L3, _ = constant(rest - Fraction(float(L2)), dtype)
    limit = 708.0 if p == 53 else 87.0
    x = jnp.clip(x, -limit, limit)  # the pair is only used where exp(x) is normal
    k = jnp.round(x * dtype.type(1 / math.log(2)))
    r1 = x - k * L1  # exact: k L1 has at most p - 1 bits and lies within a factor 2 of x
    r = two_sum(r1, -(k * L2))  # k L2 exact
    r = add(r, (-(k * L3), jnp.zeros_like(x)))
    scale = dtype.type(2.0 ** -_SQUARINGS[dtype])
    r = (r[0] * scale, r[1] * scale)  # exact (a power of two)
    terms = _TERMS[dtype]
    acc = constant(Fraction(1, math.factorial(terms)), dtype)
    acc = (jnp.full_like(x, acc[0]), jnp.full_like(x, acc[1]))
    for i in range(terms - 1, -1, -1):
        c = constant(Fraction(1, math.factorial(i)), dtype)
        acc = add(mul(acc, r), (jnp.full_like(x, c[0]), jnp.full_like(x, c[1])))
    for _ in range(_SQUARINGS[dtype]):
        acc = mul(acc, acc)
    k = k.astype(jnp.int32)
    half = k // 2  # two factors, so that 2^k is never formed outside the normal range
    f1, f2 = normal_power_of_two(half, dtype), normal_power_of_two(k - half, dtype)
    return acc[0] * f1 * f2, acc[1] * f1 * f2


def normal_power_of_two(e, dtype):
    """2^e from its bit pattern, for int32 e in the normal range of ``dtype``."""
    dtype = np.dtype(dtype)
    p = PRECISION[dtype]
    bias, uint = (1023 if p == 53 else 127), UINT[dtype]
    return lax.bitcast_convert_type(lax.shift_left((e + bias).astype(uint), jnp.asarray(p - 1, uint)), dtype)


def power_of_two(k, dtype):
    """2^k exactly for int32 k (0 below the subnormals, inf above the range): two normal
    factors, so that subnormal powers are formed exactly (never through exp2, which XLA computes
    with a rounding error)."""
    dtype = np.dtype(dtype)
    p = PRECISION[dtype]
    bias = 1023 if p == 53 else 127
    k = jnp.clip(k, -2 * bias - p, 2 * bias + 2)
    first = jnp.clip(k, 1 - bias, bias)
    return normal_power_of_two(first, dtype) * normal_power_of_two(jnp.clip(k - first, 1 - bias, bias), dtype)


def nudge(y, ulps):
    """y moved by ``ulps`` units in the last place (positive finite y)."""
    uint = UINT[np.dtype(y.dtype)]
    bits = lax.bitcast_convert_type(y, uint)
    step = jnp.asarray(abs(ulps), uint)
    return lax.bitcast_convert_type(bits + step if ulps > 0 else bits - step, y.dtype)




# -- helpers on pairs ------------------------------------------------------------------------------

def ones(x):
    """Ones as an operand of TwoSum: behind a barrier, since XLA's simplifier folds (1 + b) - 1
    into b when the 1 is a constant, which zeroes TwoSum's error term (measured: erf lost its
    low word beyond x = 4)."""
    return lax.optimization_barrier(jnp.ones_like(x))


# below 2^-969 (float32: 2^-102) a pair's low word is subnormal, which XLA:CPU flushes
_LIFTS = {np.dtype(np.float64): (2.0 ** -900, 600), np.dtype(np.float32): (2.0 ** -90, 60)}


def lift(c):
    """(k, c 2^k): k = 600 (float32: 60) where |c| is tiny, so that exp(a) 2^k = exp(a + k ln2)
    keeps its low word."""
    tiny, power = _LIFTS[np.dtype(c.dtype)]
    small = jnp.abs(c) < tiny
    return jnp.where(small, float(power), 0.0).astype(c.dtype), c * jnp.where(small, 2.0 ** power, 1.0).astype(c.dtype)


def pair(x):
    """x as a pair (x, 0)."""
    return x, jnp.zeros_like(x)


def neg(x):
    return -x[0], -x[1]


def sub(x, y):
    return add(x, neg(y))


def select(mask, x, y):
    """The pair x where ``mask``, else y."""
    return jnp.where(mask, x[0], y[0]), jnp.where(mask, x[1], y[1])


def vec_sum(terms):
    """VecSum passes (TwoSum from the first term to the last), as many as there are terms: the
    same exact sum of ``terms`` (stacked on axis 0) as a non-overlapping expansion, the largest
    part last.  Loops, not unrolled code: a loop body of one TwoSum keeps the program small."""

    def one_pass(_, t):
        def step(carry, term):
            total, error = two_sum(term, carry)
            return total, error

        last, errors = lax.scan(step, t[0], t[1:])
        return jnp.concatenate([errors, last[None]])

    return lax.fori_loop(0, terms.shape[0], one_pass, terms)


def sign(x):
    """The sign (-1, 0, 1) of hi + lo (hi carries it unless it is zero)."""
    return jnp.where(x[0] != 0, jnp.sign(x[0]), jnp.sign(x[1]))


def scale(x, power_of_two):
    """x times a power of two (exact)."""
    return x[0] * power_of_two, x[1] * power_of_two


def constant_pair(value: Fraction, like):
    """The exact rational ``value`` as a pair of ``like``'s dtype, broadcast to its shape, behind
    an optimisation barrier: XLA's simplifier folds (c + b) - c into b for a constant c, which
    zeroes TwoSum's error term (measured: log(pi) - log|sin(pi x)| - lgamma(1 - x) lost 2^-54)."""
    hi, lo = constant(value, like.dtype)
    return lax.optimization_barrier((jnp.full_like(like, hi), jnp.full_like(like, lo)))


def ln2_pair(like):
    return constant_pair(_LN2, like)


def horner(x, coefficients, like, loop: bool = False):
    """sum_k coefficients[k] x^k (exact rationals, highest degree last) for a pair x, in pairs;
    ``loop``: in a ``fori_loop`` over a table of the coefficients (a small program however many
    terms) rather than unrolled."""
    if not loop:
        acc = constant_pair(coefficients[-1], like)
        for c in reversed(coefficients[:-1]):
            acc = add(mul(acc, x), constant_pair(c, like))
        return acc
    pairs = [constant(c, like.dtype) for c in coefficients]
    hi, lo = (jnp.asarray([q[i] for q in pairs], like.dtype) for i in range(2))
    n = len(coefficients)

    def step(i, acc):
        j = n - 2 - i
        return add(mul(acc, x), (jnp.broadcast_to(hi[j], like.shape), jnp.broadcast_to(lo[j], like.shape)))

    return lax.fori_loop(0, n - 1, step, (jnp.broadcast_to(hi[-1], like.shape), jnp.broadcast_to(lo[-1], like.shape)))


def exp_of_pair(x):
    """exp(hi + lo) = exp(hi) (1 + lo + lo^2 / 2), a pair (|lo| <= 2^-43 over the normal range,
    so the dropped lo^3 / 6 is below 2^-130 relative)."""
    hi, lo = x
    return mul(double_word_exp(hi), (jnp.ones_like(hi), lo + lo * lo * 0.5))


SMALL = 2.0 ** -10  # below it, expm1 and sinh by their Taylor series (no cancellation)
_EXPM1_SERIES = [Fraction(0)] + [Fraction(1, math.factorial(k)) for k in range(1, 10)]  # error x^10/10! < 2^-121 |x|
_SINH_SERIES = [Fraction(1, math.factorial(2 * k + 1)) for k in range(5)]  # in x^2, times x


def expm1_pair(x):
    """exp(x) - 1 as a pair, relative error about 2^-100 for every x whose exp is normal."""
    small = jnp.abs(x) < SMALL
    series = horner(pair(jnp.where(small, x, 0)), _EXPM1_SERIES, x)
    big = add(double_word_exp(jnp.where(small, 1, x)), pair(-lax.optimization_barrier(jnp.ones_like(x))))  # no folding
    return jnp.where(small, series[0], big[0]), jnp.where(small, series[1], big[1])


def sinh_pair(x):
    """sinh(x) as a pair: the Taylor series below 2^-10, else exp(x - ln2) - exp(-x - ln2)."""
    small = jnp.abs(x) < SMALL
    xs = jnp.where(small, x, 0)
    series = mul(horner(two_prod(xs, xs), _SINH_SERIES, x), pair(xs))
    xb = jnp.where(small, 1, x)
    ln2 = ln2_pair(x)
    big = sub(exp_of_pair(sub(pair(xb), ln2)), exp_of_pair(sub(pair(-xb), ln2)))
    return jnp.where(small, series[0], big[0]), jnp.where(small, series[1], big[1])


def cosh_pair(x):
    """cosh(x) = exp(|x| - ln2) + exp(-|x| - ln2) as a pair (a sum of positive terms)."""
    a = jnp.abs(x)
    ln2 = ln2_pair(x)
    return add(exp_of_pair(sub(pair(a), ln2)), exp_of_pair(sub(pair(-a), ln2)))


def log_pair(x):
    """log(x) for a positive normal x: y0 = log(x) in the dtype, then one Newton step on exp,
    y1 = y0 + (x - exp(y0)) / exp(y0), with exp(y0) a pair (quadratic convergence from 2^-52)."""
    y0 = jnp.log(x)
    e = double_word_exp(y0)
    r = sub(pair(x), e)
    return fast_two_sum(y0, (r[0] + r[1]) / e[0])
