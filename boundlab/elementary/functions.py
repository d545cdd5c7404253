"""Every elementwise function ``emulate`` accepts, correctly rounded in every mode.

``rounded(primitive, params, fmt, mode)`` evaluates the primitive in the wide float, moves the
values near a rounding boundary to the side of it where the exact value lies
(``boundlab.elementary.boundary``) and rounds once, as Model 4.1 asks.  Each function has a
side rule: side(args, b) = sign(f(args) - b) for a boundary b near f(args), from

* what is known exactly: saturation (|tanh x| < 1, 0 < logistic(x) < 1, |erf x| < 1,
  erfc(x) > 0, expm1(x) > -1, |sin x| < 1 and cos(x) > -1 at every nonzero format number, which
  is never a multiple of pi/2), the tangent at zero (tanh(x) < x < sinh(x), log1p(x) < x < expm1(x),
  sin, tan, atan, asin, asinh, atanh on their side of x), and exact values (cos(0) = 1,
  exp2(k) = 2^k, log(1) = 0, lgamma(1) = lgamma(2) = 0, cbrt(8) = 2);
* or, near any other boundary, a double-word value (``boundlab.elementary.double_word``, relative
  error about 2^-100 in float64): the exp family through exp and its inverse (log: sign(x - exp b),
  log1p, expm1, exp2, tanh: sign(e^2x (1 - b) - (1 + b)), logistic, sinh, cosh, asinh, acosh,
  atanh, pow: y log x against log b), sin and cos by Cody-Waite or Payne-Hanek reduction and
  Taylor in pairs (``boundlab.elementary.trigonometry``; tan: sign((sin x - b cos x) cos x)), their
  inverses through sin and cos of the boundary (atan2: sign(y cos b - x sin b)), erf by its Taylor
  series to |x| = 4, erfc = 1 - erf to x = 4 and Laplace's continued fraction beyond
  (``boundlab.elementary.error_function``), erf_inv through erf of the boundary
  (sign(x - erf b)), lgamma and digamma by their pairs, and error-free sums for rsqrt
  (sign(1 - b^2 x)) and cbrt (sign(x - b^3)).

lgamma and digamma (``boundlab.elementary.gamma``) take their wide value from their pairs too (the
Taylor series at 1 and 2 next to their zeros, Stirling's series after the recurrence, the
reflection for x < 0): XLA's err without bound in relative terms next to the zeros.  Where no
rule applies (NaN: poles, overflow) the wide value is rounded.

``integer_pow`` is not here: Model 4.1 evaluates x**n as XLA does, by repeated rounded
multiplications (``boundlab.emulation``).
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from boundlab.elementary import boundary
from boundlab.elementary import double_word as dw
from boundlab.elementary import error_function
from boundlab.elementary import gamma
from boundlab.elementary import trigonometry
from boundlab.formats import Format
from boundlab.runtime.x64 import x64_enabled

_NAN = float("nan")


@dataclasses.dataclass(frozen=True)
class Rule:
    """How one function is rounded correctly: ``side(args, b)`` (wide arrays; the sign of the
    exact value minus b, NaN where unknown); ``finite(args)``: where the function is finite at
    finite arguments (a wide overflow there is a huge finite value, not infinity); ``margin``:
    the wide function's trusted ulps in float64 (``margin32``: in float32, where it differs)."""

    side: Callable
    finite: Callable | None = None
    margin: float = boundary.MARGIN_ULPS
    special: Callable | None = None  # (args, y) -> y with IEEE 754's special values where XLA differs
    value: Callable | None = None  # (args) -> the wide value, where XLA's own is not within the margin
    margin32: float | None = None

    def margin_for(self, wide) -> float:
        """The trusted ulps of the wide function in the dtype ``wide``."""
        return self.margin32 if (self.margin32 is not None and np.dtype(wide) == np.float32) else self.margin


def _sign(x):
    return jnp.sign(x).astype(x.dtype)


