"""Independent oracles for the tests: MPFR rounding through gmpy2 and adversarial inputs.

Nothing here imports boundlab's rounding code; the oracle knows only the format's numbers.
"""

from __future__ import annotations

import math

import gmpy2
import numpy as np

MPFR_MODES = {
    "nearest": gmpy2.RoundToNearest,
    "zero": gmpy2.RoundToZero,
    "up": gmpy2.RoundUp,
    "down": gmpy2.RoundDown,
}


def mpfr_context(fmt, mode: str) -> gmpy2.context:
    """An MPFR context for the format.

    MPFR writes x = m 2^e with m in [1/2, 1), so its exponents are IEEE's plus one; with
    ``subnormalize=True`` its emin is the exponent of the smallest subnormal, 2^(emin - t + 1),
    i.e. emin_mpfr = emin - t + 2 (gmpy2.ieee(64) has emin = -1073).  Without subnormals the
    smallest positive number is 2^emin, so emin_mpfr = emin + 1.
    """
    t = fmt.precision
    return gmpy2.context(
        precision=t,
        emin=fmt.emin - t + 2 if fmt.subnormals else fmt.emin + 1,
        emax=fmt.emax + 1,
        subnormalize=fmt.subnormals,
        round=MPFR_MODES[mode],
    )


def _overflow_value(negative: bool, fmt, mode: str) -> float:
    """IEEE 754 overflow result (section 7.4), with saturation and no-infinity formats."""
    huge = math.nan if not fmt.infinities else math.inf
    if fmt.overflow == "saturate":
        huge = fmt.max_finite
    away = {"nearest": True, "zero": False, "up": not negative, "down": negative}[mode]
    magnitude = huge if away else fmt.max_finite
    return -magnitude if negative else magnitude


def mpfr_round(values: np.ndarray, fmt, mode: str) -> np.ndarray:
    """Round each value to ``fmt`` with MPFR; the result has ``values``' dtype.

    MPFR's own overflow handling covers IEEE-like formats; a result beyond ``fmt.max_finite``
    (the FN formats, whose top significand is NaN, and saturation) is mapped by IEEE 754's rule
    for the mode.  A result too large for a float32 container becomes inf there.
    """
    ctx = mpfr_context(fmt, mode)
    flat = values.astype(np.float64).reshape(-1)
    out = np.empty_like(flat)
    finite = np.isfinite(flat)
    plus = ctx.plus  # gmpy2 converts a Python float exactly (53 bits); one MPFR call per value
    out[finite] = [float(plus(v)) for v in flat[finite].tolist()]
    out[np.isnan(flat)] = math.nan
    infinite = np.isinf(flat)
    out[infinite] = flat[infinite] if fmt.infinities else math.nan
    over = finite & (np.abs(out) > fmt.max_finite)
    out[over] = [_overflow_value(v < 0, fmt, mode) for v in flat[over].tolist()]
    if not fmt.negative_zero:
        out[finite & (out == 0)] = 0.0  # FNUZ formats: -0's code is NaN, every zero is +0
    with np.errstate(over="ignore"):
        return out.reshape(values.shape).astype(values.dtype)


def _representable_in(values: np.ndarray, dtype) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        held = values.astype(dtype).astype(np.float64)
    return values[(held == values) | np.isnan(values)]


