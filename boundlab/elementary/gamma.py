"""lgamma and digamma as double-word pairs (relative error about 2^-100 in float64 away from
their zeros, absolute about 2^-100 next to them), for their side rules
(``boundlab.elementary.functions``).

For z > 0:

* next to lgamma's zeros 1 and 2 and digamma's zero 1.4616...: the Taylor series at 1 and at 2,
  lgamma(1 + e) = -gamma e + sum_k>=2 (-1)^k zeta(k) e^k / k (|e| <= 1/4),
  lgamma(2 + d) = (1 - gamma) d + sum_k>=2 (-1)^k (zeta(k) - 1) d^k / k (-1/4 <= d <= 1/2),
  digamma(2 + d) = 1 - gamma + sum_k>=1 (-1)^(k+1) (zeta(k + 1) - 1) d^k (-3/4 <= d <= 1/2),
  so the value keeps its relative accuracy as it goes to zero;
* elsewhere the recurrence up to z + n >= 20 and Stirling's series there:
  lgamma(z) = (z - 1/2) log z - z + log(2 pi) / 2 + sum_k B_2k / (2k (2k - 1) z^(2k - 1))
  - log(z (z + 1) ... (z + n - 1)), digamma(z) = log z - 1 / (2z) - sum_k B_2k / (2k z^2k)
  - sum_i 1 / (z + i); at z >= 20 the 18th term is below 2^-107 of the value.

For z < 0 (not an integer), the reflections lgamma(z) = log(pi / |sin(pi z)|) - lgamma(1 - z) and
digamma(z) = digamma(1 - z) - pi cot(pi z), sin(pi z) from z - round(z) (exact).

The constants are exact rationals or computed here to 60 digits: Bernoulli numbers by the
Akiyama-Tanigawa algorithm, zeta(k) by Euler-Maclaurin summation, Euler's gamma as
1 - sum_k>=2 (zeta(k) - 1) / k; the tests check them against MPFR.
"""

from __future__ import annotations

import decimal
import functools
from fractions import Fraction

import jax.numpy as jnp
from jax import lax

from boundlab.elementary import double_word as dw
from boundlab.elementary import trigonometry

_DIGITS = 60
_STIRLING_FROM = 20.0
_STIRLING_TERMS = 18
_SERIES_TERMS = 64  # |e| <= 1/4 at 1 and |d| <= 1/2 at 2: the dropped terms below 2^-120
_DIGAMMA_TERMS = 100  # |d| <= 3/4 at 2: (3/8)^100 < 2^-140


@functools.cache
def bernoulli(n: int) -> tuple[Fraction, ...]:
    """B_0 ... B_n (B_1 = +1/2), exactly (Akiyama-Tanigawa)."""
    a, numbers = [Fraction(0)] * (n + 1), []
    for m in range(n + 1):
        a[m] = Fraction(1, m + 1)
        for j in range(m, 0, -1):
            a[j - 1] = j * (a[j - 1] - a[j])
        numbers.append(a[0])
    return tuple(numbers)


@functools.cache
def zeta(k: int) -> Fraction:
    """zeta(k) for k >= 2 to 60 digits: Euler-Maclaurin with N = 20 and 20 correction terms
    (remainder below 10^-38 for every k >= 2)."""
    b = bernoulli(42)
    with decimal.localcontext() as context:
        context.prec = _DIGITS + 10
        n = decimal.Decimal(20)
        total = sum(decimal.Decimal(i) ** -k for i in range(1, 20))
        total += n ** (1 - k) / (k - 1) + n ** -k / 2
        rising = decimal.Decimal(k)  # k (k + 1) ... (k + 2j - 2)
        factorial = decimal.Decimal(2)
        for j in range(1, 21):
            bj = decimal.Decimal(b[2 * j].numerator) / decimal.Decimal(b[2 * j].denominator)
            total += bj / factorial * rising * n ** (-k - 2 * j + 1)
            rising *= (k + 2 * j - 1) * (k + 2 * j)
            factorial *= (2 * j + 1) * (2 * j + 2)
        return Fraction(total)


@functools.cache
def euler_gamma() -> Fraction:
    """Euler's gamma = 1 - sum_k>=2 (zeta(k) - 1) / k (terms below 2^-k / k; 200 of them)."""
    return 1 - sum((zeta(k) - 1) / k for k in range(2, 202))


