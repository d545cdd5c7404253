"""Formats against ml_dtypes/numpy's own descriptions of the same formats, gamma against Lemma 4.2."""

import math

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import boundlab
from boundlab import Format, gamma, get_format

# The independent truth for each preset: the dtype that implements it (tf32 has none).
FINFO = {
    "fp64": np.finfo(np.float64),
    "fp32": np.finfo(np.float32),
    "bf16": ml_dtypes.finfo(ml_dtypes.bfloat16),
    "fp16": np.finfo(np.float16),
    "fp8_e5m2": ml_dtypes.finfo(ml_dtypes.float8_e5m2),
    "fp8_e4m3": ml_dtypes.finfo(ml_dtypes.float8_e4m3fn),
    "fp8_e5m2fnuz": ml_dtypes.finfo(ml_dtypes.float8_e5m2fnuz),
    "fp8_e4m3fnuz": ml_dtypes.finfo(ml_dtypes.float8_e4m3fnuz),
}


@pytest.mark.parametrize("name", sorted(FINFO))
def test_presets_match_the_dtypes_that_implement_them(name):
    fmt, info = get_format(name), FINFO[name]
    assert fmt.precision == info.nmant + 1
    assert fmt.max_finite == float(info.max)
    assert fmt.min_normal == float(info.tiny)
    assert fmt.min_subnormal == float(info.smallest_subnormal)
    assert fmt.epsilon == float(info.eps)
    assert fmt.unit_roundoff == float(info.eps) / 2


def test_tf32_is_fp32_range_with_ten_fraction_bits():
    tf32, fp32 = get_format("tf32"), get_format("fp32")
    assert (tf32.precision, tf32.emin, tf32.emax) == (11, fp32.emin, fp32.emax)
    assert tf32.max_finite == math.ldexp(2 - 2.0**-10, 127)


def test_e4m3_has_no_infinities_and_largest_448():
    fmt = get_format("fp8_e4m3")
    assert not fmt.infinities and fmt.max_finite == 448.0
    assert get_format("fp8_e4m3", overflow="saturate").overflow == "saturate"


@pytest.mark.parametrize("t", [2, 3, 10, 24, 53])
def test_digits_formats_have_float64_range(t):
    fmt = get_format(f"t{t}")
    assert fmt == boundlab.digits(t)
    assert (fmt.precision, fmt.emin, fmt.emax) == (t, -1022, 1023)
    assert fmt.unit_roundoff == 2.0**-t
    if t == 53:
        assert fmt.max_finite == float(np.finfo(np.float64).max)


def test_formats_are_hashable_static_jit_arguments():
    fmt = get_format("bf16")
    assert hash(fmt) == hash(Format(8, -126, 127, name="bf16"))
    scaled = jax.jit(lambda x, f: x * f.unit_roundoff, static_argnums=1)
    assert float(scaled(jnp.float32(2.0), fmt)) == 2.0 * 2.0**-8
    with pytest.raises(dataclasses_error()):
        fmt.precision = 3


def dataclasses_error():
    import dataclasses

    return dataclasses.FrozenInstanceError


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(precision=1, emin=-2, emax=2), "precision"),
        (dict(precision=54, emin=-2, emax=2), "precision"),
        (dict(precision=8, emin=-1030, emax=2), "exponent range"),
        (dict(precision=8, emin=5, emax=2), "emin"),
        (dict(precision=8, emin=-2, emax=2, overflow="wrap"), "overflow"),
        (dict(precision=8.0, emin=-2, emax=2), "int"),
    ],
)
def test_invalid_formats_are_rejected(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        Format(**kwargs)


@pytest.mark.parametrize("name", ["fp12", "t", "t1", "t54", "bfloat16"])
def test_unknown_names_say_what_exists(name):
    with pytest.raises(ValueError, match="fp16"):
        get_format(name)


def test_gamma_matches_lemma_4_2_definition():
    # gamma_n = n u / (1 - n u): checked against exact rational arithmetic.
    from fractions import Fraction

    for n, u in [(1, 2.0**-11), (20, 2.0**-8), (1000, 2.0**-24), (3, 0.25)]:
        exact = Fraction(n) * Fraction(u) / (1 - Fraction(n) * Fraction(u))
        assert gamma(n, u) == float(exact)
    assert gamma(4, 0.25) == math.inf and gamma(5, 0.25) == math.inf


def test_gamma_on_arrays_under_jit_and_vmap():
    n = jnp.arange(1.0, 6.0)
    expected = np.array([gamma(int(k), 0.25) for k in range(1, 6)])
    np.testing.assert_array_equal(np.asarray(jax.jit(gamma)(n, 0.25)), expected)
    np.testing.assert_array_equal(np.asarray(jax.vmap(gamma, in_axes=(0, None))(n, 0.25)), expected)
    assert np.isfinite(jax.grad(lambda u: gamma(3.0, u))(0.1))


def test_gamma_rejects_negative_arguments():
    import jax
    import jax.numpy as jnp

    from boundlab import gamma

    for n, u in ((-5, 0.1), (5, -0.1)):
        with pytest.raises(ValueError, match="n >= 0 and u >= 0"):
            gamma(n, u)
    with pytest.raises(ValueError):
        gamma(jnp.asarray([-1.0, 2.0]), 0.1)
    assert np.isnan(float(jax.jit(gamma)(-5.0, 0.1)))  # under jit: NaN, not a negative bound
