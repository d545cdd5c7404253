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
    D = np.asarray(matmul(unit, A, B))
    for i in range(3):
        for j in range(2):
            assert D[i, j] == float(dot(unit, A[i], B[:, j]))
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


@pytest.mark.parametrize("every", [None, 8])
def test_the_error_bound_is_never_below_the_error_on_the_adversarial_operands(every):
    ratios = []
    # promotion on one unit per instruction family and input width (a program each)
    names = sorted(UNITS) if every is None else ["volta-mma-fp16-fp32", "ampere-mma-tf32-fp32", "ada-mma-fp8_e4m3-fp32",
                                                   "hopper-wgmma-fp8_e5m2-fp32", "blackwell-tcgen05-fp16-fp16"]
    for name in names:
        unit = UNITS[name]
        a, b, c = FIXTURES[f"a/{unit.inputs}"], FIXTURES[f"b/{unit.inputs}"], FIXTURES[f"c/{unit.accumulator}"]
        got = np.asarray(DOT(unit, a, b, c) if every is None else PROMOTED(unit, a, b, c, every=every))
        exact = exact_dot(a, b, c)
        ok = np.isfinite(got)  # no overflow: the bound's hypothesis (the overflow rows are left out)
        error = np.abs(got - exact)[ok]
        bound = np.asarray(BOUND(unit, a, b, c, every=every))[ok]
        slack = 2.0**-52 * np.abs(exact[ok])  # fsum's own rounding
        assert np.all(error <= bound + slack), (name, np.max(error / bound))
        measured = error > 0
        ratios.append(np.min(bound[measured] / error[measured]) if measured.any() else np.inf)
    assert min(ratios) >= 1 and np.isfinite(min(ratios))  # some row comes within a finite factor