@functools.cache
def _log_two_pi_half() -> Fraction:
    with decimal.localcontext() as context:
        context.prec = _DIGITS
        return Fraction((2 * trigonometry.pi_decimal()).ln() / 2)


@functools.cache
def _log_pi() -> Fraction:
    with decimal.localcontext() as context:
        context.prec = _DIGITS
        return Fraction(trigonometry.pi_decimal().ln())


def _log_of_pair(z):
    """log(hi + lo) = log(hi) + lo / hi (the dropped (lo / hi)^2 / 2 is below 2^-106)."""
    return dw.add(dw.log_pair(z[0]), dw.pair(z[1] / z[0]))


def _shift(z):
    """(z + n, n) with n the number of i = 0, 1, ... with z + i < 20, for the recurrences."""
    n = jnp.maximum(jnp.ceil(_STIRLING_FROM - z[0]), 0)
    return dw.add(z, dw.pair(n)), n


def _lgamma_positive(z):
    """lgamma(z) for a pair z > 0."""
    like = z[0]
    one, two = jnp.ones_like(like), 2 * jnp.ones_like(like)
    gamma = euler_gamma()
    at_one = [Fraction(0), -gamma] + [Fraction((-1) ** k) * zeta(k) / k for k in range(2, _SERIES_TERMS)]
    at_two = [Fraction(0), 1 - gamma] + [Fraction((-1) ** k) * (zeta(k) - 1) / k for k in range(2, _SERIES_TERMS)]
    e = dw.sub(z, dw.pair(dw.ones(like)))
    d = dw.sub(z, dw.pair(2 * dw.ones(like)))
    near_one = jnp.abs(z[0] - one) <= 0.25
    near_two = (z[0] - two >= -0.25) & (z[0] - two <= 0.5)
    series_one = dw.horner(dw.select(near_one, e, dw.pair(jnp.zeros_like(like))), at_one, like, loop=True)
    series_two = dw.horner(dw.select(near_two, d, dw.pair(jnp.zeros_like(like))), at_two, like, loop=True)
    # the recurrence: lgamma(z) = lgamma(z + n) - log(z (z + 1) ... (z + n - 1))
    general = dw.select(near_one | near_two, dw.pair(one * 3), z)
    shifted, n = _shift(general)

    def factor(i, product):
        term = dw.add(general, dw.pair(jnp.full_like(like, i)))
        return dw.select(jnp.asarray(i, like.dtype) < n, dw.mul(product, term), product)

    product = lax.fori_loop(0, int(_STIRLING_FROM) + 1, factor, dw.pair(one))
    w = dw.div(dw.pair(one), shifted)
    b = bernoulli(2 * _STIRLING_TERMS)
    terms = [b[2 * k] / (2 * k * (2 * k - 1)) for k in range(1, _STIRLING_TERMS + 1)]
    corrections = dw.horner(dw.mul(w, w), terms, like, loop=True)
    stirling = dw.mul(dw.sub(shifted, dw.pair(jnp.full_like(like, 0.5))), _log_of_pair(shifted))
    stirling = dw.add(dw.sub(stirling, shifted), dw.constant_pair(_log_two_pi_half(), like))
    stirling = dw.add(stirling, dw.mul(corrections, w))
    value = dw.sub(stirling, _log_of_pair(product))
    return dw.select(near_one, series_one, dw.select(near_two, series_two, value))


def _sin_cos_pi(x):
    """(sin(pi f), cos(pi f)) as pairs with f = x - round(x) (exact), |f| <= 1/2."""
    f = x - jnp.round(x)
    angle = dw.mul(dw.constant_pair(trigonometry.PI, x), dw.pair(f))
    sine, cosine = trigonometry.sin_cos_pair(angle[0])  # sin(h + l) = sin h + l cos h, cos h - l sin h
    low = angle[1]
    return dw.add(sine, dw.mul(cosine, dw.pair(low))), dw.sub(cosine, dw.mul(sine, dw.pair(low)))


def _reflected_argument(x):
    """(positive, z, f): z = x where x > 0, else 1 - x as a pair; f = x where x < 0 is not a
    pole, else -1/2 (a placeholder for the reflection's sin(pi x))."""
    positive = x > 0
    f = jnp.where(positive | (x == jnp.round(x)), -0.5, x)
    z = dw.select(positive, dw.pair(jnp.where(positive, x, 1)), dw.two_sum(dw.ones(x), -f))
    return positive, z, f


