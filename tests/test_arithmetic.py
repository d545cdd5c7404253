"""Arithmetic policies against MPFR, one operation and one reduction at a time."""

import functools

import gmpy2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from interpreter import Scalar
from oracles import _overflow_value, mpfr_context

from boundlab import Emulated, Exact, get_format

MODES = ("nearest", "zero", "up", "down")


def format_numbers(arithmetic, size, seed, spread=8):
    rng = np.random.default_rng(seed)
    values = rng.standard_normal(size) * np.exp2(rng.integers(-spread, spread, size))
    return np.asarray(arithmetic.cast(values))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["fp16", "bf16", "t5", "t11", "t24", "fp8_e4m3"])
def test_elementwise_operations_are_correctly_rounded(name, mode):
    arithmetic = Emulated(name, mode=mode)
    fmt = get_format(name)
    ctx = mpfr_context(fmt, mode)

    def in_format(r, negative):  # MPFR knows no FN formats: map results beyond the largest finite
        r = float(r)
        return _overflow_value(negative, fmt, mode) if abs(r) > fmt.max_finite else r

    x = format_numbers(arithmetic, 3000, 1)
    y = format_numbers(arithmetic, 3000, 2, spread=min(30, fmt.emax))  # far-apart exponents: sticky bits
    keep = np.isfinite(x) & np.isfinite(y) & (y != 0)  # finite operands; x / 0 is no rounding
    x, y = x[keep], y[keep]
    assert x.size > 1000
    ops = {
        "add": (jax.jit(arithmetic.add), ctx.add),
        "sub": (jax.jit(arithmetic.sub), ctx.sub),
        "mul": (jax.jit(arithmetic.mul), ctx.mul),
        "div": (jax.jit(arithmetic.div), ctx.div),
    }
    for op, (ours, mpfr) in ops.items():
        got = np.asarray(ours(x, y), dtype=np.float64)
        want = np.array([in_format(r, r < 0) for r in (mpfr(float(a), float(b)) for a, b in zip(x, y, strict=True))])
        assert np.array_equal(got, want, equal_nan=True), (op, np.flatnonzero(got != want)[:5])
    got = np.asarray(jax.jit(arithmetic.sqrt)(np.abs(x)), dtype=np.float64)
    want = np.array([float(ctx.sqrt(float(abs(a)))) for a in x])
    assert np.array_equal(got, want)


@pytest.mark.parametrize("name", ["bf16", "fp8_e4m3fnuz"])
def test_zeros_carry_ieee_signs_in_every_mode(name):
    # IEEE 754 (6.3): an exact zero sum is -0 under round down and +0 otherwise, unless both terms
    # are zeros of one sign; products and quotients carry the sign rule (FNUZ: every zero is +0);
    # compared with MPFR, on a float32 and a float64 container, under jit
    fmt = get_format(name)
    values = [0.0, -0.0, 1.5, -1.5, 2.0 ** -20, -3.0]
    pairs = [(a, b) for a in values for b in values] + [(a, -a) for a in values]
    x, y = (np.asarray(Emulated(name).cast(np.array(v)), np.float64) for v in zip(*pairs))  # format numbers
    ops = ("add", "sub", "mul", "div")
    for mode in MODES:
        ctx = mpfr_context(fmt, mode)
        want = np.array([[float(getattr(ctx, op)(float(a), float(b))) for a, b in zip(x, y)] for op in ops])
        if not fmt.negative_zero:
            want[want == 0] = 0.0
        if not fmt.infinities:
            want[np.isinf(want)] = np.nan  # x / 0 has no infinity to be
        for container in (None, "float64"):
            arithmetic = Emulated(name, mode=mode, container=container)
            got = np.asarray(jax.jit(lambda a, b: jnp.stack([getattr(arithmetic, op)(a, b) for op in ops]))(
                arithmetic.cast(x), arithmetic.cast(y)), np.float64)
            same = (got == want) & (np.signbit(got) == np.signbit(want)) | (np.isnan(got) & np.isnan(want))
            assert same.all(), (mode, container, got[~same], want[~same])
        total = jax.jit(lambda v: Emulated(name, mode=mode).sum(v))(jnp.asarray([1.5, -1.5]))
        assert np.signbit(total) == (mode == "down" and fmt.negative_zero)
        # a fused block (accumulation="blocked") sums exactly and rounds once: the same rule for
        # its exact zero sum (-0 under round down unless every term is +0; +0 otherwise unless every
        # term is -0), for block sizes unrolled and looped, in the first block and the last
        for size in (2, 3, 100):
            blocked = Emulated(name, mode=mode, accumulation="blocked", block_size=size)
            sums = jax.jit(lambda v, w: blocked.dot_general(v, w, (((1,), (0,)), ((), ()))))(
                jnp.asarray([[1.5, -1.5, 0.0], [0.0, 0.0, 0.0], [-0.0, -0.0, -0.0], [0.0, -0.0, 0.0]]),
                jnp.asarray([1.0, 1.0, 1.0]))
            negative = np.signbit(np.asarray(sums))
            if fmt.negative_zero:
                assert list(negative) == ([True, False, True, True] if mode == "down" else [False, False, True, False]), (mode, size)
            else:
                assert not negative.any()