def _exp_vs(a, c):
    """sign(exp(a) - c) for exp(a) normal (lifted by 2^600 where c is tiny)."""
    k, lifted = dw.lift(c)
    argument = dw.add(dw.pair(a), dw.mul(dw.pair(k), dw.ln2_pair(a)))
    return dw.sign(dw.sub(dw.exp_of_pair(argument), dw.pair(lifted)))


def _tanh_vs(a, c):
    """sign(tanh(a) - c) for |c| < 1: (e^2a + 1)(tanh a - c) = e^2a (1 - c) - (1 + c)."""
    e = dw.double_word_exp(jnp.clip(2 * a, -700, 700))
    one = dw.ones(c)
    return dw.sign(dw.sub(dw.mul(e, dw.two_sum(one, -c)), dw.two_sum(one, c)))


def _logistic_vs(a, c):
    """sign(logistic(a) - c) for 0 < c < 1: (1 + e^-a)(logistic a - c) = (1 - c) - c e^-a."""
    e = dw.double_word_exp(jnp.clip(-a, -708, 708))
    return dw.sign(dw.sub(dw.two_sum(dw.ones(c), -c), dw.mul(dw.pair(c), e)))


def _series_pair(x, coefficients):
    return dw.horner(dw.pair(x), coefficients, x)


_LOG1P_SERIES = [Fraction(0)] + [Fraction((-1) ** (k + 1), k) for k in range(1, 13)]  # error < 2^-120 |x|


def _exact_sign(terms):
    """sign of an exact sum of floats: VecSum passes (``double_word.vec_sum``) until the components
    no longer overlap; the sign is the largest nonzero component's."""
    parts = dw.vec_sum(jnp.stack(jnp.broadcast_arrays(*terms)))
    result = jnp.zeros_like(parts[0])
    for i in range(parts.shape[0]):  # smallest first: a larger nonzero component overrides
        result = jnp.where(parts[i] != 0, jnp.sign(parts[i]), result)
    return result.astype(parts.dtype)


def _cube_minus(x, b):
    """sign(x - b^3), exactly (b scaled to [0.5, 1) first: no overflow)."""
    m, k = jnp.frexp(b)
    xs = jnp.ldexp(x, -3 * k)
    b1, b2 = dw.two_prod(m, m)
    p1, p2 = dw.two_prod(b1, m)
    q1, q2 = dw.two_prod(b2, m)
    return _exact_sign([-q2, -q1, -p2, -p1, xs])


def _one_minus_square_times(b, x):
    """sign(1 - b^2 x), exactly."""
    m, k = jnp.frexp(b)
    xs = jnp.ldexp(x, 2 * k)
    b1, b2 = dw.two_prod(m, m)
    p1, p2 = dw.two_prod(b1, xs)
    q1, q2 = dw.two_prod(b2, xs)
    return _exact_sign([-q2, -q1, -p2, -p1, dw.ones(x)])


# -- the side rules: sign(f(args) - b) -------------------------------------------------------------

def _tanh(args, b):
    (x,) = args
    return jnp.where(b == 0, _sign(x), jnp.where(jnp.abs(b) == 1, jnp.where(jnp.isinf(x), 0, -_sign(b)),
                     jnp.where(b == x, -_sign(x), _tanh_vs(x, b))))


def _atanh(args, b):
    (x,) = args  # atanh(x) - b has the sign of x - tanh(b)
    return jnp.where(b == 0, _sign(x), jnp.where(b == x, _sign(x), -_tanh_vs(b, x)))


def _logistic(args, b):
    (x,) = args
    return jnp.where(b == 1, jnp.where(x == np.inf, 0, -1), jnp.where(b == 0, jnp.where(x == -np.inf, 0, 1),
                     jnp.where(b == 0.5, _sign(x), _logistic_vs(x, b)))).astype(x.dtype)


def _log(args, b):
    (x,) = args  # log(x) - b has the sign of x - exp(b)
    return jnp.where(b == 0, _sign(x - 1), jnp.where(b < -708, _NAN, -_exp_vs(b, x)))


