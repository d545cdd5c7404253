"""Correctly rounded exp against MPFR: every number of the small formats, 10^6 arguments nearest
the rounding boundaries of the wide ones, and the double-word path on its own."""

import gmpy2
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from oracles import _overflow_value, mpfr_context

from boundlab import Emulated, elementary, get_format

MODES = ("nearest", "zero", "up", "down")
SMALL = {"fp16": (np.uint16, np.float16), "bf16": (np.uint16, ml_dtypes.bfloat16),
         "fp8_e4m3": (np.uint8, ml_dtypes.float8_e4m3fn), "fp8_e5m2": (np.uint8, ml_dtypes.float8_e5m2)}


def every_number(name):
    uint, dtype = SMALL[name]
    with np.errstate(invalid="ignore"):  # NaN patterns
        values = np.arange(np.iinfo(uint).max + 1, dtype=uint).view(dtype).astype(np.float64)
    return values[np.isfinite(values)]


def mpfr_exp(values, fmt, mode):
    ctx = mpfr_context(fmt, mode)
    out = []
    for v in values.tolist():
        r = float(ctx.exp(v))
        out.append(_overflow_value(False, fmt, mode) if r > fmt.max_finite else r)
    return np.array(out)


def check(name, values, modes=MODES):
    fmt = get_format(name)
    for mode in modes:
        arithmetic = Emulated(name, mode=mode)
        x = np.asarray(arithmetic.cast(values))
        got = np.asarray(jax.jit(arithmetic.exp)(x), dtype=np.float64)
        want = mpfr_exp(x.astype(np.float64), fmt, mode)
        wrong = np.flatnonzero(~((got == want) | (np.isnan(got) & np.isnan(want))))
        assert wrong.size == 0, (name, mode, x[wrong[:5]], got[wrong[:5]], want[wrong[:5]])


@pytest.mark.parametrize("name", list(SMALL))
def test_exp_is_correctly_rounded_for_every_number_of_the_small_formats(name):
    check(name, every_number(name))


def test_the_two_reported_fp16_cases():
    # the container's exp rounded once gave 1.0078125 and 1.0234375 here (one ulp off)
    x = np.array([0.007297515869140625, 0.0226898193359375], np.float32)
    got = np.asarray(Emulated("fp16").exp(jnp.asarray(x)), dtype=np.float64)
    assert got.tolist() == mpfr_exp(x.astype(np.float64), get_format("fp16"), "nearest").tolist() \
        == [1.0068359375, 1.0224609375]


@pytest.mark.parametrize("name", ["fp16", "fp8_e4m3"])
def test_exp_without_x64_is_correctly_rounded_in_float_float(name, x64_off):
    # float32 containers without float64: the near-boundary cases are resolved in float-float
    check(name, every_number(name).astype(np.float32))


@pytest.mark.parametrize("name", ["fp16", "bf16", "t24"])
def test_the_double_word_path_alone_is_correctly_rounded(name, monkeypatch):
    # a margin wider than the rounding grid sends every element through the double-word path
    monkeypatch.setattr(elementary.boundary, "MARGIN_ULPS", 2**20 if get_format(name).precision <= 11 else 2**40)
    values = every_number(name) if name in SMALL else boundary_cases(24, 20_000, seed=5)
    check(name, values)


def test_the_float_float_path_alone_is_correctly_rounded(monkeypatch, x64_off):
    monkeypatch.setattr(elementary.boundary, "MARGIN_ULPS", 2**14)
    check("fp16", every_number("fp16").astype(np.float32))


def boundary_cases(t, count, seed):
    """``count`` t-bit numbers whose exp lies nearest a rounding boundary (a (t+1)-bit number:
    the midpoints and the format numbers), picked from 4 count random ones with a float64 exp."""
    rng = np.random.default_rng(seed)
    size = 4 * count
    significand = rng.integers(2 ** (t - 1), 2**t, size)
    exponent = rng.integers(-12, 5, size)  # |x| in [2^-12, 32)
    x = np.where(rng.random(size) < 0.5, -1, 1) * np.ldexp(significand.astype(np.float64), exponent - t + 1)
    y = np.exp(x)
    mantissa, e = np.frexp(y)  # y = mantissa 2^e, mantissa in [1/2, 1)
    scaled = np.ldexp(mantissa, t + 1)  # the (t+1)-bit grid at integers
    distance = np.abs(scaled - np.round(scaled))
    return x[np.argsort(distance)[:count]]


@pytest.mark.parametrize("t", [24, 16])
def test_exp_near_rounding_boundaries_of_wide_formats(t):
    name = f"t{t}"
    cases = boundary_cases(t, 10**6, seed=t)
    check(name, cases, modes=("nearest",))
    check(name, cases[:50_000], modes=("zero", "up", "down"))


def test_stochastic_exp_rounds_to_a_neighbour_of_the_exact_value():
    fmt = get_format("fp16")
    arithmetic = Emulated(fmt, mode="stochastic")
    x = np.asarray(arithmetic.cast(every_number("fp16")))
    x = x[np.abs(x) < 11]  # no overflow
    got = np.asarray(jax.jit(arithmetic.exp)(x, jax.random.key(3)), dtype=np.float64)
    down, up = mpfr_exp(x.astype(np.float64), fmt, "down"), mpfr_exp(x.astype(np.float64), fmt, "up")
    assert np.all((got == down) | (got == up))
    assert 0.2 < np.mean(got == up) < 0.8


@pytest.mark.parametrize("dtype, bits", [(np.float64, 96), (np.float32, 40)])
def test_double_word_exp_accuracy_against_mpfr(dtype, bits):
    # where lo, about 2^-p hi, is still a normal number (XLA flushes subnormals)
    low, high = (-600.0, 700.0) if dtype == np.float64 else (-60.0, 85.0)
    x = np.random.default_rng(7).uniform(low, high, 20_000).astype(dtype)
    x = np.concatenate([x, np.asarray([0.0, 1e-30, -1e-30, np.log(2.0), 0.5 * np.log(2.0)], dtype)])
    hi, lo = jax.jit(elementary.double_word_exp)(jnp.asarray(x))
    ctx = gmpy2.context(precision=300)  # its methods compute at 300 bits (operators would use 53)
    worst = 0.0
    for v, h, low in zip(x.tolist(), np.asarray(hi).tolist(), np.asarray(lo).tolist(), strict=True):
        exact = ctx.exp(v)
        worst = max(worst, float(abs(ctx.div(ctx.sub(ctx.add(h, low), exact), exact))))
    assert worst < 2.0**-bits, worst


def test_exp_gradient_is_the_exact_derivative():
    x = jnp.linspace(-3.0, 3.0, 7, dtype=jnp.float32)
    grad = jax.grad(lambda v: jnp.sum(Emulated("fp16").exp(v)))(x)
    assert np.array_equal(np.asarray(grad), np.asarray(jnp.exp(x)))