def test_division_is_not_turned_into_a_reciprocal_multiplication():
    # XLA rewrites a / broadcast(b) and a / constant as a * (1/b); 1/20 is inexact.
    arithmetic = Emulated("t24")
    x = format_numbers(arithmetic, (500, 7), 3)
    got = np.asarray(jax.jit(lambda v: arithmetic.div(v, arithmetic.cast(20.0)))(x))
    ctx = mpfr_context(get_format("t24"), "nearest")
    want = np.array([[float(ctx.div(float(a), 20.0)) for a in row] for row in x])
    assert np.array_equal(got, want)
    exact = np.asarray(jax.jit(lambda v, w: Exact().div(v, w))(x, x.sum(axis=0)))
    assert np.array_equal(exact, x / x.sum(axis=0))
    # under vmap the divisor would be broadcast over the batch again
    batched = np.asarray(jax.jit(jax.vmap(lambda v: Exact().div(v, Exact().cast(20.0))))(x))
    assert np.array_equal(batched, x / 20.0)
    twice = np.asarray(jax.jit(jax.vmap(jax.vmap(lambda v, w: Exact().div(v, w), (0, None)), (0, None)))(x, 3.0))
    assert np.array_equal(twice, x / 3.0)
    assert float(jax.grad(lambda w: Exact().div(jnp.float64(3.0), w))(2.0)) == -0.75


@pytest.mark.parametrize("k", [1, 2, 7, 64, 65, 130])
@pytest.mark.parametrize("accumulation, block", [("recursive", 32), ("pairwise", 32), ("blocked", 8)])
def test_dot_products_follow_the_accumulation_order(k, accumulation, block):
    for mode in ("nearest", "up"):
        arithmetic = Emulated("t8", mode=mode, accumulation=accumulation, block_size=block)
        interpreter = Scalar(get_format("t8"), mode, accumulation, block)
        a = format_numbers(arithmetic, (3, k), 4, spread=3)
        b = format_numbers(arithmetic, (k, 2), 5, spread=3)
        got = np.asarray(jax.jit(arithmetic.matmul)(a, b))
        for i in range(3):
            for j in range(2):
                want = float(interpreter.dot([gmpy2.mpfr(v) for v in a[i]], [gmpy2.mpfr(v) for v in b[:, j]]))
                assert got[i, j] == want, (mode, i, j, got[i, j], want)
        sums = np.asarray(jax.jit(lambda v, arithmetic=arithmetic: arithmetic.sum(v, axis=-1))(a))
        for i in range(3):
            assert sums[i] == float(interpreter.total([gmpy2.mpfr(v) for v in a[i]]))


@pytest.mark.parametrize("accumulation", ["recursive", "pairwise", "blocked"])
def test_loops_and_unrolled_reductions_agree_bit_for_bit(accumulation):
    for mode in ("nearest", "down"):
        unrolled = Emulated("t8", mode=mode, accumulation=accumulation, block_size=4, unroll=64)  # 0 is the default
        looped = Emulated("t8", mode=mode, accumulation=accumulation, block_size=4, unroll=0)
        # K = 42: a ragged last block of 2; a row of negative zeros keeps its sign (-0 + -0 = -0)
        a = format_numbers(unrolled, (3, 42), 8, spread=3).copy()
        a[2] = -0.0
        b = format_numbers(unrolled, (42, 5), 9, spread=3)
        for f, g, args in ((unrolled.matmul, looped.matmul, (a, b)), (unrolled.sum, looped.sum, (a,)),
                           (lambda x: unrolled.sum(x, axis=-1), lambda x: looped.sum(x, axis=-1), (a,))):
            want, got = np.asarray(jax.jit(f)(*args)), np.asarray(jax.jit(g)(*args))
            assert np.array_equal(want, got) and np.array_equal(np.signbit(want), np.signbit(got)), (accumulation, mode)
    with pytest.raises(ValueError, match="unroll"):
        Emulated("t8", unroll=-1)