def _log1p(args, b):
    (x,) = args
    small = jnp.abs(x) < dw.SMALL
    series = dw.sign(dw.sub(_series_pair(jnp.where(small, x, 0), _LOG1P_SERIES), dw.pair(b)))
    general = dw.sign(dw.sub(dw.two_sum(dw.ones(x), x), dw.double_word_exp(b)))  # (1 + x) - exp(b)
    return jnp.where(b == 0, _sign(x), jnp.where(b == x, -1, jnp.where(small, series, general))).astype(x.dtype)


def _expm1(args, b):
    (x,) = args
    return jnp.where(b == 0, _sign(x), jnp.where(b == -1, jnp.where(x == -np.inf, 0, 1),
                     jnp.where(b == x, 1, dw.sign(dw.sub(dw.expm1_pair(x), dw.pair(b)))))).astype(x.dtype)


def _exp2(args, b):
    (x,) = args
    power = dw.power_of_two(jnp.clip(x, -1100, 1100).astype(jnp.int32), x.dtype)  # 2^k exactly at an integer k
    k, lifted = dw.lift(b)  # 2^x 2^k = 2^(x + k), x + k exact
    argument = dw.mul(dw.pair(jnp.clip(x, -1000, 1000) + k), dw.ln2_pair(x))
    general = dw.sign(dw.sub(dw.exp_of_pair(argument), dw.pair(lifted)))
    return jnp.where(b == 0, jnp.where(x == -np.inf, 0, 1),
                     jnp.where(x == jnp.round(x), _sign(power - b), general)).astype(x.dtype)


def _sinh(args, b):
    (x,) = args
    return jnp.where(b == 0, _sign(x), jnp.where(b == x, _sign(x),
                     dw.sign(dw.sub(dw.sinh_pair(x), dw.pair(b))))).astype(x.dtype)


def _asinh(args, b):
    (x,) = args  # asinh(x) - b has the sign of x - sinh(b)
    return jnp.where(b == 0, _sign(x), jnp.where(b == x, -_sign(x),
                     -dw.sign(dw.sub(dw.sinh_pair(b), dw.pair(x))))).astype(x.dtype)


def _cosh(args, b):
    (x,) = args
    return jnp.where(b == 1, jnp.where(x == 0, 0, 1), dw.sign(dw.sub(dw.cosh_pair(x), dw.pair(b)))).astype(x.dtype)


def _acosh(args, b):
    (x,) = args  # acosh(x) - b has the sign of x - cosh(b) for b >= 0
    return jnp.where(b == 0, jnp.where(x == 1, 0, 1), -dw.sign(dw.sub(dw.cosh_pair(b), dw.pair(x)))).astype(x.dtype)


def _rsqrt(args, b):
    (x,) = args
    return jnp.where(b == 0, _NAN, _one_minus_square_times(b, x))


def _cbrt(args, b):
    (x,) = args
    return jnp.where(b == 0, _sign(x), _cube_minus(x, b))


def _erf(args, b):
    (x,) = args
    return jnp.where(b == 0, _sign(x), jnp.where(jnp.abs(b) == 1, jnp.where(jnp.isinf(x), 0, -_sign(b)),
                     error_function.erf_vs(x, jnp.where(jnp.abs(b) < 1, b, 0)))).astype(x.dtype)


def _erfc(args, b):
    (x,) = args  # 1 - erf(x) to |x| = 4; beyond, the continued fraction (erfc(-x) = 2 - erfc(x))
    middle = dw.sign(dw.sub(dw.sub(dw.pair(dw.ones(x)), error_function.erf_pair(x)), dw.pair(b)))
    right = error_function.erfc_tail_vs(x, jnp.where(b > 0, b, 1))
    left = -error_function.erfc_tail_vs(-x, jnp.where(b < 2, 2 - b, 1))  # 2 - b exact for b near 2
    general = jnp.where(x > error_function.SERIES_LIMIT, right, jnp.where(x < -error_function.SERIES_LIMIT, left, middle))
    return jnp.where(b == 0, jnp.where(x == np.inf, 0, 1), jnp.where(b == 2, jnp.where(x == -np.inf, 0, -1),
                     jnp.where(b == 1, -_sign(x), general))).astype(x.dtype)


