"""boundlab.matrix_units against MMA-Sim (arXiv 2511.10909, mmasim 2.1.1), bit for bit: every
named unit on random and adversarial operands (tests/data/mma_fixtures.npz, written by
tests/data/make_mma_fixtures.py; PyTorch is not needed here), and the model's own claims."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from boundlab.matrix_units import UNITS, MatrixUnit, dot, dot_error_bound, get_unit, matmul, promoted_dot

FIXTURES = np.load(Path(__file__).parent / "data" / "mma_fixtures.npz")
DOT = jax.jit(dot, static_argnums=0)  # one program per unit, shared by the tests
PROMOTED = jax.jit(promoted_dot, static_argnums=0, static_argnames=("every",))
BOUND = jax.jit(dot_error_bound, static_argnums=0, static_argnames=("every",))


def same_bits(got, want):
    """Equal as numbers, +0 and -0 apart, NaN equal to NaN."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return (got == want) & (np.signbit(got) == np.signbit(want)) | (np.isnan(got) & np.isnan(want))


def test_every_unit_has_a_fixture_and_every_fixture_a_unit():
    assert {key[2:] for key in FIXTURES.files if key.startswith("d/")} == set(UNITS)
    assert len(UNITS) >= 30


@pytest.mark.parametrize("name", sorted(UNITS))
def test_the_unit_equals_mmasim_bit_for_bit(name):
    unit = UNITS[name]
    a, b = FIXTURES[f"a/{unit.inputs}"], FIXTURES[f"b/{unit.inputs}"]
    c, want = FIXTURES[f"c/{unit.accumulator}"], FIXTURES[f"d/{name}"]
    got = np.asarray(DOT(unit, a, b, c))
    mismatched = np.flatnonzero(~same_bits(got, want))
    assert mismatched.size == 0, f"{mismatched.size} of {want.size} rows differ: {mismatched[:5]}, " \
                                 f"got {got[mismatched[:3]]}, want {want[mismatched[:3]]}"


def test_truncation_is_what_the_fp8_path_loses():
    # Hopper's wgmma FP8 path aligns to the largest exponent and keeps F = 13 fractional bits:
    # beside 31 products of 1, the product 2^-9 2^-5 = 2^-14 (both e4m3 numbers) is truncated away
    a = jnp.concatenate([jnp.ones(31), jnp.asarray([2.0**-9])])
    b = jnp.concatenate([jnp.ones(31), jnp.asarray([2.0**-5])])
    assert float(dot(get_unit("hopper-wgmma-fp8_e4m3-fp32"), a, b)) == 31.0
    # Blackwell's tcgen05 keeps F = 25 bits and writes back toward zero into float32, which holds it
    assert float(dot(get_unit("blackwell-tcgen05-fp8_e4m3-fp32"), a, b)) == 31.0 + 2.0**-14


def test_matmul_is_the_dot_of_rows_and_columns_and_vmaps():
    unit = get_unit("ampere-mma-fp16-fp32")
    rng = np.random.default_rng(0)
    A = np.asarray(rng.standard_normal((3, 20)), np.float16).astype(np.float64)
    B = np.asarray(rng.standard_normal((20, 2)), np.float16).astype(np.float64)
    D = np.asarray(jax.jit(matmul, static_argnums=0)(unit, A, B))
    one = jax.jit(dot, static_argnums=0)
    for i in range(3):
        for j in range(2):
            assert D[i, j] == float(one(unit, A[i], B[:, j]))
    batched = jax.vmap(lambda a: matmul(unit, a, B))(np.stack([A, -A]))
    assert np.array_equal(np.asarray(batched[1]), -D)


def test_bad_units_are_refused_in_one_line():
    with pytest.raises(ValueError, match="write_back"):
        MatrixUnit("x", "fp16", "fp32", 24, 8, "RZ", -132)
    with pytest.raises(ValueError, match="unknown matrix unit"):
        get_unit("h100")


