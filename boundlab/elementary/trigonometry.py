"""sin and cos as double-word pairs (relative error about 2^-100 in float64), for the side rules of
the trigonometric functions and their inverses (``boundlab.elementary.functions``).

x = k pi/2 + r with |r| <= pi/4 (about), then sin r and cos r by their Taylor polynomials in r^2
(the first dropped terms r^29/29! and r^28/28! are below 2^-104 relative) and the quadrant k mod 4.
The reduction:

* up to |x| = 2^20 (float32: 2^10), Cody-Waite: k = round(2x / pi) and r from pi/2 in four parts
  (k P1, k P2, k P3 exact, P1-P3 of 32 bits each (float32: 12), the fourth a pair);
* beyond, Payne-Hanek: x = M 2^E (M an integer of p bits) times 2/pi, whose bits are held in
  chunks C_j = c_j 2^(-w (j + 1)) of w = 24 bits (float32: 12).  The products x C_j with
  E - w (j + 1) >= 2 are multiples of 4 and drop out (they change k by multiples of 4); of the
  others, K = 12 are formed exactly (TwoProduct of M and c_j, scaled by a power of two), reduced
  mod 4 (``fmod`` is exact) and summed exactly (VecSum passes until the terms no longer
  overlap); the nearest integer is k, the rest times pi/2 in pairs is r.  The chunks dropped
  beyond the K-th add less than 2^(p + w + 2 - w K) (2^-209 in float64, 2^-106 in float32) to
  x 2/pi - k, far below the closest approach of a float to a multiple of pi/2 (2^-61 in float64,
  x = 6381956970095103 2^797; Muller, Elementary Functions, Table 11.1), so r keeps its relative
  accuracy for every finite argument.

pi comes from Machin's formula in integer arithmetic (``pi_fixed``: 1,500 bits, checked against
MPFR's const_pi in the tests).
"""

from __future__ import annotations

import decimal
import functools
import math
from fractions import Fraction

import jax.numpy as jnp
import numpy as np
from jax import lax

from boundlab.elementary import double_word as dw



def _arctan_inverse(n: int, bits: int) -> int:
    """floor-ish of atan(1/n) 2^bits by its series in integers (each term truncated: error below
    one unit per term)."""
    total, power, k, n2 = 0, (1 << bits) // n, 1, n * n
    while power:
        total += power // k if k % 4 == 1 else -(power // k)
        power //= n2
        k += 2
    return total


@functools.cache
def pi_fixed(bits: int) -> int:
    """round(pi 2^bits) within a unit: Machin's pi = 16 atan(1/5) - 4 atan(1/239), with 64 guard bits."""
    guard = 64
    wide = 16 * _arctan_inverse(5, bits + guard) - 4 * _arctan_inverse(239, bits + guard)
    return (wide + (1 << (guard - 1))) >> guard


_PI_BITS = 1500
PI = Fraction(pi_fixed(_PI_BITS), 1 << _PI_BITS)  # within 2^-1500 of pi


def pi_decimal() -> decimal.Decimal:
    """pi in the current ``decimal`` context's precision (from ``PI``)."""
    return decimal.Decimal(PI.numerator) / decimal.Decimal(PI.denominator)
REDUCIBLE = {np.dtype(np.float64): 2.0 ** 20, np.dtype(np.float32): 2.0 ** 10}  # |x| below which k P_i is exact
_SIN = [Fraction((-1) ** k, math.factorial(2 * k + 1)) for k in range(14)]  # in r^2, times r
_COS = [Fraction((-1) ** k, math.factorial(2 * k)) for k in range(15)]


def _parts(dtype):
    """pi/2 = P1 + P2 + P3 + (P4 + P5): three parts of 32 bits (float32: 12), then a pair."""
    bits = 32 if np.dtype(dtype) == np.float64 else 12
    rest, parts = PI / 2, []
    for _ in range(3):
        hi, _ = dw.constant(rest, dtype, bits=bits)
        parts.append(hi)
        rest -= Fraction(float(hi))
    parts.append(dw.constant(rest, dtype))
    return parts


def _cody_waite(x):
    """(k, r) with x = k pi/2 + r for |x| <= ``REDUCIBLE``."""
    x = jnp.where(reducible(x), x, 0)
    p1, p2, p3, (p4, p5) = _parts(x.dtype)
    k = jnp.round(x * x.dtype.type(2 / math.pi))
    r = dw.two_sum(x - k * p1, -(k * p2))  # x - k P1 exact (Sterbenz); k P2, k P3 exact
    r = dw.add(r, dw.pair(-(k * p3)))
    return k, dw.sub(r, dw.mul(dw.pair(k), (jnp.full_like(x, p4), jnp.full_like(x, p5))))