def _sin(args, b):
    (x,) = args  # |sin x| < |x| and |sin x| < 1 at every nonzero format number
    sine, _ = trigonometry.sin_cos_pair(x)
    general = dw.sign(dw.sub(sine, dw.pair(b)))
    return jnp.where(b == 0, _sign(x), jnp.where(b == x, -_sign(x), jnp.where(jnp.abs(b) == 1, -_sign(b), general)))


def _cos(args, b):
    (x,) = args
    _, cosine = trigonometry.sin_cos_pair(x)
    general = dw.sign(dw.sub(cosine, dw.pair(b)))
    return jnp.where(b == 1, jnp.where(x == 0, 0, -1), jnp.where(b == -1, 1, general)).astype(x.dtype)


def _tan(args, b):
    (x,) = args  # |tan x| > |x|; tan x - b has the sign of (sin x - b cos x) cos x
    sine, cosine = trigonometry.sin_cos_pair(x)
    d = dw.sub(sine, dw.mul(dw.pair(b), cosine))
    general = dw.sign(d) * dw.sign(cosine)
    return jnp.where(b == 0, _sign(x), jnp.where(b == x, _sign(x), general))


def _x_cos_minus_sin(y, x, b):
    """sign(y cos b - x sin b): for the angle t of (x, y) near b, the sign of sin(t - b) = of t - b."""
    sine, cosine = trigonometry.sin_cos_pair(b)
    return dw.sign(dw.sub(dw.mul(dw.pair(y), cosine), dw.mul(dw.pair(x), sine)))


def _atan(args, b):
    (x,) = args  # |atan x| < |x|; atan x - b has the sign of x cos b - sin b (|b| < pi/2)
    return jnp.where(b == 0, _sign(x), jnp.where(b == x, -_sign(x), _x_cos_minus_sin(x, dw.ones(x), b)))


def _asin(args, b):
    (x,) = args  # |asin x| > |x|; asin x - b has the sign of x - sin b (|b| <= pi/2)
    sine, _ = trigonometry.sin_cos_pair(b)
    return jnp.where(b == 0, _sign(x), jnp.where(b == x, _sign(x), -dw.sign(dw.sub(sine, dw.pair(x)))))


def _acos(args, b):
    (x,) = args  # acos decreases: acos x - b has the sign of cos b - x (0 <= b <= pi)
    _, cosine = trigonometry.sin_cos_pair(b)
    return jnp.where(b == 0, jnp.where(x == 1, 0, 1), dw.sign(dw.sub(cosine, dw.pair(x)))).astype(x.dtype)


def _atan2(args, b):
    y, x = args  # the angle of (x, y) against b: the sign of y cos b - x sin b
    p, e = dw.two_prod(b, x)
    quotient = (p == y) & (e == 0) & (x > 0) & (y != 0)
    return jnp.where(b == 0, jnp.where(y == 0, 0, jnp.where(x > 0, _sign(y), _NAN)),
                     jnp.where(quotient, -_sign(y), _x_cos_minus_sin(y, x, b))).astype(y.dtype)


def _erf_inv(args, b):
    (x,) = args  # erf increases: erf_inv(x) - b has the sign of x - erf(b) (erf(b) = x only at 0)
    return jnp.where(b == 0, _sign(x), -error_function.erf_vs(b, x)).astype(x.dtype)


def _lgamma(args, b):
    (x,) = args  # lgamma(1) = lgamma(2) = 0; elsewhere the pair (boundlab.elementary.gamma), NaN at poles
    general = dw.sign(dw.sub(gamma.lgamma_pair(x), dw.pair(b)))
    return jnp.where((b == 0) & ((x == 1) | (x == 2)), 0, general).astype(x.dtype)


def _digamma(args, b):
    (x,) = args  # NaN at the poles
    return dw.sign(gamma.digamma_minus(x, b)).astype(x.dtype)