def test_the_fixtures_tell_every_parameter_apart():
    # the bit-for-bit test can fail: one bit of F less or more, half the group, another write-back
    # rounding, another exponent for zero terms, each changes results on the stored operands
    import dataclasses

    changes = {"F - 1": lambda u: dataclasses.replace(u, F=u.F - 1), "F + 1": lambda u: dataclasses.replace(u, F=u.F + 1),
               "group / 2": lambda u: dataclasses.replace(u, group=max(1, u.group // 2)),
               "round to nearest": lambda u: dataclasses.replace(u, write_back="RNE-FP32"),
               "e_zero + 8": lambda u: dataclasses.replace(u, e_zero=u.e_zero + 8)}
    program = jax.jit(dot, static_argnums=0)
    sample = ["volta-mma-fp16-fp32", "turing-mma-fp16-fp16", "ampere-mma-bf16-fp32", "ampere-mma-tf32-fp32",
              "ada-mma-fp8_e5m2-fp16", "hopper-wgmma-fp8_e4m3-fp32", "blackwell-tcgen05-fp16-fp16"]
    for label, change in changes.items():
        names = [name for name in sample if label != "round to nearest" or UNITS[name].accumulator == "fp32"]
        differing = 0
        for name in names:
            unit = UNITS[name]
            got = program(change(unit), FIXTURES[f"a/{unit.inputs}"], FIXTURES[f"b/{unit.inputs}"],
                          FIXTURES[f"c/{unit.accumulator}"])
            differing += int(np.any(~same_bits(got, FIXTURES[f"d/{name}"])))
        assert differing >= (1 if label in ("e_zero + 8", "F + 1") else len(names) // 2), (label, differing)


def exact_dot(a, b, c):
    """a^T b + c to float64's last bit (math.fsum of exact products), row by row."""
    import math

    a, b, c = (np.asarray(x, np.float64) for x in (a, b, c))
    return np.asarray([math.fsum(list(a[i] * b[i]) + [c[i]]) for i in range(len(c))])


@pytest.mark.parametrize("every", [None, "2 groups"])
def test_the_error_bound_is_never_below_the_error_on_the_adversarial_operands(every):
    ratios = []
    # promotion on one unit per instruction family and input width (a program each)
    names = sorted(UNITS) if every is None else ["volta-mma-fp16-fp32", "ampere-mma-tf32-fp32", "ada-mma-fp8_e4m3-fp32",
                                                   "hopper-wgmma-fp8_e5m2-fp32", "blackwell-tcgen05-fp16-fp16",
                                                   "cdna3-mfma-bf16-fp32"]
    for name in names:
        unit = UNITS[name]
        interval = None if every is None else 2 * unit.group
        a, b, c = FIXTURES[f"a/{unit.inputs}"], FIXTURES[f"b/{unit.inputs}"], FIXTURES[f"c/{unit.accumulator}"]
        got = np.asarray(DOT(unit, a, b, c) if interval is None else PROMOTED(unit, a, b, c, every=interval))
        exact = exact_dot(a, b, c)
        ok = np.isfinite(got)  # no overflow: the bound's hypothesis (the overflow rows are left out)
        error = np.abs(got - exact)[ok]
        bound = np.asarray(BOUND(unit, a, b, c, every=interval))[ok]
        slack = 2.0**-52 * np.abs(exact[ok])  # fsum's own rounding
        assert np.all(error <= bound + slack), (name, np.max(error / bound))
        measured = error > 0
        ratios.append(np.min(bound[measured] / error[measured]) if measured.any() else np.inf)
    assert min(ratios) >= 1 and np.isfinite(min(ratios))  # some row comes within a finite factor


def _fold_float32(start, parts):
    """start + parts[0] + parts[1] + ..., numpy float32 additions (round to nearest)."""
    total = np.float32(start)
    for part in parts:
        total = np.float32(total + np.float32(part))
    return total


def test_promotion_and_split_k_add_the_units_chunks_in_float32():
    # independent of the recipe code: the chunks' dot products (each checked against MMA-Sim
    # above) added with numpy's float32 arithmetic, in the order DeepSeek-V3 and split-K use
    unit = UNITS["hopper-wgmma-fp8_e4m3-fp32"]
    a, b, c = FIXTURES["a/fp8_e4m3"], FIXTURES["b/fp8_e4m3"], FIXTURES["c/fp32"]
    K = a.shape[-1]  # 44: a last, shorter chunk
    promoted = np.asarray(PROMOTED(unit, a, b, c, every=32))
    split = np.asarray(DOT(unit.recipe(split_k=2), a, b, c))
    both = np.asarray(DOT(unit.recipe(promote_every=32, split_k=2), a[:, :40], b[:, :40], c))
    for i in range(len(c)):
        if not np.all(np.isfinite([promoted[i], split[i]])):
            continue
        chunks = [float(DOT(unit, a[i, s:s + 32], b[i, s:s + 32])) for s in range(0, K, 32)]
        assert same_bits(promoted[i], _fold_float32(c[i], chunks)), i
        slices = [float(DOT(unit, a[i, s:s + 32], b[i, s:s + 32])) for s in (0, 32)]  # ceil(44 / 2) -> 32
        assert same_bits(split[i], _fold_float32(c[i], slices)), i
        # 40 products in 2 slices of 32 (the second shorter), each promoted every 32: one chunk each
        halves = [float(DOT(unit, a[i, s:min(s + 32, 40)], b[i, s:min(s + 32, 40)])) for s in (0, 32)]
        assert same_bits(both[i], _fold_float32(c[i], [_fold_float32(0.0, [h]) for h in halves])), i


def _ml_round(x, fmt):
    import ml_dtypes

    return np.asarray(x, np.float64).astype({"fp8_e4m3": ml_dtypes.float8_e4m3fn, "bf16": ml_dtypes.bfloat16}[fmt]) \
        .astype(np.float64)


@pytest.mark.parametrize("scaling", [None, "tensor", "block"])
def test_product_quantises_scales_and_dequantises_as_the_fp8_recipes_do(scaling):
    # reference: ml_dtypes' float8 cast for the quantisation, numpy float32 for the scales and the
    # dequantisation, boundlab's checked ``dot`` for each chunk
    from boundlab.matrix_units import product

    rng = np.random.default_rng(3)
    m, n, K = 3, 2, 300
    A = rng.standard_normal((m, K)) * np.asarray([[2.0**-14], [1.0], [2.0**6]])  # e4m3: 2^-9 ... 448
    B = rng.standard_normal((K, n)) * 0.02
    unit = get_unit("hopper-wgmma-fp8_e4m3-fp32", scaling=scaling)
    got = np.asarray(jax.jit(product, static_argnums=0)(unit, A, B))
    f32 = np.float32
    for i in range(m):
        for j in range(n):
            a, b = A[i], B[:, j]
            if scaling is None:
                want = float(DOT(unit, _ml_round(a, "fp8_e4m3"), _ml_round(b, "fp8_e4m3")))
            elif scaling == "tensor":
                sa, sb = f32(np.max(np.abs(A)) / 448.0), f32(np.max(np.abs(B)) / 448.0)
                d = float(DOT(unit, _ml_round(a / sa, "fp8_e4m3"), _ml_round(b / sb, "fp8_e4m3")))
                want = f32(f32(d) * f32(sa * sb))
            else:
                parts = []
                for s in range(0, K, 128):
                    sa, sb = f32(np.max(np.abs(a[s:s + 128])) / 448.0), f32(np.max(np.abs(b[s:s + 128])) / 448.0)
                    d = float(DOT(unit, _ml_round(a[s:s + 128] / sa, "fp8_e4m3"), _ml_round(b[s:s + 128] / sb, "fp8_e4m3")))
                    parts.append(f32(f32(d) * f32(sa * sb)))
                want = _fold_float32(0.0, parts)
            assert same_bits(got[i, j], want), (i, j, got[i, j], want)
    if scaling is None:  # without scales the small rows of A underflow in e4m3: scaling is what keeps them
        assert np.any(np.abs(got - A @ B) > 0.5 * np.abs(A @ B))


def test_the_recipes_bad_choices_are_refused_in_one_line_naming_the_choices():
    with pytest.raises(ValueError, match=r"multiple of the group length 32 \(32, 64, 128"):
        get_unit("hopper-wgmma-fp8_e4m3-fp32", promote_every=100)
    with pytest.raises(ValueError, match="K = 0"):
        dot(UNITS["ampere-mma-bf16-fp32"], np.zeros((2, 0)), np.zeros((2, 0)))
    with pytest.raises(ValueError, match="hopper-wgmma has no .* among .*fp8_e4m3-fp32"):
        get_unit("hopper-wgmma-fp4-fp32")
    with pytest.raises(ValueError, match="families .*cdna3-mfma"):
        get_unit("mi300")
    with pytest.raises(ValueError, match="block scaling .* promote_every must equal scale_block"):
        get_unit("hopper-wgmma-fp8_e4m3-fp32", scaling="block", promote_every=256)
    with pytest.raises(ValueError, match="split_k"):
        get_unit("hopper-wgmma-fp8_e4m3-fp32", split_k=0)


# -- a unit as the accumulation of Emulated: dot_general, the transformer, emulate, first_order --

HOPPER_FP8 = "hopper-wgmma-fp8_e4m3-fp32"


def test_emulated_dot_general_is_the_unit_product_rounded_into_the_format():
    from boundlab import Emulated, round_to

    from boundlab.matrix_units import matmul_jit

    rng = np.random.default_rng(5)
    A, B = rng.standard_normal((4, 70)), rng.standard_normal((70, 3))
    for fmt, unit in (("fp8_e4m3", get_unit(HOPPER_FP8)), ("bf16", get_unit(HOPPER_FP8, promote_every=32)),
                      ("bf16", UNITS["cdna3-mfma-bf16-fp32"]), ("fp16", UNITS["volta-mma-fp16-fp16"])):
        policy = Emulated(fmt, accumulation=unit if fmt != "fp8_e4m3" else unit.name)  # a name works too
        assert policy.unit == unit
        got = np.asarray(jax.jit(policy.dot_general, static_argnums=2)(A, B, (((1,), (0,)), ((), ()))), np.float64)
        @jax.jit
        def reference(A, B):
            a = round_to(round_to(A, fmt), unit.inputs)  # operands into the format, then into the unit's input
            b = round_to(round_to(B, fmt), unit.inputs)
            return round_to(matmul_jit(unit, a, b), fmt)

        want = np.asarray(reference(A, B))
        assert np.array_equal(got, want, equal_nan=True), (fmt, unit.name)
    # batched by vmap: the same numbers
    batched = jax.jit(jax.vmap(lambda x: policy.matmul(policy.cast(x), policy.cast(B))))(np.stack([A, 2 * A]))
    assert np.array_equal(np.asarray(batched[0], np.float64), got)
    # differentiable: straight through, the derivative of the exact product
    grad = jax.jit(jax.grad(lambda x: jnp.sum(policy.matmul(policy.cast(x), policy.cast(B)).astype(jnp.float64))))(A)
    assert np.allclose(np.asarray(grad), np.broadcast_to(np.sum(np.asarray(policy.cast(B), np.float64), axis=1), A.shape))


def test_the_paper_network_runs_on_a_unit_as_emulate_runs_it_and_first_order_bounds_it():
    import boundlab
    from boundlab import Emulated, Exact
    from boundlab.models.paper.inits import init
    from boundlab.models.paper.network import forward
    from boundlab.models.paper.plain import plain_forward

    params, X = init(jax.random.key(0), "figure4", d=8, n=8, D=8, L=1)
    exact = np.asarray(forward(params, X, Exact()))
    policy = Emulated("fp8_e4m3", accumulation=HOPPER_FP8)  # the case: every operation in e4m3
    hand = jax.jit(lambda p, x: forward(p, x, policy))(params, X)
    traced = jax.jit(boundlab.emulate(plain_forward, policy))(params, X)
    assert np.array_equal(np.asarray(hand), np.asarray(traced))
    assert 0 < np.max(np.abs(np.asarray(hand, np.float64) - exact)) < 1  # rounded, not garbage
    # first_order with the unit's local error model (scaled and promoted recipes: the test below)
    record = boundlab.first_order(lambda p, x: plain_forward(p, x)[:, -1], policy)(params, X)
    error = np.abs(np.asarray(traced, np.float64)[:, -1] - np.asarray(record.value))
    assert np.all(error <= np.asarray(record.bound)), np.max(error / np.asarray(record.bound))
    assert np.all(np.isfinite(np.asarray(record.bound)))


def test_first_order_error_is_never_below_the_units_error_on_adversarial_products():
    from boundlab.matrix_units import first_order_error, product

    rng = np.random.default_rng(7)
    m, K, n = 6, 160, 5
    A = rng.standard_normal((m, K)) * 2.0 ** rng.integers(-6, 6, (m, K))  # wide exponent spreads
    B = rng.standard_normal((K, n))
    A[1, 1::2] = A[1, ::2]  # cancellation
    B[1::2, 1] = -B[::2, 1]
    ratios = {}
    for unit in (get_unit(HOPPER_FP8), get_unit(HOPPER_FP8, promote_every=64), get_unit(HOPPER_FP8, split_k=3),
                 get_unit(HOPPER_FP8, scaling="tensor"), get_unit(HOPPER_FP8, scaling="block", scale_block=64),
                 UNITS["ampere-mma-bf16-fp32"], UNITS["cdna3-mfma-fp16-fp32"], UNITS["turing-mma-fp16-fp16"]):
        Ain, Bin = (A, B) if unit.scaling else (A * 2.0**-4, B * 2.0**-4)  # in range without scales
        got = np.asarray(jax.jit(product, static_argnums=0)(unit, Ain, Bin))
        error = np.abs(got - Ain @ Bin)
        bound = np.asarray(jax.jit(first_order_error, static_argnums=0)(unit, Ain, Bin))
        assert np.all(np.isfinite(got))
        assert np.all(error <= bound * (1 + 2.0**-8)), (str(unit), np.max(error / bound))  # first order: O(u^2) slack
        ratios[str(unit)] = float(np.median(bound / np.maximum(error, 1e-300)))
    assert all(r > 1 for r in ratios.values())


def test_a_unit_in_emulated_refuses_bad_choices_in_one_line():
    from boundlab import Emulated

    with pytest.raises(ValueError, match="hopper-wgmma has no 'hopper-wgmma-fp4-fp32'"):
        Emulated("bf16", accumulation="hopper-wgmma-fp4-fp32")
    with pytest.raises(ValueError, match="recursive.*or a matrix unit"):
        Emulated("bf16", accumulation="kahan")
    with pytest.raises(ValueError, match="its own accumulator"):
        Emulated("bf16", accumulation=HOPPER_FP8, accumulator="fp32")
    with pytest.raises(ValueError, match="K = 0"):
        from boundlab.matrix_units import product

        product(get_unit(HOPPER_FP8), np.zeros((2, 0)), np.zeros((0, 3)))


def test_flax_modules_take_a_unit_unchanged():
    from flax import nnx

    from boundlab import Emulated, round_to
    from boundlab.matrix_units import product
    from boundlab.models import Transformer

    from boundlab.models import to_params
    from boundlab.models.paper import forward

    unit = get_unit(HOPPER_FP8, scaling="tensor")
    policy = Emulated("bf16", accumulation=unit)
    model = Transformer(8, 16, 1, rngs=nnx.Rngs(0))
    X = jax.random.normal(jax.random.key(1), (8, 6))
    out = np.asarray(nnx.jit(lambda m, x: m(x, arithmetic=policy))(model, X))
    assert np.array_equal(out, np.asarray(jax.jit(lambda p, x: forward(p, x, policy))(to_params(model), X)))
    assert np.all(np.isfinite(out))
    linear = nnx.Linear(8, 4, use_bias=False, dot_general=policy.dot_general, rngs=nnx.Rngs(2))  # flax's own layer
    y = np.asarray(nnx.jit(lambda m, x: m(x))(linear, X.T.astype(jnp.float32)), np.float64)

    @jax.jit
    def reference(x, kernel):
        operands = [round_to(jnp.asarray(v, jnp.float64), "bf16") for v in (x, kernel)]
        return round_to(product(unit, *operands), "bf16")

    assert np.array_equal(y, np.asarray(reference(X.T, linear.kernel[...])))


def test_exact_powers_of_two_and_round_half_even_without_libm():
    # the unit steps' 2^e and round-half-even are built from bits and trunc (Triton has neither a
    # round primitive nor, on a GPU, a pow that must be exact): numpy's ldexp and round, bit for bit
    from boundlab.matrix_units.chain import pow2, round_half_even

    e = np.arange(-1200, 1200)
    with np.errstate(over="ignore"):
        assert np.array_equal(np.asarray(jax.jit(pow2)(jnp.asarray(e, jnp.int32))), np.ldexp(1.0, e))
    halves = np.arange(-4000, 4000) / 4.0
    x = np.concatenate([halves, np.random.default_rng(0).normal(size=5000) * 3000, [0.0, -0.0, 2.0**52 + 1, -(2.0**60)]])
    got, want = np.asarray(jax.jit(round_half_even)(x)), np.round(x)
    assert np.array_equal(got, want) and np.array_equal(np.signbit(got), np.signbit(want))
