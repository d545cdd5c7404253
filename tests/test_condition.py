"""Section 3: closed forms against jax.jacfwd, on >= 1000 random inputs per lemma.

Each hypothesis example draws a size and a seed; the lemma is then checked on a vmapped batch
of BATCH inputs, and EXAMPLES examples run, so every lemma sees EXAMPLES * BATCH >= 1000 inputs.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tolerances import relative_difference, relative_tolerance

from boundlab.condition import Condition, closed_forms, componentwise, condition_report, jacobian, mixed, normwise
from boundlab.models import blocks
from boundlab.models.paper import init

pytestmark = pytest.mark.fast_compile  # inequalities, tables, files: tests/conftest.py

BATCH, EXAMPLES = 50, 10  # each example draws shapes and compiles: 10 keep the run short
TOL = relative_tolerance()
sizes = st.sampled_from([2, 3, 5, 8, 16])
seeds = st.integers(0, 2**31 - 1)


def random_vectors(seed, d, batch=BATCH):
    rng = np.random.default_rng(seed)
    scales = np.exp(rng.uniform(-3, 3, (batch, 1)))
    return jnp.asarray(rng.standard_normal((batch, d)) * scales + rng.normal(0, 2, (batch, 1)))


def assert_equal_rel(a, b):
    assert np.all(np.isfinite(np.asarray(a))) and np.all(np.isfinite(np.asarray(b)))
    assert np.max(relative_difference(a, b)) <= TOL, np.max(relative_difference(a, b))


def assert_same_matrix(J, Jc):
    """Jacobians agree normwise (entries that cancel to ~u ||J|| cannot agree relatively)."""
    J, Jc = np.asarray(J), np.asarray(Jc)
    axes = tuple(range(1, J.ndim))
    difference = np.sqrt(np.sum((J - Jc) ** 2, axis=axes))
    assert np.all(difference <= TOL * np.sqrt(np.sum(Jc**2, axis=axes))), np.max(difference)


def assert_bound(bound, value):
    bound, value = np.asarray(bound), np.asarray(value)
    assert np.all(bound >= value * (1 - TOL)), (bound[bound < value], value[bound < value])


def norms(J):
    return (jnp.linalg.norm(J, 2), jnp.max(jnp.abs(J)), jnp.max(jnp.sum(jnp.abs(J), axis=1)),
            jnp.max(jnp.sum(jnp.abs(J), axis=0)))


def batched(check, in_axes=0):
    """``check`` vmapped over the batch and compiled: one program per shape, which the examples
    of a size share (eagerly, every operation of every example would be dispatched on its own)."""
    return jax.jit(jax.vmap(check, in_axes=in_axes))


def vector_case(f, closed_form):
    """A map of one vector by autodiff beside its closed form, batched: (J, the closed form,
    norms(J), kappa_22, kappa_c,inf and kappa_cc by autodiff)."""
    def case(v):
        J = jacobian(f, v)
        return J, closed_form(v), norms(J), normwise(f, v).value, mixed(f, v).value, componentwise(f, v).value

    return batched(case)


rms_norm_case = vector_case(blocks.rms_norm, closed_forms.rms_norm)
centring_case = vector_case(blocks.centring, closed_forms.centring)
layer_norm_case = vector_case(blocks.layer_norm, closed_forms.layer_norm)


@settings(max_examples=EXAMPLES)
@given(d=sizes, seed=seeds)
def test_lemma_3_6_rms_norm(d, seed):
    J, closed, (n22, n1inf, ninf, n11), k22, kmix, kcc = rms_norm_case(random_vectors(seed, d))
    assert_same_matrix(J, closed.jacobian)
    assert_equal_rel(n22, closed.norm_22)
    assert_bound(closed.norm_1inf_bound, n1inf)
    assert_equal_rel(ninf, n11)  # ||J||_11 = ||J||_inf,inf (J symmetric)
    assert_bound(closed.norm_inf_bound, ninf)
    assert_equal_rel(k22, closed.kappa_22)
    assert_equal_rel(kmix, closed.kappa_c_inf)
    assert_equal_rel(kcc, closed.kappa_cc)
    assert np.all(np.asarray(closed.kappa_cc) <= 2)


@settings(max_examples=EXAMPLES)
@given(d=sizes, seed=seeds)
def test_lemma_3_7_centring(d, seed):
    J, closed, (n22, n1inf, ninf, _), k22, kmix, kcc = centring_case(random_vectors(seed, d))
    assert_same_matrix(J, closed.jacobian)
    assert_equal_rel(n22, np.ones_like(n22))
    assert_equal_rel(n1inf, closed.norm_1inf)
    assert_equal_rel(ninf, closed.norm_inf)
    assert_equal_rel(k22, closed.kappa_22)
    assert_equal_rel(kmix, closed.kappa_c_inf)
    assert_equal_rel(kcc, closed.kappa_cc)
    assert np.all(np.asarray(closed.kappa_cc_bound) > np.asarray(kcc))


@settings(max_examples=EXAMPLES)
@given(d=sizes.filter(lambda d: d >= 3), seed=seeds)
def test_lemma_3_8_layer_norm(d, seed):
    J, closed, (n22, n1inf, ninf, _), k22, kmix, kcc = layer_norm_case(random_vectors(seed, d))
    assert_same_matrix(J, closed.jacobian)
    assert_equal_rel(n22, closed.norm_22)
    assert_bound(closed.norm_1inf_bound, n1inf)
    assert_bound(closed.norm_inf_bound, ninf)
    assert_equal_rel(k22, closed.kappa_22)
    assert_bound(closed.kappa_c_inf_bound, kmix)
    assert_bound(closed.kappa_cc_bound, kcc)
    assert_bound(closed.kappa_cc_simple_bound, closed.kappa_cc_bound)


def test_lemma_3_8_errata():
    # 1. The printed kappa_cc(N, x) < 3 ||x||_inf / ||c(x)||_inf fails when some c(x)_i is tiny.
    x = jnp.array([1.0, 2.0, 3.0, 10.0])
    x = x.at[2].set((1.0 + 2.0 + 10.0) / 3 + 1e-9)  # x_3 sits next to the mean of the others
    closed = closed_forms.layer_norm(x)
    kcc = componentwise(blocks.layer_norm, x).value
    assert float(kcc) > float(closed.kappa_cc_simple_bound_as_printed)
    assert float(kcc) <= float(closed.kappa_cc_simple_bound)
    # 2. |c^T x| (always ||c||_2^2) instead of |c|^T |x| breaks the mixed and componentwise bounds.
    x = jnp.array([-3.996049, -3.814150, -3.859147, -3.854888, -3.857548, -3.856964, -3.860170, -3.894501])
    closed = closed_forms.layer_norm(x)
    assert float(jnp.abs(closed_forms.centre(x) @ x) / jnp.sum(closed_forms.centre(x) ** 2)) == pytest.approx(1.0)
    kmix, kcc = mixed(blocks.layer_norm, x).value, componentwise(blocks.layer_norm, x).value
    assert float(kmix) > float(closed.kappa_c_inf_bound_as_printed) or float(kcc) > float(closed.kappa_cc_bound_as_printed)
    assert float(kmix) <= float(closed.kappa_c_inf_bound) and float(kcc) <= float(closed.kappa_cc_bound)


@functools.partial(batched, in_axes=(0, None, None, None, None))
def perceptron_case(v, A1, b1, A2, b2):
    def mlp(v):
        return blocks.perceptron(v[:, None], A1, b1, A2, b2)[:, 0]

    closed = closed_forms.perceptron(A1, b1, A2, b2, v)
    offset = mlp(v) - closed.jacobian @ v
    affine = closed_forms.affine(closed.jacobian, offset, v)
    return (jacobian(mlp, v), closed.jacobian, componentwise(mlp, v).value, affine.kappa_cc,
            mixed(mlp, v).value, affine.kappa_c_inf, normwise(mlp, v).value, affine.kappa_22)


@settings(max_examples=EXAMPLES)
@given(d=sizes, seed=seeds)
def test_lemma_3_10_perceptron_jacobian_and_lemma_3_4(d, seed):
    rng = np.random.default_rng(seed)
    D = d + 3
    A1, b1 = jnp.asarray(rng.standard_normal((D, d))), jnp.asarray(rng.standard_normal(D))
    A2, b2 = jnp.asarray(rng.standard_normal((d, D))), jnp.asarray(rng.standard_normal(d))
    J, Jc, kcc, ckcc, kmix, ckmix, k22, ck22 = perceptron_case(random_vectors(seed + 1, d), A1, b1, A2, b2)
    assert_same_matrix(J, Jc)
    assert_equal_rel(kcc, ckcc)
    assert_equal_rel(kmix, ckmix)
    assert_equal_rel(k22, ck22)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def attention_case(seed, d, n, batch=BATCH):
    keys = jax.random.split(jax.random.key(seed), batch)
    params, X = jax.vmap(lambda k: init(k, "figure4", d=d, n=n, D=d, L=1))(keys)
    scale = jnp.exp(jax.random.uniform(jax.random.key(seed + 1), (batch, 1, 1), minval=-1.5, maxval=1.5))
    return params.Wq[:, 0], params.Wk[:, 0], params.Wv[:, 0], X * scale


@batched
def scores_case(X, Wq, Wk):
    f = lambda Y: blocks.scores(Y, Wq, Wk)[:, -1]  # noqa: E731  S(X) for the last query
    closed = closed_forms.scores(X, Wq, Wk)
    J = jacobian(f, X)
    return (J, closed.jacobian, jnp.max(jnp.sum(jnp.abs(J), axis=1)), closed.norm_inf_bound,
            mixed(f, X).value, closed.kappa_c_inf_bound, componentwise(f, X).value, closed.kappa_cc_bound)


@settings(max_examples=EXAMPLES)
@given(d=st.sampled_from([2, 3, 4]), n=st.sampled_from([2, 3, 5]), seed=seeds)
def test_lemma_3_12_scores(d, n, seed):
    Wq, Wk, _, X = attention_case(seed, d, n)
    J, Jc, ninf, binf, kmix, bmix, kcc, bcc = scores_case(X, Wq, Wk)
    assert_same_matrix(J, Jc)
    assert_bound(binf, ninf)
    assert_bound(bmix, kmix)
    assert_bound(bcc, kcc)


@batched
def softmax_conditions(v):
    closed = closed_forms.softmax(v)
    return componentwise(blocks.softmax, v).value, closed.kappa_cc, closed.kappa_cc_bound


softmax_case = vector_case(blocks.softmax, closed_forms.softmax)


@settings(max_examples=EXAMPLES)
@given(n=sizes, seed=seeds)
def test_lemma_3_13_softmax(n, seed):
    # kappa_cc on scores of every size; the Jacobian, its norms and kappa_c,inf on scores below ~8,
    # since for a peaked psi both sides compute psi_i (1 - psi_i) with cancellation (relative
    # error u / (1 - psi_i)), which no tolerance derived from u can cover.
    wide = random_vectors(seed, n)
    moderate = jnp.tanh(wide / 4) * 4
    kcc, ckcc, bcc = softmax_conditions(wide)
    assert_equal_rel(kcc, ckcc)
    assert_bound(bcc, kcc)
    J, closed, (n22, n1inf, ninf, n11), _, kmix, _ = softmax_case(moderate)
    assert_equal_rel(kmix, closed.kappa_c_inf)
    assert_same_matrix(J, closed.jacobian)
    assert_bound(closed.norm_22_bound, n22)
    assert_equal_rel(n1inf, closed.norm_1inf)
    assert_equal_rel(ninf, n11)
    assert_equal_rel(ninf, closed.norm_inf)


@batched
def attention_jacobian_case(X, Wq, Wk, Wv):
    f = lambda Y: blocks.attention(Y, Wq, Wk, Wv)  # noqa: E731
    closed = closed_forms.attention(X, Wq, Wk, Wv)
    J = jacobian(f, X)
    return (J, closed.jacobian, jnp.max(jnp.sum(jnp.abs(J), axis=1)), closed.norm_inf_bound,
            mixed(f, X).value, closed.kappa_c_inf_bound, componentwise(f, X).value, closed.kappa_cc_bound,
            closed.remark_3_15_bound, closed.remark_3_15_normalised_bound, closed.normalised)


@settings(max_examples=EXAMPLES)
@given(d=st.sampled_from([2, 3, 4]), n=st.sampled_from([2, 3, 5]), seed=seeds, normalise=st.booleans())
def test_lemma_3_14_and_remark_3_15_attention(d, n, seed, normalise):
    Wq, Wk, Wv, X = attention_case(seed, d, n)
    if normalise:
        X = batched(blocks.layer_norm)(X)
    J, Jc, ninf, binf, kmix, bmix, kcc, bcc, r315, r315n, normalised = attention_jacobian_case(X, Wq, Wk, Wv)
    assert_same_matrix(J, Jc)
    # block lower-triangular: block (t, j) vanishes for j > t
    J = np.asarray(J).reshape(BATCH, n, d, n, d)
    for t in range(n):
        assert np.all(J[:, t, :, t + 1:, :] == 0)
    assert_bound(binf, ninf)
    assert_bound(bmix, kmix)
    assert_bound(bcc, kcc)
    assert_bound(r315, kcc)
    if normalise:
        assert np.all(np.asarray(normalised))
        assert_bound(r315n, kcc)


def test_degenerate_inputs_give_inf_and_a_flag_never_nan():
    zero, constant = jnp.zeros(4), jnp.full(4, 3.0)
    for condition in (componentwise(blocks.rms_norm, zero), mixed(blocks.rms_norm, zero),
                      normwise(blocks.rms_norm, zero), componentwise(blocks.layer_norm, constant)):
        assert condition.value == jnp.inf and not condition.defined
    assert all(np.all(np.asarray(v) == np.inf) for v in closed_forms.rms_norm(zero)[:-1])
    assert not closed_forms.layer_norm(constant).generic and closed_forms.layer_norm(constant).kappa_cc_bound == jnp.inf
    # a zero entry of x: R(x) is not generic, kappa_cc undefined (Lemma 3.6)
    with_zero = jnp.array([1.0, 0.0, -2.0])
    assert componentwise(blocks.rms_norm, with_zero).value == jnp.inf
    assert closed_forms.rms_norm(with_zero).kappa_cc == jnp.inf
    # ReLU kink: L_1(x) has a zero entry, Lemma 3.10 does not apply
    A1, b1 = jnp.eye(2), jnp.array([-1.0, 0.0])
    assert not closed_forms.perceptron(A1, b1, jnp.eye(2), jnp.zeros(2), jnp.array([1.0, 2.0])).generic
    assert not closed_forms.softmax(jnp.zeros(3)).defined and closed_forms.softmax(jnp.zeros(3)).kappa_cc == jnp.inf
    assert isinstance(componentwise(lambda v: v, jnp.ones(2)), Condition)


def test_autodiff_modes_vec_convention_and_jit():
    X = jnp.arange(1.0, 7.0).reshape(2, 3)
    J = jacobian(lambda Y: Y * jnp.arange(1.0, 4.0)[None, :], X)
    # vec stacks columns: entry k of vec(X) is X[k % 2, k // 2]
    np.testing.assert_array_equal(np.diag(np.asarray(J)), [1, 1, 2, 2, 3, 3])
    f = lambda v: jnp.sum(v**2)[None]  # noqa: E731
    np.testing.assert_allclose(np.asarray(jacobian(f, X, "fwd")), np.asarray(jacobian(f, X, "rev")))
    jitted = jax.jit(lambda v: componentwise(blocks.rms_norm, v).value)(jnp.array([1.0, 2.0, -3.0]))
    assert float(jitted) == float(closed_forms.rms_norm(jnp.array([1.0, 2.0, -3.0])).kappa_cc)
    with pytest.raises(ValueError, match="closed form"):
        normwise(lambda v: v, jnp.ones(2), p=2, q=1)


def test_report_puts_autodiff_beside_the_closed_forms():
    params, X = init(jax.random.key(3), "figure1", d=4, n=3, D=5, L=1)
    layer = jax.tree.map(lambda a: a[0], params)
    for norm in ("layer", "rms"):
        rows = condition_report(layer, X, norm)
        assert {r.statement for r in rows} >= {"Lemma 3.12", "Lemma 3.13", "Lemma 3.14", "Remark 3.15"}
        for row in rows:
            if row.relation == "=":
                assert relative_difference(row.autodiff, row.closed_form) <= TOL, row
            else:
                assert row.closed_form >= row.autodiff * (1 - TOL), row


def test_closed_forms_and_autodiff_numbers_compile_once_per_shape():
    rng = np.random.default_rng(1)
    before = closed_forms.layer_norm.jitted._cache_size(), componentwise.jitted._cache_size()
    closed = [closed_forms.layer_norm(jnp.asarray(rng.standard_normal(7))) for _ in range(3)]
    auto = [componentwise(blocks.layer_norm, jnp.asarray(rng.standard_normal(7))) for _ in range(3)]
    after = closed_forms.layer_norm.jitted._cache_size(), componentwise.jitted._cache_size()
    assert after[0] - before[0] <= 1 and after[1] - before[1] <= 1  # at most one new program each, not three
    assert all(bool(c.generic) for c in closed) and all(bool(a.defined) for a in auto)