def _pair_value(pair_function, primitive):
    """The wide value as the pair's leading word (within an ulp of the exact value even next to
    the function's zeros, where XLA's own errs without bound relatively); XLA's at the poles."""
    def value(args):
        (x,) = args
        hi = pair_function(x)[0]
        return jnp.where(jnp.isfinite(hi), hi, primitive(x))

    return value


def _pow(args, b):
    """x^y against b: y log|x| against log|b| in pairs; a difference below 2^-90 is taken as an
    exact power (4^0.5 = 2, 2^3 = 8)."""
    x, y = args
    integer = y == jnp.round(y)
    odd = integer & (jnp.abs(jnp.fmod(y, 2)) == 1)
    negative = jnp.signbit(x) & odd  # the result's sign
    a = jnp.abs(x)
    safe_a = jnp.where((a > 0) & jnp.isfinite(a), a, 1)
    safe_b = jnp.where((b != 0) & jnp.isfinite(b), jnp.abs(b), 1)
    d = dw.sub(dw.mul(dw.pair(y), dw.log_pair(safe_a)), dw.log_pair(safe_b))
    scale = jnp.maximum(jnp.abs(y * jnp.log(safe_a)), 1)
    magnitude_side = jnp.where(jnp.abs(d[0]) <= 2.0 ** -90 * scale, 0, dw.sign(d))
    side = jnp.where(negative, -magnitude_side, magnitude_side)
    exact_one = (y == 0) | (x == 1)
    defined = (a > 0) & jnp.isfinite(a) & jnp.isfinite(y) & (~jnp.signbit(x) | integer) & (b != 0)
    return jnp.where(exact_one | (y == 1), 0, jnp.where(defined, side, _NAN)).astype(x.dtype)


def _rsqrt_special(args, y):
    (x,) = args  # IEEE 754 (9.2.1) and MPFR: rSqrt(+-0) = +inf, where 1/sqrt(-0) = -inf
    return jnp.where(x == 0, jnp.asarray(np.inf, y.dtype), y)


def _all_finite(args):
    result = jnp.isfinite(args[0])
    for a in args[1:]:
        result = result & jnp.isfinite(a)
    return result


def _pow_finite(args):
    x, y = args
    return _all_finite(args) & ~((x == 0) & (y < 0))


def _lgamma_finite(args):
    (x,) = args
    return jnp.isfinite(x) & ~((x <= 0) & (x == jnp.round(x)))


def _logistic_value(args):
    """e^x / (1 + e^x) for x < 0 (XLA's 1 / (1 + e^-x) loses everything once e^-x overflows)."""
    (x,) = args
    e = jnp.exp(-jnp.abs(x))
    return jnp.where(x < 0, e / (1 + e), 1 / (1 + e))


# The margins are XLA:CPU's errors measured against MPFR (2026-12-07, jax 0.10.2), with room.  In
# float64: tanh 6.5 ulps, exp2 279, sinh and cosh 480, erfc 475, atanh 123, the others below 4; in
# float32 (``margin32``, where smaller): erfc 61, exp2 66, sinh and cosh 24, atanh 2.5, pow 0.5.
# lgamma and digamma err by thousands of ulps next to their zeros (relative error without bound
# there), so their wide value is the pair's (``boundlab.elementary.gamma``), within an ulp.
RULES: dict[str, Rule] = {
    "tanh": Rule(_tanh, margin=32), "atanh": Rule(_atanh, margin=512, margin32=8),
    "logistic": Rule(_logistic, value=_logistic_value), "log": Rule(_log),
    "log1p": Rule(_log1p, margin=16), "expm1": Rule(_expm1, _all_finite, margin=16),
    "exp2": Rule(_exp2, _all_finite, margin=2048, margin32=128),
    "sinh": Rule(_sinh, _all_finite, margin=2048, margin32=64),
    "cosh": Rule(_cosh, _all_finite, margin=2048, margin32=64), "asinh": Rule(_asinh, margin=16),
    "acosh": Rule(_acosh, margin=16), "rsqrt": Rule(_rsqrt, special=_rsqrt_special),
    "cbrt": Rule(_cbrt, margin=16), "erf": Rule(_erf, margin=32), "erfc": Rule(_erfc, margin=2048, margin32=128),
    "sin": Rule(_sin), "cos": Rule(_cos), "tan": Rule(_tan), "atan": Rule(_atan), "asin": Rule(_asin, margin=16),
    "acos": Rule(_acos, margin=16), "atan2": Rule(_atan2, margin=16), "erf_inv": Rule(_erf_inv, margin=64),
    "lgamma": Rule(_lgamma, _lgamma_finite, value=_pair_value(gamma.lgamma_pair, lax.lgamma)),
    "digamma": Rule(_digamma, value=_pair_value(gamma.digamma_pair, lax.digamma)),
    "pow": Rule(_pow, _pow_finite, margin=2048, margin32=8),
}
"""The functions with a side rule, by primitive name."""