def adversarial(fmt, dtype, n: int, seed: int) -> np.ndarray:
    """At least ``n`` inputs that are hard to round to ``fmt``, held exactly in ``dtype``.

    Exact ties between neighbours of the format, ties plus or minus one container ulp, values
    throughout the target's subnormal range and just below it, values around the overflow
    threshold, random bit patterns of the container (its subnormals, infinities and NaNs
    included), signed zeros.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        return _adversarial(fmt, np.dtype(dtype), n, np.random.default_rng(seed))


def _adversarial(fmt, dtype, n, rng):
    t = fmt.precision
    container = np.finfo(dtype)
    lo_exp = max(fmt.emin - t + 1, int(container.minexp) - int(container.nmant))
    hi_exp = min(fmt.emax, int(container.maxexp) - 1)
    parts = []

    def grid(count, exp_lo, exp_hi):
        # Random neighbours of the format: m 2^(e - t + 1) with m on t bits.
        e = rng.integers(exp_lo, exp_hi + 1, count)
        m = rng.integers(2 ** (t - 1), 2**t, count).astype(np.float64)
        return np.ldexp(m, e - t + 1)

    per = max(n // 8, 1)
    base = grid(per, max(fmt.emin, int(container.minexp)), hi_exp)
    ulp = np.ldexp(1.0, np.frexp(base)[1] - t)
    ties = base + ulp / 2
    parts += [base, ties, np.nextafter(ties.astype(dtype), np.inf).astype(np.float64),
              np.nextafter(ties.astype(dtype), -np.inf).astype(np.float64)]
    # Target subnormal range (and below it): random multiples and ties of 2^(emin - t + 1).
    quantum = np.ldexp(1.0, fmt.emin - t + 1)
    k = rng.integers(0, 2**t, per).astype(np.float64)
    sub = k * quantum
    sub_ties = sub + quantum / 2
    parts += [sub, sub_ties, rng.uniform(0, 1, per) * fmt.min_normal,
              np.ldexp(rng.uniform(0.5, 1, per), rng.integers(lo_exp - 3, max(fmt.emin - t + 2, lo_exp - 1), per))]
    # Around the overflow threshold.
    top = fmt.max_finite
    top_ulp = np.ldexp(1.0, fmt.emax - t + 1)
    near_top = top + top_ulp * rng.uniform(-2, 2, per)
    parts += [near_top, np.array([top, top + top_ulp / 2, top + top_ulp, 2 * top, top - top_ulp / 2])]
    # Random bit patterns of the container: every class of input.
    uint = np.uint32 if dtype == np.float32 else np.uint64
    raw = rng.integers(0, np.iinfo(uint).max, per, dtype=uint, endpoint=True).view(dtype)
    parts.append(raw.astype(np.float64))
    # The container's own subnormals and its top binade (carries into the exponent field).
    mant_bits = int(container.nmant)
    sub_bits = rng.integers(0, 2**mant_bits, per, dtype=uint)
    top_bits = sub_bits | uint((2 * int(container.maxexp) - 2) << mant_bits)
    parts += [sub_bits.view(dtype).astype(np.float64), top_bits.view(dtype).astype(np.float64)]
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, float(container.tiny), float(container.max),
                         float(container.smallest_subnormal), 1.0, fmt.min_normal, fmt.min_subnormal])
    values = np.concatenate([np.abs(np.concatenate(parts)), specials])
    signs = rng.choice([-1.0, 1.0], values.size)
    values = np.concatenate([values * signs, specials, -specials])
    values = _representable_in(values, dtype)
    while values.size < n:  # top up with random bit patterns after filtering
        extra = rng.integers(0, np.iinfo(uint).max, n, dtype=uint, endpoint=True).view(dtype)
        values = np.concatenate([values, extra.astype(np.float64)])
    return values.astype(dtype)


def _logistic(ctx, v):
    """logistic(v) correctly rounded in ``ctx``: for v <= 0, e^v / (1 + e^v) at 300 bits rounded
    once (exactly a format number only at 0 and -inf, where it is exact); for v > 0, 1 - d with
    d = e^-v / (1 + e^-v) at 300 bits, the subtraction correctly rounded by MPFR (1 - d lies within
    2^-300 of 1 for large v: no fixed precision would hold it)."""
    wide = gmpy2.context(precision=300, emin=gmpy2.get_emin_min(), emax=gmpy2.get_emax_max())
    tail = wide.exp(-abs(v))
    small = wide.div(tail, wide.add(gmpy2.mpfr(1), tail))
    # stand-ins that round the same in every mode, inside MPFR's exponent range (gmpy2 takes the
    # far smaller d as zero): below half the smallest positive number, 2^(emin - 1) in MPFR's terms,
    # and for 1 - d with d below 2^-(t+3), 1 - 2^-(t+3)
    if v <= 0:
        return ctx.plus(max(small, gmpy2.mpfr(2) ** (ctx.emin - 3)))
    return ctx.sub(gmpy2.mpfr(1), max(small, gmpy2.mpfr(2) ** -(ctx.precision + 3)))


def _erf_inv(ctx, v):
    """erf_inv(v) correctly rounded in ``ctx`` (MPFR has no inverse erf): Newton's iteration
    y <- y - (erf y - v) sqrt(pi) e^(y^2) / 2 at 400 bits from scipy's float64 value, to a relative
    change below 2^-300, rounded once (the exact value of a nonzero v is transcendental, never a
    format number; so it lies 2^-300 from a boundary only with probability 2^-250)."""
    import scipy.special

    if v == 0 or abs(v) >= 1:
        return ctx.plus(v) if v == 0 else (gmpy2.inf(int(gmpy2.sign(v))) if abs(v) == 1 else gmpy2.nan())
    wide = gmpy2.context(precision=400, emin=gmpy2.get_emin_min(), emax=gmpy2.get_emax_max())
    y = gmpy2.mpfr(float(scipy.special.erfinv(float(v))), 400)
    half_root_pi = wide.div(wide.sqrt(wide.const_pi()), 2)
    for _ in range(60):
        step = wide.mul(wide.mul(wide.sub(wide.erf(y), v), half_root_pi), wide.exp(wide.mul(y, y)))
        y = wide.sub(y, step)
        if step == 0 or abs(step) < abs(y) * gmpy2.mpfr(2) ** -300:
            return ctx.plus(y)
    raise AssertionError(f"erf_inv({v}): Newton did not converge")


# The MPFR functions of the primitives emulate rounds correctly: name -> f(ctx, *mpfr args).
MPFR_FUNCTIONS = {
    "tanh": lambda c, x: c.tanh(x), "erf": lambda c, x: c.erf(x), "erfc": lambda c, x: c.erfc(x),
    "log": lambda c, x: c.log(x), "log1p": lambda c, x: c.log1p(x), "expm1": lambda c, x: c.expm1(x),
    "exp2": lambda c, x: c.exp2(x), "sin": lambda c, x: c.sin(x), "cos": lambda c, x: c.cos(x),
    "tan": lambda c, x: c.tan(x), "atan": lambda c, x: c.atan(x), "sinh": lambda c, x: c.sinh(x),
    "cosh": lambda c, x: c.cosh(x), "asinh": lambda c, x: c.asinh(x), "acosh": lambda c, x: c.acosh(x),
    "atanh": lambda c, x: c.atanh(x), "rsqrt": lambda c, x: c.rec_sqrt(x), "cbrt": lambda c, x: c.cbrt(x),
    "asin": lambda c, x: c.asin(x), "acos": lambda c, x: c.acos(x), "lgamma": lambda c, x: c.lgamma(x)[0],
    "digamma": lambda c, x: c.digamma(x), "erf_inv": _erf_inv, "exp": lambda c, x: c.exp(x), "sqrt": lambda c, x: c.sqrt(x),
    "logistic": _logistic, "atan2": lambda c, y, x: c.atan2(y, x), "pow": lambda c, x, y: c.pow(x, y),
}


def mpfr_function(name: str, fmt, mode: str, *columns: np.ndarray) -> np.ndarray:
    """f(*columns) correctly rounded to ``fmt`` in ``mode`` by MPFR, elementwise, as float64 (the
    overflow of the FN and saturating formats by IEEE 754's rule, as ``mpfr_round``)."""
    ctx = mpfr_context(fmt, mode)
    function = MPFR_FUNCTIONS[name]
    flat = [np.asarray(c, np.float64).reshape(-1) for c in columns]
    out = np.array([float(function(ctx, *[gmpy2.mpfr(v) for v in values])) for values in zip(*flat)])
    over = np.isfinite(out) & (np.abs(out) > fmt.max_finite)
    if not fmt.infinities:  # an overflow by the mode's rule; an exact infinity (log 0) has no code: NaN
        unbounded = gmpy2.context(precision=fmt.precision, emin=gmpy2.get_emin_min(), emax=gmpy2.get_emax_max())
        infinite = np.flatnonzero(np.isinf(out))
        exact = [math.isinf(function(unbounded, *[gmpy2.mpfr(c[i]) for c in flat])) for i in infinite]
        out[infinite[exact]] = math.nan
        over |= np.isinf(out)
    out[over] = [_overflow_value(v < 0, fmt, mode) for v in out[over].tolist()]
    if not fmt.negative_zero:
        out[out == 0] = 0.0
    return out.reshape(np.shape(columns[0]))
