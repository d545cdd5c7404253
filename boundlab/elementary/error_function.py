"""The error function's side rules in pairs: erf by its Taylor series to |x| = 4, erfc(x) beyond 4
by Laplace's continued fraction, and erf(x) beyond 4 as 1 - erfc(|x|) (``boundlab.elementary.functions``).
"""

from __future__ import annotations

import decimal
import functools
from fractions import Fraction

import jax.numpy as jnp
from jax import lax

from boundlab.elementary import double_word as dw
from boundlab.elementary import trigonometry


@functools.cache
def root_pi() -> Fraction:
    """sqrt(pi) to 60 digits."""
    with decimal.localcontext() as context:
        context.prec = 60
        return Fraction(trigonometry.pi_decimal().sqrt())


def _two_over_root_pi() -> Fraction:
    return 2 / root_pi()


_ERF_TERMS = 100  # (2/sqrt pi) sum_n (-1)^n x^(2n+1) / (n! (2n+1)): at |x| = 4 the terms fall below 2^-120
SERIES_LIMIT = 4.0


def _reciprocal_pair(n):
    """1/n as a pair for a float n holding an integer."""
    hi = 1 / n
    p, e = dw.two_prod(hi, n)
    return hi, ((1 - p) - e) / n


def erf_pair(x):
    """erf(x) as a pair for |x| <= 4 by its Taylor series (at most 17 bits cancel there); 0 beyond
    (callers use ``erfc_tail_vs`` there)."""
    a = jnp.abs(x)
    s = jnp.where(a <= SERIES_LIMIT, a, 0)
    minus_square = dw.neg(dw.two_prod(s, s))

    def step(_, carry):
        # n is carried as an array: computed from the loop index it is a broadcast scalar, and
        # XLA:CPU then evaluates the pairs' divisions by it less exactly (measured: 2^-42 in erf)
        term, total, n = carry
        n = n + 1
        term = dw.mul(dw.mul(term, minus_square), _reciprocal_pair(n))
        return term, dw.add(total, dw.mul(term, _reciprocal_pair(2 * n + 1))), n

    start = dw.pair(s)
    _, total, _ = lax.fori_loop(1, _ERF_TERMS, step, (start, start, jnp.zeros_like(x)))
    value = dw.mul(total, dw.constant_pair(_two_over_root_pi(), x))
    return dw.select(jnp.signbit(x), dw.neg(value), value)


_ERFC_FRACTION_DEPTH = 80  # Laplace's continued fraction to depth 80: relative error below 2^-122 for x >= 4


def erfc_tail_vs(x, c):
    """sign(erfc(x) - c) for x >= 4 (elsewhere meaningless) and c > 0: erfc(x) = e^(-x^2) / sqrt(pi)
    / (x + (1/2) / (x + 1 / (x + (3/2) / (x + ...)))), the fraction evaluated from depth 80 up in
    pairs, e^(-x^2) with x^2 as a pair, lifted by 2^600 where c is tiny (``double_word.lift``)."""
    x = jnp.where(x >= SERIES_LIMIT, x, SERIES_LIMIT)
    half = jnp.full_like(x, 0.5)

    def level(i, t):  # t_(n-1) = x + (n/2) / t_n, n = depth - i
        n = (_ERFC_FRACTION_DEPTH - i) * half
        return dw.add(dw.pair(x), dw.div(dw.pair(n), t))

    fraction = lax.fori_loop(0, _ERFC_FRACTION_DEPTH, level, dw.pair(x))
    k, lifted = dw.lift(c)
    exponent = dw.add(dw.neg(dw.two_prod(x, x)), dw.mul(dw.pair(k), dw.ln2_pair(x)))
    value = dw.div(dw.mul(dw.exp_of_pair(exponent), dw.constant_pair(1 / root_pi(), x)), fraction)
    return dw.sign(dw.sub(value, dw.pair(lifted)))


def erf_vs(x, c):
    """sign(erf(x) - c) for |c| < 1: the series to |x| = 4; beyond, with s = sign(x),
    erf(x) - c = -s (erfc(|x|) - (1 - s c)), 1 - s c exact when c is near erf(x) (Sterbenz)."""
    s = jnp.sign(x).astype(x.dtype)
    tail = -s * erfc_tail_vs(jnp.abs(x), dw.ones(c) - s * c)
    return jnp.where(jnp.abs(x) <= SERIES_LIMIT, dw.sign(dw.sub(erf_pair(x), dw.pair(c))), tail)
