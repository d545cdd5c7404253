"""sin and cos as double-word pairs (relative error about 2^-100 in float64), for the side rules of
the trigonometric functions and their inverses (``boundlab.elementary.functions``).

x = k pi/2 + r with k = round(2x / pi) and r from pi/2 in four parts (Cody-Waite: k P1, k P2, k P3
exact for |k| < 2^20, P1-P3 of 32 bits each, the fourth a pair), then sin r and cos r by their
Taylor polynomials in r^2 (|r| <= pi/4: the first dropped terms r^29/29! and r^28/28! are below
2^-104 relative), and the quadrant k mod 4.  Arguments beyond |x| = 2^20 (float32: 2^10) get no
pair (``REDUCIBLE``): their side rules say "unknown" and the wide value is rounded.
"""

from __future__ import annotations

import decimal
import math
from fractions import Fraction

import jax.numpy as jnp
import numpy as np

from boundlab.elementary import double_word as dw

# pi to 110 digits (checked against MPFR's const_pi: 3e-111)
PI = Fraction(decimal.Decimal(
    "3.14159265358979323846264338327950288419716939937510582097494459230781640628620899862803482534211706798214808651"))
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


def sin_cos_pair(x):
    """(sin x, cos x) as pairs where ``reducible(x)`` (elsewhere meaningless: callers mask)."""
    x = jnp.where(reducible(x), x, 0)
    p1, p2, p3, (p4, p5) = _parts(x.dtype)
    k = jnp.round(x * x.dtype.type(2 / math.pi))
    r = dw.two_sum(x - k * p1, -(k * p2))  # x - k P1 exact (Sterbenz); k P2, k P3 exact
    r = dw.add(r, dw.pair(-(k * p3)))
    r = dw.sub(r, dw.mul(dw.pair(k), (jnp.full_like(x, p4), jnp.full_like(x, p5))))
    r2 = dw.mul(r, r)
    sine = dw.mul(dw.horner(r2, _SIN, x), r)
    cosine = dw.horner(r2, _COS, x)
    quadrant = jnp.mod(k, 4).astype(jnp.int32)

    def pick(a, b, c, d):
        return tuple(jnp.select([quadrant == 0, quadrant == 1, quadrant == 2], [a[i], b[i], c[i]], d[i]) for i in range(2))

    return pick(sine, cosine, dw.neg(sine), dw.neg(cosine)), pick(cosine, dw.neg(sine), dw.neg(cosine), sine)


def reducible(x):
    return jnp.abs(x) <= REDUCIBLE[np.dtype(x.dtype)]