def test_wider_accumulator_rounds_sums_to_it_and_the_result_to_the_format():
    arithmetic = Emulated("fp16", accumulator="fp32")
    interpreter = Scalar(get_format("fp16"), "nearest", "recursive", 32, get_format("fp32"))
    assert arithmetic.dtype == np.float64  # fp32 sums need a float64 container
    a = format_numbers(arithmetic, (4, 40), 6, spread=2)
    b = format_numbers(arithmetic, (40, 3), 7, spread=2)
    got = np.asarray(arithmetic.matmul(a, b))
    for i in range(4):
        for j in range(3):
            assert got[i, j] == float(interpreter.dot([gmpy2.mpfr(v) for v in a[i]], [gmpy2.mpfr(v) for v in b[:, j]]))


def test_container_choice_and_unsupported_formats():
    assert Emulated("fp16").dtype == np.float32 and Emulated("fp8_e5m2").dtype == np.float32
    assert Emulated("bf16").dtype == np.float64  # its subnormals lie below float32's normal range
    assert Emulated("t25").dtype == np.float64 and Emulated("t53").dtype == np.float64
    with pytest.raises(ValueError, match="cannot be emulated exactly"):
        Emulated("t30")
    with pytest.raises(ValueError, match="accumulation"):
        Emulated("fp16", accumulation="kahan")
    with pytest.raises(ValueError, match="rounding mode"):
        Emulated("fp16", mode="nearest_away")
    assert hash(Emulated("fp16")) == hash(Emulated(get_format("fp16")))


def test_cast_rounds_float64_operands_once_before_narrowing():
    x = np.array([1 + 2.0**-11 + 2.0**-40])  # just above an fp16 tie: once -> up, via float32 -> down
    assert float(Emulated("fp16").cast(x)[0]) == 1 + 2.0**-10


@pytest.mark.parametrize("name", ["t10", "bf16", "fp16"])
def test_a_stochastically_rounded_sum_rounds_away_with_the_exact_probability(name):
    # x + y = 1 + 0.3 ulp exactly: away from zero (to 1 + ulp) with probability 0.3, in the fast
    # path (t10 in float64, bf16 in float32) and the general one (fp16 in float32)
    arithmetic = Emulated(name, mode="stochastic")
    ulp = 2 * get_format(name).unit_roundoff
    draws = 40_000
    x = jnp.ones(draws, arithmetic.dtype)
    y = jnp.full(draws, 0.3 * ulp, arithmetic.dtype)
    got = np.asarray(jax.jit(arithmetic.add)(x, y, key=jax.random.key(11)), np.float64)
    assert set(np.unique(got)) <= {1.0, 1.0 + ulp}
    frequency = np.mean(got > 1)
    assert abs(frequency - 0.3) <= 6 * np.sqrt(0.3 * 0.7 / draws), frequency


def test_stochastic_matmul_needs_a_key_and_is_reproducible():
    arithmetic = Emulated("bf16", mode="stochastic")
    a, b = format_numbers(arithmetic, (3, 5), 8), format_numbers(arithmetic, (5, 2), 9)
    with pytest.raises(ValueError, match="PRNG key"):
        arithmetic.matmul(a, b)
    one = arithmetic.matmul(a, b, key=jax.random.key(0))
    assert np.array_equal(np.asarray(one), np.asarray(arithmetic.matmul(a, b, key=jax.random.key(0))))


# -- dot_general: lax.dot_general's meaning in the policy's arithmetic ------------------------

def _scalar_dot(rows, cols, arithmetic):
    """An independent recursion: every product rounded, then summed left to right, one rounding each."""
    out = np.empty((rows.shape[0], cols.shape[1]))
    for i in range(rows.shape[0]):
        for j in range(cols.shape[1]):
            total = float(arithmetic.mul(rows[i, 0], cols[0, j]))
            for k in range(1, rows.shape[1]):
                total = float(arithmetic.add(np.float64(total), arithmetic.mul(rows[i, k], cols[k, j])))
            out[i, j] = total
    return out


