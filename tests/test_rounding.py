"""round_to against MPFR (gmpy2), bit for bit, and its behaviour under jit, vmap and grad."""

import chex
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from oracles import adversarial, mpfr_round

from boundlab import Format, get_format, round_to
from boundlab.rounding import bit_operations_only

DETERMINISTIC = ("nearest", "zero", "up", "down")
PRESETS = ("fp64", "fp32", "tf32", "bf16", "fp16", "fp8_e5m2", "fp8_e4m3", "fp8_e5m2fnuz", "fp8_e4m3fnuz")
FORMATS = (
    [get_format(name) for name in PRESETS]
    + [get_format(f"t{t}") for t in range(3, 25)]
    + [get_format("t53")]
    + [
        get_format("fp8_e4m3", overflow="saturate"),
        get_format("fp16", overflow="saturate"),
        Format(11, -14, 15, subnormals=False, name="fp16_ftz"),
        Format(24, -126, 127, subnormals=False, name="fp32_ftz"),
        Format(5, -1022, 1023, subnormals=False, name="t5_ftz"),
    ]
)
CASES = [(fmt, dtype) for fmt in FORMATS for dtype in (np.float64, np.float32) if dtype == np.float64 or fmt.fits_float32]
VALUES_PER_CASE = 100_000


def assert_bitwise_equal(got, want, inputs=None):
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype
    uint = {4: np.uint32, 8: np.uint64}[got.dtype.itemsize]
    same = (got.view(uint) == want.view(uint)) | (np.isnan(got) & np.isnan(want))
    if not same.all():
        where = np.flatnonzero(~same)[:5]
        shown = "" if inputs is None else f" inputs {np.asarray(inputs).reshape(-1)[where]!r}"
        raise AssertionError(f"{(~same).sum()} of {same.size} differ:{shown} got {got.reshape(-1)[where]!r} "
                             f"want {want.reshape(-1)[where]!r}")


@pytest.mark.parametrize("fmt, dtype", CASES, ids=[f"{f.name}-{np.dtype(d).name}" for f, d in CASES])
def test_bit_exact_against_mpfr_under_jit(fmt, dtype):
    x = adversarial(fmt, dtype, VALUES_PER_CASE, seed=hash((fmt.name, np.dtype(dtype).name)) % 2**32)
    assert x.size >= VALUES_PER_CASE
    for mode in DETERMINISTIC:
        got = jax.jit(lambda v, mode=mode: round_to(v, fmt, mode))(x)
        assert_bitwise_equal(got, mpfr_round(x, fmt, mode), x)


@pytest.mark.parametrize("name", ["bf16", "fp16", "fp8_e4m3", "fp8_e5m2", "t10"])
def test_eager_equals_jit(name):
    fmt = get_format(name)
    x = adversarial(fmt, np.float64, 20_000, seed=7)
    for mode in DETERMINISTIC:
        assert_bitwise_equal(round_to(x, fmt, mode), jax.jit(lambda v, mode=mode: round_to(v, fmt, mode))(x), x)


@pytest.mark.parametrize("name, dtype", [("bf16", ml_dtypes.bfloat16), ("fp16", np.float16),
                                         ("fp8_e5m2", ml_dtypes.float8_e5m2), ("fp8_e4m3", ml_dtypes.float8_e4m3fn),
                                         ("fp8_e5m2fnuz", ml_dtypes.float8_e5m2fnuz),
                                         ("fp8_e4m3fnuz", ml_dtypes.float8_e4m3fnuz)])
def test_float32_input_agrees_with_single_cast(name, dtype):
    # A float32 -> narrow cast rounds once (nearest-even), so it is a second, independent oracle.
    x = adversarial(get_format(name), np.float32, 50_000, seed=3)
    with np.errstate(over="ignore", invalid="ignore"):
        want = x.astype(dtype).astype(np.float32)
    assert_bitwise_equal(jax.jit(lambda v: round_to(v, name))(x), want, x)


