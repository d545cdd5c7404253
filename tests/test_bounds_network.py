"""Lemma 4.29 and Theorem 4.30 against errors measured under Emulated (recursive)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import paper_reference
import pytest

from boundlab import Emulated, bounds
from boundlab.bounds import theorem_4_30
from boundlab.models.paper import compare, init

pytestmark = pytest.mark.fast_compile  # inequalities, tables, files: tests/conftest.py

BATCH = 12
# the coarsest and the finest precision (t = 16 added 6 configurations and nothing the two ends miss;
# analyze's tests cover t = 12, 20).  The default run takes every shape and both norms at both ends
# of t (4 cases); the other 8 run with -m slow.
SHAPES = ((2, 3, 3, 1), (4, 3, 5, 2), (5, 4, 4, 4))
DEFAULT = [(10, "layer", SHAPES[0]), (10, "rms", SHAPES[2]), (24, "layer", SHAPES[1]), (24, "rms", SHAPES[2])]
CONFIGS = DEFAULT + [pytest.param(*case, marks=pytest.mark.slow)
                     for case in itertools.product((10, 24), ("layer", "rms"), SHAPES) if case not in DEFAULT]


@pytest.mark.parametrize("t, norm, shape", CONFIGS)
def test_theorem_4_30_is_never_below_the_measured_error(t, norm, shape):
    d, n, D, L = shape
    arithmetic = Emulated(f"t{t}")
    u = arithmetic.unit_roundoff
    keys = jax.random.split(jax.random.key(t * 100 + L), BATCH)
    params, X = jax.vmap(lambda k: init(k, "figure4", d=d, n=n, D=D, L=L))(keys)
    rounded = jax.tree.map(lambda a: arithmetic.cast(a).astype(jnp.float64), (params, X))
    measured = jax.vmap(lambda p, x: compare(p, x, arithmetic, norm).componentwise)(params, X)
    theorem = jax.vmap(lambda p, x: theorem_4_30(p, x, norm=norm, u=u))(*rounded)
    free = jax.vmap(lambda p, x: theorem_4_30(p, x, norm=norm, u=u, sigma_min_free=True))(*rounded)
    for record in (theorem, free):
        valid = np.asarray(record.valid)
        if t >= 16:  # at t = 10 the genericity (alpha) hypotheses fail often, and are flagged
            assert valid.sum() >= BATCH // 2
        values = np.asarray(record.value(u))
        layerwise = np.asarray(record.terms["layerwise"]) * u
        assert np.all(np.asarray(measured)[valid] <= layerwise[valid])
        assert np.all(layerwise <= values * (1 + 1e-12))
    # the statement's name and its factors
    assert theorem.statement == "Theorem 4.30"
    assert np.asarray(theorem.terms["K_l"]).shape == (BATCH, L)


def test_theorem_4_30_is_differentiable_in_the_weights():
    params, X = init(jax.random.key(1), "figure4", d=3, n=3, D=4, L=2)
    for norm in ("layer", "rms"):
        grads = jax.grad(lambda p: jnp.log(theorem_4_30(p, X, norm=norm, u=2.0**-10).coefficient))(params)
        assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves(grads))


def test_erratum_theorem_4_30_part_2_layer_norm_factors_belong_inside_the_product():
    """Part 2 prints (1 + max_t ||x_t^(l-1)||_inf/||c||_-inf)(1 + max_t ||y_t^(l-1)||_inf/||c||_-inf) outside
    prod_l although they depend on l: the printed formula has a free index.  The proof (Lemma 4.29
    at each layer) puts them inside, which is what ``theorem_4_30`` evaluates."""
    params, X = init(jax.random.key(4), "figure4", d=4, n=4, D=4, L=3)
    u = 2.0**-20
    record = theorem_4_30(params, X, norm="layer", u=u)
    rx = np.asarray(record.terms["1 + max_t ||x_t||_inf/||c(x_t)||_-inf"])
    ry = np.asarray(record.terms["1 + max_t ||y_t||_inf/||c(y_t)||_-inf"])
    assert len(np.unique(rx)) == 3 and len(np.unique(ry)) == 3  # one value per layer: l is not free to drop
    # the factors of each layer from the independent implementation, inside the product
    numpy_params = {k: np.asarray(v) for k, v in params._asdict().items()}
    inputs, factors = np.asarray(X), []
    for layer in range(3):
        layer_factors, inputs = paper_reference.layer_factors(inputs, {k: v[layer] for k, v in numpy_params.items()},
                                                             "layer")
        factors.append(layer_factors)
    d, n, D, L = 4, 4, 4, 3
    constant = 16.0**L / 15 * (8 * n + 34 * d + D)
    inside = np.prod([f["K_l"] for f in factors]) * constant
    assert float(record.coefficient) == pytest.approx(inside, rel=2.0**-40)
    # the two readings of the printed formula that keep the factors of one layer differ
    outside = np.prod([f["eta_l"] * f["G_l"] for f in factors]) * constant
    key_x, key_y = "1 + max_t ||x_t||_inf/||c(x_t)||_-inf", "1 + max_t ||y_t||_inf/||c(y_t)||_-inf"
    first = outside * factors[0][key_x] * factors[0][key_y]
    last = outside * factors[-1][key_x] * factors[-1][key_y]
    assert first != pytest.approx(last) and max(first, last) < float(record.coefficient)


def test_both_variants_from_one_set_of_factors_equal_the_theorem_evaluated_alone():
    params, X = init(jax.random.key(2), "figure4", d=4, n=3, D=5, L=3)
    u = 2.0**-16
    factors = bounds.network_factors(params, X, norm="layer", u=u)
    for free in (False, True):
        alone = bounds.theorem_4_30(params, X, norm="layer", u=u, sigma_min_free=free)
        shared = bounds.theorem_4_30(params, X, norm="layer", u=u, sigma_min_free=free, factors=factors)
        assert float(alone.coefficient) == float(shared.coefficient)
        assert np.array_equal(np.asarray(alone.terms["K_l"]), np.asarray(shared.terms["K_l"]))
    # computed inside the exact pass over the layers, or from the stacked intermediates of forward
    from boundlab.arithmetic import Exact
    from boundlab.models.paper import forward

    for norm in ("layer", "rms"):
        _, stacked = forward(params, X, Exact(), norm, return_intermediates=True, cast=False)
        one_pass = bounds.network_factors(params, X, norm=norm, u=u)
        given = bounds.network_factors(params, X, norm=norm, u=u, intermediates=stacked)
        for a, b in zip(jax.tree.leaves(one_pass), jax.tree.leaves(given), strict=True):
            assert np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True)
    with pytest.raises(ValueError, match="unit roundoff"):
        bounds.network_factors(params, X, u=-1.0)


def test_a_traced_u_outside_0_1_gives_nan_and_a_false_flag_never_a_finite_number():
    # under jit a u <= 0 or >= 1 cannot raise; theorem_4_30 returned a finite (negative) bound
    params, X = init(jax.random.key(4), "figure4", d=3, n=3, D=4, L=2)
    us = jnp.asarray([2.0**-11, -(2.0**-11), 0.0, 1.0, 2.0, jnp.nan, jnp.inf])
    records = jax.jit(jax.vmap(lambda u: theorem_4_30(params, X, norm="layer", u=u)))(us)
    ok = np.asarray(records.flags["0 < u < 1"])
    assert ok.tolist() == [True] + [False] * 6 and np.asarray(records.valid)[1:].tolist() == [False] * 6
    for leaf in jax.tree.leaves((records.coefficient, records.input_gain, records.terms)):
        leaf = np.asarray(leaf)
        if np.issubdtype(leaf.dtype, np.floating):
            assert np.all(np.isnan(leaf[1:])) and not np.any(np.isnan(leaf[0]))
    alone = theorem_4_30(params, X, norm="layer", u=2.0**-11)  # the valid u: the same record as without the guard
    assert float(alone.coefficient) == float(records.coefficient[0]) and bool(alone.flags["0 < u < 1"])
    lemma = jax.jit(lambda u: bounds.lemma_4_6(X[:, 0], u=u))(-1e-3)  # every statement is guarded the same way
    assert np.isnan(float(lemma.coefficient)) and not bool(lemma.valid)
    for u in (0.0, -(2.0**-11), 1.0, float("nan")):  # a concrete u is refused with a message
        with pytest.raises(ValueError, match=r"u must be a unit roundoff in \(0, 1\)"):
            theorem_4_30(params, X, norm="layer", u=u)