def test_dot_general_is_the_rounded_recursion_for_any_dimension_numbers():
    arithmetic = Emulated("t8")
    rng = np.random.default_rng(3)
    lhs = np.asarray(arithmetic.cast(rng.standard_normal((2, 3, 4))))  # (batch, contract_a, free)
    rhs = np.asarray(arithmetic.cast(rng.standard_normal((2, 5, 3))))  # (batch, free, contract_a)
    got = np.asarray(jax.jit(lambda a, b: arithmetic.dot_general(a, b, (((1,), (2,)), ((0,), (0,)))))(lhs, rhs))
    assert got.shape == jax.eval_shape(lambda a, b: jax.lax.dot_general(a, b, (((1,), (2,)), ((0,), (0,)))),
                                       lhs, rhs).shape
    for batch in range(2):
        want = _scalar_dot(lhs[batch].T, rhs[batch].T, arithmetic)
        assert np.array_equal(got[batch], want)
    # two contracting dimensions: summed in row-major order of (dim 0, dim 1)
    a = np.asarray(arithmetic.cast(rng.standard_normal((3, 2, 4))))
    b = np.asarray(arithmetic.cast(rng.standard_normal((3, 2, 5))))
    two = np.asarray(arithmetic.dot_general(a, b, (((0, 1), (0, 1)), ((), ()))))
    assert np.array_equal(two, _scalar_dot(a.reshape(6, 4).T, b.reshape(6, 5), arithmetic))
    with pytest.raises(ValueError, match="contracting dimensions differ"):
        arithmetic.dot_general(a, b, (((0,), (2,)), ((), ())))


def test_dot_general_plugs_into_flax_linear_and_einsum():
    from flax import nnx

    fp16 = Emulated("fp16")
    layer = nnx.Linear(6, 3, use_bias=False, dot_general=fp16.dot_general, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (4, 6), jnp.float32)
    got = nnx.jit(lambda m, v: m(v))(layer, x)
    want = jax.jit(lambda v, w: fp16.matmul(fp16.cast(v), fp16.cast(w)))(x, layer.kernel[...])
    assert got.dtype == jnp.float32 and np.array_equal(np.asarray(got), np.asarray(want))
    # an einsum with a batch dimension, under jit and vmap, equals the matrix products one by one
    a = fp16.cast(jax.random.normal(jax.random.key(2), (5, 4, 7)))
    b = fp16.cast(jax.random.normal(jax.random.key(3), (5, 7, 2)))
    batched = jax.jit(lambda p, q: fp16.einsum("bik,bkj->bij", p, q))(a, b)
    mapped = jax.jit(jax.vmap(lambda p, q: fp16.einsum("ik,kj->ij", p, q)))(a, b)
    single = jax.jit(fp16.matmul)
    one_by_one = np.stack([np.asarray(single(a[i], b[i])) for i in range(5)])
    assert np.array_equal(np.asarray(batched), one_by_one) and np.array_equal(np.asarray(mapped), one_by_one)
    einsum_layer = nnx.Einsum("bk,kn->bn", (7, 2), einsum_op=functools.partial(jnp.einsum, _dot_general=fp16.dot_general),
                              rngs=nnx.Rngs(0))
    got = nnx.jit(lambda m, v: m(v))(einsum_layer, a[0])  # no bias_shape: no bias
    assert np.array_equal(np.asarray(got), np.asarray(single(a[0], fp16.cast(einsum_layer.kernel[...]))))
    with pytest.raises(ValueError, match="would not be rounded"):
        fp16.einsum("ik->i", a[0])


def test_exact_dot_general_is_lax_dot_general_in_float64():
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((4, 2))
    dims = (((1,), (0,)), ((), ()))
    want = jax.lax.dot_general(jnp.asarray(a), jnp.asarray(b), dims, precision=jax.lax.Precision.HIGHEST)
    assert np.array_equal(np.asarray(Exact().dot_general(a, b, dims)), np.asarray(want))
    with pytest.raises(ValueError, match="cannot hold"):
        Emulated("t24").dot_general(a, b, dims, preferred_element_type=jnp.float32)