def test_oracle_agrees_with_numpy_float16_cast():
    # Guards the oracle itself (MPFR context conversion) against an independent implementation.
    x = adversarial(get_format("fp16"), np.float32, 50_000, seed=11)
    with np.errstate(over="ignore", invalid="ignore"):
        assert_bitwise_equal(mpfr_round(x, get_format("fp16"), "nearest"), x.astype(np.float16).astype(np.float32))


def test_float64_to_bf16_single_rounding_where_a_double_cast_fails():
    # 1 + 2^-8 + 2^-30 lies just above a bf16 tie: rounding once goes up, float32 first goes down.
    x = np.array([1 + 2.0**-8 + 2.0**-30])
    assert float(round_to(x, "bf16")[0]) == 1 + 2.0**-7
    assert float(x.astype(np.float32).astype(ml_dtypes.bfloat16)[0]) == 1.0


def test_subnormals_survive_where_reduce_precision_flushes():
    fp16 = get_format("fp16")
    x = jnp.array([3 * fp16.min_subnormal, fp16.min_subnormal / 2 * 1.5])
    got = jax.jit(lambda v: round_to(v, fp16))(x)
    np.testing.assert_array_equal(np.asarray(got), [3 * fp16.min_subnormal, fp16.min_subnormal])


@pytest.mark.parametrize("name, dtype", [("fp16", np.float32), ("bf16", np.float64), ("fp8_e5m2", np.float32),
                                         ("t10", np.float64), ("fp16", np.float64)])
def test_reduce_precision_path_is_taken_and_equals_the_bit_pattern_algorithm(name, dtype):
    # Round to nearest into IEEE-like formats is lax.reduce_precision (+ a subnormal branch);
    # Pallas kernel bodies trace the integer algorithm instead.  Both against MPFR, under jit.
    fmt = get_format(name)
    x = adversarial(fmt, dtype, 20_000, seed=17)
    fast = jax.jit(lambda v: round_to(v, fmt))
    assert "reduce_precision" in str(jax.make_jaxpr(fast)(x))
    with bit_operations_only():
        bits = jax.jit(lambda v: round_to(v, fmt))
        assert "reduce_precision" not in str(jax.make_jaxpr(bits)(x))
        by_bits = bits(x)
    want = mpfr_round(x, fmt, "nearest")
    assert_bitwise_equal(fast(x), want, x)
    assert_bitwise_equal(by_bits, want, x)


def test_special_values_and_signed_zeros():
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -1e-300])
    got = np.asarray(round_to(x, "fp16"))
    assert got[0] == 0 and not np.signbit(got[0]) and got[1] == 0 and np.signbit(got[1])
    assert got[2] == np.inf and got[3] == -np.inf and np.isnan(got[4])
    assert got[5] == 0 and np.signbit(got[5])
    e4m3 = np.asarray(round_to(x, "fp8_e4m3"))
    assert np.isnan(e4m3[2:5]).all()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", ["fp16", "bf16", "t5"])
def test_stochastic_rounding_is_unbiased_between_two_neighbours(name, dtype):
    fmt = get_format(name)
    draws = 40_000
    rng = np.random.default_rng(5)
    # Points strictly between neighbours: normal, target-subnormal (where it fits), negative.
    targets = [1.0 + 0.3 * fmt.epsilon, -(3.0 + 0.8 * 2 * fmt.epsilon), 17 * fmt.min_subnormal + 0.1 * fmt.min_subnormal]
    for value in targets:
        x = np.full(draws, value, dtype=dtype)
        if float(x[0]) != value:
            continue
        got = np.asarray(jax.jit(lambda v, k: round_to(v, fmt, "stochastic", key=k))(x, jax.random.key(int(rng.integers(1 << 30)))))
        lower, upper = mpfr_round(x[:1], fmt, "down")[0], mpfr_round(x[:1], fmt, "up")[0]
        assert set(np.unique(got)) <= {lower, upper}, (value, np.unique(got))
        errors = got.astype(np.float64) - float(x[0])
        p_up = (float(x[0]) - lower) / (upper - lower)
        spread = (upper - lower) * np.sqrt(p_up * (1 - p_up) / draws)
        # Six standard errors: a false alarm has probability about 2e-9.
        assert abs(errors.mean()) <= 6 * spread, (value, errors.mean(), spread)


