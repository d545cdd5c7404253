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