_CHUNK_BITS = {np.dtype(np.float64): 24, np.dtype(np.float32): 12}
_CHUNKS_KEPT = 12


@functools.cache
def _two_over_pi_chunks(dtype):
    """The integers c_j (as floats) with 2/pi = sum_j c_j 2^(-w (j + 1)), enough of them for every
    finite x of ``dtype``."""
    dtype = np.dtype(dtype)
    w, p = _CHUNK_BITS[dtype], dw.PRECISION[dtype]
    largest_exponent = int(np.finfo(dtype).maxexp) - p  # x = M 2^E, E at most this
    count = -(-(largest_exponent - 1) // w) + _CHUNKS_KEPT + 1
    bits = count * w
    scaled = (1 << (bits + _PI_BITS + 1)) // pi_fixed(_PI_BITS)  # 2/pi 2^bits (error below 2)
    assert bits + 8 < _PI_BITS
    return np.array([(scaled >> (w * (count - 1 - j))) & ((1 << w) - 1) for j in range(count)], dtype)


def _pair_sum(terms):
    """A non-overlapping expansion (smallest first) summed into a pair."""
    return lax.fori_loop(1, terms.shape[0], lambda i, acc: dw.add(acc, dw.pair(terms[i])), dw.pair(terms[0]))


def _payne_hanek(a):
    """(k, r) with a = k pi/2 + r, |r| <= pi/4 (about), for finite a >= 0 of any size."""
    dtype = np.dtype(a.dtype)
    w, p = _CHUNK_BITS[dtype], dw.PRECISION[dtype]
    table = jnp.asarray(_two_over_pi_chunks(dtype))
    _, e = jnp.frexp(a)
    exponent = e - p  # a = M 2^E
    mantissa = jnp.ldexp(a, -exponent)  # M, an integer below 2^p
    first = jnp.maximum(0, -(-(exponent - 1) // w) - 1)  # the first chunk whose product is not a multiple of 4
    index = first[None] + jnp.arange(_CHUNKS_KEPT, dtype=first.dtype).reshape((-1,) + (1,) * a.ndim)
    hi, lo = dw.two_prod(jnp.broadcast_to(mantissa, index.shape), jnp.take(table, index, mode="clip"))
    power = dw.power_of_two(exponent[None] - w * (index + 1), dtype)  # x C_j = M c_j 2^(E - w (j + 1))
    terms = jnp.concatenate([jnp.fmod(lo * power, 4)[::-1], jnp.fmod(hi * power, 4)[::-1]])  # smallest first
    exact = dw.vec_sum(terms)
    k = jnp.round(exact[-1])
    # the largest part minus k is exact (k is 0 or within a factor 2 of it) and, when not 0, at least
    # an ulp of the largest part, twice the rest: the pair sum of the parts has no cancellation
    quarter_turns = _pair_sum(exact.at[-1].add(-k))
    return jnp.mod(k, 4), dw.mul(quarter_turns, dw.constant_pair(PI / 2, a))


def _reduce(x):
    """(k, r) with x = k pi/2 + r: Cody-Waite where ``reducible``, Payne-Hanek where any element
    is beyond (only then is it computed)."""
    k, r = _cody_waite(x)
    large = ~reducible(x) & jnp.isfinite(x)

    def beyond(_):
        a = jnp.where(large, jnp.abs(x), 0)
        kb, rb = _payne_hanek(a)
        negative = jnp.signbit(x)  # -a = -k pi/2 - r
        kb, rb = jnp.where(negative, -kb, kb), dw.select(negative, dw.neg(rb), rb)
        return jnp.where(large, kb, k), dw.select(large, rb, r)

    return lax.cond(jnp.any(large), beyond, lambda _: (k, r), None)


def sin_cos_pair(x):
    """(sin x, cos x) as pairs for finite x (elsewhere meaningless: callers mask)."""
    k, r = _reduce(x)
    r2 = dw.mul(r, r)
    sine = dw.mul(dw.horner(r2, _SIN, x), r)
    cosine = dw.horner(r2, _COS, x)
    quadrant = jnp.mod(k, 4).astype(jnp.int32)

    def pick(a, b, c, d):
        return tuple(jnp.select([quadrant == 0, quadrant == 1, quadrant == 2], [a[i], b[i], c[i]], d[i]) for i in range(2))

    return pick(sine, cosine, dw.neg(sine), dw.neg(cosine)), pick(cosine, dw.neg(sine), dw.neg(cosine), sine)


def reducible(x):
    """Where Cody-Waite's reduction is exact (beyond: Payne-Hanek)."""
    return jnp.abs(x) <= REDUCIBLE[np.dtype(x.dtype)]