def _wide(container):
    return jnp.float64 if x64_enabled() else container


def _evaluate(primitive, params, rule: Rule, fmt: Format, mode: str, operands, random_bits):
    container = operands[0].dtype
    wide = _wide(container)
    args = [a.astype(wide) for a in operands]
    y = primitive.bind(*args, **params) if rule.value is None else rule.value(args)
    if rule.special is not None:
        y = rule.special(args, y)
    if rule.finite is not None:  # a wide overflow of a finite value: huge, beyond every format's range
        huge = jnp.asarray(np.finfo(np.dtype(wide)).max, wide)
        y = jnp.where(jnp.isinf(y) & rule.finite(args), jnp.where(y > 0, huge, -huge), y)
    y = boundary.resolve(y, fmt, mode, lambda b: rule.side(args, b), rule.margin_for(wide))
    return boundary.round_wide(y, fmt, mode, random_bits, container)


def rounded(primitive, params: dict, fmt: Format, mode: str):
    """fl(f(*operands)) for the elementwise ``primitive`` with a rule (``RULES``), correctly
    rounded to ``fmt`` in ``mode``, held in the operands' dtype: ``g(*operands, random_bits=None)``.
    Its derivative is f's (straight through, as ``round_to``).  Under ``vmap`` the whole batch
    is one elementwise call, so the rule runs only when some element of the batch is near a
    boundary (a batched ``lax.cond`` would run it always)."""
    rule = RULES[primitive.name]

    def call(*operands, random_bits=None):
        n = len(operands)
        extra = [] if random_bits is None else [random_bits]

        @jax.custom_batching.custom_vmap
        def elementwise(*values):
            return _evaluate(primitive, params, rule, fmt, mode, list(values[:n]), values[n] if extra else None)

        @elementwise.def_vmap
        def batched(axis_size, in_batched, *values):
            values = [v if b else jnp.broadcast_to(v, (axis_size,) + v.shape) for v, b in zip(values, in_batched)]
            return elementwise(*values), True

        @jax.custom_jvp
        def value(*values):
            return elementwise(*values)

        @value.defjvp
        def _jvp(primals, tangents):
            _, tangent = jax.jvp(lambda *xs: primitive.bind(*xs, **params), primals[:n], tangents[:n])
            return value(*primals), tangent

        return value(*operands, *extra)

    return call


def single_primitive(fn, args):
    """(primitive, params) when ``fn`` applied to ``args`` is one equation of a primitive with a
    rule on exactly those arguments (``jnp.tanh``, ``lax.erf``, ``jax.nn.sigmoid``, a bound
    primitive, possibly inside a ``jit``), else None."""
    try:
        jaxpr = jax.make_jaxpr(fn)(*args).jaxpr
    except Exception:  # not traceable as given: the caller's general path
        return None
    while True:
        if len(jaxpr.eqns) != 1 or jaxpr.constvars:
            return None
        (eqn,) = jaxpr.eqns
        if list(eqn.invars) != list(jaxpr.invars) or list(eqn.outvars) != list(jaxpr.outvars):
            return None
        if eqn.primitive.name in ("pjit", "jit"):
            jaxpr = eqn.params["jaxpr"].jaxpr
            continue
        if eqn.primitive.name not in RULES:
            return None
        return eqn.primitive, dict(eqn.params)