@pytest.mark.parametrize("name, dtype", [("t10", np.float64), ("bf16", np.float32)])
def test_stochastic_rounding_of_the_container_range_keeps_signs_and_special_values(name, dtype):
    # the fast path adds the random bits to the signed bit pattern: signs, zeros, infinities and
    # NaNs (one with only low payload bits too) must survive, and every finite result is one of
    # the two neighbours MPFR gives (toward -inf and toward +inf), overflow going to +-inf
    fmt = get_format(name)
    info = np.finfo(dtype)
    uint, exponent_field = (np.uint64, 0x7FF << 52) if dtype == np.float64 else (np.uint32, 0xFF << 23)
    low_payload_nan = np.array([exponent_field | 1], uint).view(dtype)[0]
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, low_payload_nan], dtype)
    finite = np.array([info.max, -info.max, info.tiny * 0.75, -info.tiny * 0.3, -1.0 - 3 * info.eps, 5.5e-3], dtype)
    x = np.concatenate([np.repeat(specials, 64), np.repeat(finite, 64)])
    got = np.asarray(jax.jit(lambda v, k: round_to(v, fmt, "stochastic", key=k))(x, jax.random.key(5)))
    n = 64 * len(specials)
    assert np.all(got[:n:64][:2] == 0) and np.signbit(got[0]) == 0 and np.all(np.signbit(got[64:128]))
    assert np.all(got[128:192] == np.inf) and np.all(got[192:256] == -np.inf)
    assert np.all(np.isnan(got[256:n]))
    lower = np.repeat(mpfr_round(finite, fmt, "down"), 64)
    upper = np.repeat(mpfr_round(finite, fmt, "up"), 64)
    rest = got[n:]
    assert np.all((rest == lower) | (rest == upper)), (rest, lower, upper)
    assert np.array_equal(np.signbit(rest[rest != 0]), np.signbit(np.repeat(finite, 64)[rest != 0]))


def test_stochastic_is_reproducible_and_key_dependent():
    x = jnp.linspace(1.0, 2.0, 4096)
    a = round_to(x, "bf16", "stochastic", key=jax.random.key(1))
    b = round_to(x, "bf16", "stochastic", key=jax.random.key(1))
    c = round_to(x, "bf16", "stochastic", key=jax.random.key(2))
    assert_bitwise_equal(a, b)
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    # Values already in the format are never moved.
    exact = round_to(x, "bf16")
    assert_bitwise_equal(round_to(exact, "bf16", "stochastic", key=jax.random.key(3)), exact)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("impl", ["threefry2x32", "rbg"])
def test_random_words_are_balanced_bit_by_bit_and_independent_across_sites(dtype, impl):
    from boundlab.rounding import hash_fold_in, random_bits_for

    draws = 1 << 16
    key = jax.random.key(7, impl=impl)
    words = [np.asarray(random_bits_for(hash_fold_in(key, site), (draws,), dtype)) for site in (0, 1)]
    width = 8 * words[0].dtype.itemsize
    assert width == 8 * np.dtype(dtype).itemsize
    bits = [(w[:, None] >> np.arange(width, dtype=w.dtype)) & 1 for w in words]
    six_sigma = 6 * 0.5 / np.sqrt(draws)  # a false alarm: about 2e-9 per bit
    for b in bits:
        assert np.all(np.abs(b.mean(axis=0) - 0.5) <= six_sigma)
    # two sites' words agree in each bit half the time (no shared stream)
    assert np.all(np.abs((bits[0] == bits[1]).mean(axis=0) - 0.5) <= six_sigma)
    # consecutive words of one site too (a counter hash, not a lagged copy)
    assert np.all(np.abs((bits[0][1:] == bits[0][:-1]).mean(axis=0) - 0.5) <= six_sigma)