def _at_poles_nan(x, value):
    """NaN at the poles 0, -1, -2, ... and at non-finite x (no pair there)."""
    bad = ((x <= 0) & (x == jnp.round(x))) | ~jnp.isfinite(x)
    return jnp.where(bad, jnp.nan, value[0]), jnp.where(bad, jnp.nan, value[1])


def lgamma_pair(x):
    """lgamma(x) = log|Gamma(x)| as a pair for finite x that is not a pole (0, -1, -2, ...); for
    x < 0, log(pi) - log|sin(pi x)| - lgamma(1 - x)."""
    positive, z, f = _reflected_argument(x)
    value = _lgamma_positive(z)
    sine, _ = _sin_cos_pi(f)
    sine = dw.select(sine[0] < 0, dw.neg(sine), sine)
    reflected = dw.sub(dw.sub(dw.constant_pair(_log_pi(), x), _log_of_pair(sine)), value)
    return _at_poles_nan(x, dw.select(positive, value, reflected))


def _digamma_positive(z):
    """digamma(z) for a pair z > 0."""
    like = z[0]
    one = jnp.ones_like(like)
    gamma = euler_gamma()
    at_two = [1 - gamma] + [Fraction((-1) ** (k + 1)) * (zeta(k + 1) - 1) for k in range(1, _DIGAMMA_TERMS)]
    d = dw.sub(z, dw.pair(2 * dw.ones(like)))
    near = (z[0] >= 1.25) & (z[0] <= 2.5)
    series = dw.horner(dw.select(near, d, dw.pair(jnp.zeros_like(like))), at_two, like, loop=True)
    general = dw.select(near, dw.pair(one * 3), z)
    shifted, n = _shift(general)

    def reciprocal(i, total):
        term = dw.div(dw.pair(one), dw.add(general, dw.pair(jnp.full_like(like, i))))
        return dw.select(jnp.asarray(i, like.dtype) < n, dw.add(total, term), total)

    reciprocals = lax.fori_loop(0, int(_STIRLING_FROM) + 1, reciprocal, dw.pair(jnp.zeros_like(like)))
    w = dw.div(dw.pair(one), shifted)
    w2 = dw.mul(w, w)
    b = bernoulli(2 * _STIRLING_TERMS)
    terms = [Fraction(0)] + [b[2 * k] / (2 * k) for k in range(1, _STIRLING_TERMS + 1)]
    corrections = dw.horner(w2, terms, like, loop=True)
    asymptotic = dw.sub(dw.sub(_log_of_pair(shifted), dw.mul(w, dw.pair(jnp.full_like(like, 0.5)))), corrections)
    value = dw.sub(asymptotic, reciprocals)
    return dw.select(near, series, value)


def digamma_minus(x, b):
    """digamma(x) - b as a pair for finite x that is not a pole (0, -1, -2, ...): for x < 0,
    digamma(1 - x) - pi cos(pi x) / sin(pi x) - b; next to the pole at 0 (|x| < 1/4),
    digamma(1 + x) - (1 + b x) / x with 1 + b x exact, since a pair of digamma(x) ~ -1/x cannot hold
    the -0.58 below a huge -1/x (x = -2^-127) that decides against b = -1/x."""
    positive, z, f = _reflected_argument(x)
    small = (jnp.abs(x) < 0.25) & (x != 0)
    xs = jnp.where(small, x, 0.125)
    value = _digamma_positive(dw.select(small, dw.two_sum(dw.ones(x), xs), z))
    sine, cosine = _sin_cos_pi(f)
    reflected = dw.sub(value, dw.mul(dw.constant_pair(trigonometry.PI, x), dw.div(cosine, sine)))
    far = dw.sub(dw.select(positive, value, reflected), dw.pair(b))
    p, e = dw.two_prod(jnp.where(small, b, 0), xs)
    near = dw.sub(value, dw.div(dw.add(dw.two_sum(dw.ones(x), p), dw.pair(e)), dw.pair(xs)))
    return _at_poles_nan(x, dw.select(small, near, far))


def digamma_pair(x):
    """digamma(x) as a pair for finite x that is not a pole (``digamma_minus`` with b = 0)."""
    return digamma_minus(x, jnp.zeros_like(x))