def test_vmap_matches_the_unbatched_call():
    x = jnp.asarray(np.random.default_rng(0).standard_normal((6, 50)))
    for mode in DETERMINISTIC:
        assert_bitwise_equal(jax.vmap(lambda row, mode=mode: round_to(row, "fp16", mode))(x), round_to(x, "fp16", mode))
    keys = jax.random.split(jax.random.key(0), 6)
    batched = jax.vmap(lambda row, k: round_to(row, "fp16", "stochastic", key=k))(x, keys)
    for i in range(6):
        assert_bitwise_equal(batched[i], round_to(x[i], "fp16", "stochastic", key=keys[i]))


@pytest.mark.parametrize("mode", DETERMINISTIC + ("stochastic",))
def test_gradient_is_straight_through(mode):
    x = jnp.linspace(-3.0, 3.0, 7)
    weights = jnp.arange(7.0)
    key = jax.random.key(0) if mode == "stochastic" else None
    loss = lambda v: jnp.sum(weights * round_to(v, "fp8_e4m3", mode, key=key))  # noqa: E731
    np.testing.assert_array_equal(np.asarray(jax.grad(loss)(x)), np.asarray(weights))
    np.testing.assert_array_equal(np.asarray(jax.jit(jax.grad(loss))(x)), np.asarray(weights))


def test_no_retracing_for_the_same_format():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def rounded_sum(v):
        return jnp.sum(round_to(v, Format(11, -14, 15, name="fp16")))

    for seed in range(4):
        rounded_sum(jnp.asarray(np.random.default_rng(seed).standard_normal(32)))
    static = jax.jit(round_to, static_argnames=("fmt", "mode"))
    for _ in range(3):
        static(jnp.ones(8), fmt=Format(11, -14, 15), mode="nearest")
    assert static._cache_size() == 1


def test_result_keeps_the_input_dtype_and_shape():
    x32 = jnp.ones((2, 3, 4), jnp.float32)
    assert round_to(x32, "bf16").dtype == jnp.float32 and round_to(x32, "bf16").shape == (2, 3, 4)
    assert round_to(jnp.ones(3), "t10").dtype == jnp.float64


def test_clear_errors_for_bad_input():
    with pytest.raises(ValueError, match="float64 array"):
        round_to(jnp.ones(3, jnp.float32), "fp64")
    with pytest.raises(ValueError, match="float64 array"):
        round_to(jnp.ones(3, jnp.float32), "t30")
    with pytest.raises(TypeError, match="float32 or float64"):
        round_to(jnp.ones(3, jnp.int32), "fp16")
    with pytest.raises(TypeError, match="float32 or float64"):
        round_to(jnp.ones(3, jnp.bfloat16), "fp16")
    with pytest.raises(ValueError, match="PRNG key"):
        round_to(jnp.ones(3), "fp16", "stochastic")
    with pytest.raises(ValueError, match="only by mode='stochastic'"):
        round_to(jnp.ones(3), "fp16", "nearest", key=jax.random.key(0))
    with pytest.raises(ValueError, match="rounding mode"):
        round_to(jnp.ones(3), "fp16", "nearest_even")


def test_float64_input_without_x64_is_refused(x64_off):
    with pytest.raises(TypeError, match="jax_enable_x64"):
        round_to(np.ones(3), "fp16")
    # float32 keeps working without x64.
    assert round_to(np.ones(3, np.float32), "fp16").dtype == jnp.float32


@pytest.mark.parametrize("name", ["fp16", "bf16", "fp8_e4m3", "t10", "fp64"])
def test_round_scalar_matches_mpfr(name):
    fmt = get_format(name)
    x = adversarial(fmt, np.float64, 3000, seed=21)
    want = mpfr_round(x, fmt, "nearest")
    from boundlab.rounding import round_scalar

    got = np.array([round_scalar(float(v), fmt) for v in x])
    assert_bitwise_equal(got, want, x)
