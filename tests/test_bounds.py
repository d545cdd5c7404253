"""Section 4 module bounds against errors measured under Emulated (recursive accumulation).

For every statement: 3 precisions x 3 sizes x BATCH random cases (>= 1000 per statement); on
each case the weights and inputs are format numbers, the exact output is computed in float64 from
the same numbers, and the measured rho_c must not exceed the bound whenever its hypotheses hold.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tolerances import relative_tolerance

from boundlab import Emulated, Exact, bounds, errors
from boundlab.models.paper import attention, centring, layer_norm, perceptron, rms_norm, scores, softmax

pytestmark = pytest.mark.fast_compile  # inequalities, tables, files: tests/conftest.py

BATCH = 120
PRECISIONS = (10, 16, 24)
SIZES = (2, 5, 12)
EXACT = Exact()


def cases():
    return list(itertools.product(PRECISIONS, SIZES))


def draw(seed, shape, scale=1.0, mean=0.0):
    rng = np.random.default_rng(seed)
    return jnp.asarray(mean + scale * rng.standard_normal(shape))


def check(measured, bound_records, u):
    measured = np.asarray(measured)
    values = np.asarray(bound_records.value(u))
    valid = np.asarray(bound_records.valid)
    assert valid.sum() >= 0.5 * valid.size, f"only {valid.sum()} of {valid.size} cases satisfy the hypotheses"
    assert np.all(measured[valid] <= values[valid]), (measured[valid][measured[valid] > values[valid]],
                                                      values[valid][measured[valid] > values[valid]])
    return float(np.max(measured[valid] / values[valid]))


def vector_statement(t, d, seed, module, statement, scale=1.0, mean=0.0):
    arithmetic = Emulated(f"t{t}")
    u = arithmetic.unit_roundoff
    x = arithmetic.cast(draw(seed, (BATCH, d), scale, mean))
    measured = jax.vmap(lambda v: errors.relative_componentwise(module(v, arithmetic), module(v, EXACT)))(x)
    return check(measured, jax.vmap(lambda v: statement(v, u=u))(x), u)


@pytest.mark.parametrize("t, d", cases())
def test_lemma_4_6_rms_norm(t, d):
    vector_statement(t, d, 1, rms_norm, bounds.lemma_4_6)


@pytest.mark.parametrize("t, d", cases())
def test_lemma_4_10_centring(t, d):
    vector_statement(t, d, 2, centring, bounds.lemma_4_10, mean=0.5)


@pytest.mark.parametrize("t, d", cases())
def test_lemma_4_11_layer_norm(t, d):
    vector_statement(t, d, 3, layer_norm, bounds.lemma_4_11, mean=0.3)


@pytest.mark.parametrize("t, n", cases())
def test_lemma_4_19_softmax(t, n):
    vector_statement(t, n, 4, softmax, bounds.lemma_4_19, scale=3.0)


@pytest.mark.parametrize("t, d", cases())
def test_lemma_4_14_perceptron(t, d):
    arithmetic = Emulated(f"t{t}")
    u = arithmetic.unit_roundoff
    D = d + 3
    x = arithmetic.cast(draw(5, (BATCH, d)))
    A1, b1 = arithmetic.cast(draw(6, (BATCH, D, d))), arithmetic.cast(draw(7, (BATCH, D)))
    A2, b2 = arithmetic.cast(draw(8, (BATCH, d, D))), arithmetic.cast(draw(9, (BATCH, d)))

    def measure(x, A1, b1, A2, b2):
        emulated = perceptron(x[:, None], A1, b1, A2, b2, arithmetic)[:, 0]
        exact = perceptron(x[:, None], A1, b1, A2, b2, EXACT)[:, 0]
        return errors.relative_componentwise(emulated, exact)

    measured = jax.vmap(measure)(x, A1, b1, A2, b2)
    check(measured, jax.vmap(lambda *a: bounds.lemma_4_14(*a, u=u))(x, A1, b1, A2, b2), u)


def attention_batch(t, d, n, seed):
    arithmetic = Emulated(f"t{t}")
    X = jax.vmap(layer_norm)(draw(seed, (BATCH, d, n)))
    weights = [arithmetic.cast(draw(seed + k, (BATCH, d, d))) for k in (1, 2, 3)]
    return arithmetic, arithmetic.cast(X), weights


@pytest.mark.parametrize("t, d", cases())
def test_lemma_4_17_scores_and_absolute_variant(t, d):
    n = 4
    arithmetic, X, (Wq, Wk, _) = attention_batch(t, d, n, 10)
    u = arithmetic.unit_roundoff

    def measure(X, Wq, Wk):
        emulated, exact = scores(X, Wq, Wk, arithmetic)[:, -1], scores(X, Wq, Wk, EXACT)[:, -1]
        return errors.relative_componentwise(emulated, exact), jnp.max(jnp.abs(emulated - exact))

    relative, absolute = jax.vmap(measure)(X, Wq, Wk)
    check(relative, jax.vmap(lambda *a: bounds.lemma_4_17(*a, u=u))(X, Wq, Wk), u)
    check(absolute, jax.vmap(lambda *a: bounds.lemma_4_17_absolute(*a, u=u))(X, Wq, Wk), u)


@pytest.mark.parametrize("t, d", cases())
def test_lemma_4_21_attention_and_remark_4_22(t, d):
    n = 4
    arithmetic, X, (Wq, Wk, Wv) = attention_batch(t, d, n, 20)
    u = arithmetic.unit_roundoff

    def measure(X, Wq, Wk, Wv):
        return errors.relative_componentwise(attention(X, Wq, Wk, Wv, arithmetic), attention(X, Wq, Wk, Wv, EXACT))

    measured = jax.vmap(measure)(X, Wq, Wk, Wv)
    for statement in (bounds.lemma_4_21, bounds.lemma_4_21_absolute, bounds.remark_4_22):
        check(measured, jax.vmap(lambda *a, s=statement: s(*a, u=u))(X, Wq, Wk, Wv), u)


def test_broken_hypotheses_are_flagged():
    u = 2.0**-10
    nearly_constant = jnp.array([1.0, 1.0 + 2.0**-20, 1.0 - 2.0**-20])
    assert not bool(bounds.lemma_4_11(nearly_constant, u=u).valid)
    assert not bool(bounds.lemma_4_6(jnp.zeros(3), u=u).valid)
    assert not bool(bounds.lemma_4_19(jnp.zeros(2000), u=u).valid)  # n u >= 1
    A1 = jnp.array([[1.0, -1.0], [0.0, 1.0]])  # L_1(x)_1 = x_1 - x_2 cancels: near the ReLU kink
    kink = bounds.lemma_4_14(jnp.array([1.0, 1.0 + 1e-12]), A1, jnp.zeros(2), jnp.eye(2), jnp.ones(2), u=u)
    assert not bool(kink.flags["alpha-condition"]) and not bool(kink.valid)


def test_remark_4_18_as_printed_is_false_and_the_absolute_variant_needs_no_sigma_min():
    # W_k = W_q = I, x_1 orthogonal to x_n: S(X)_1 = 0, so xi(S, X) is infinite, while the
    # printed Remark 4.18 claims xi(S, X) <= sigma_max(|W_k|^T|W_q|) / sigma_min(W_k^T W_q) = 1.
    eye = jnp.eye(2)
    X = jnp.array([[1.0, 1.0], [1.0, -1.0]])  # columns (1, 1) and (1, -1)
    assert float(bounds.remark_4_18(eye, eye).coefficient) == 1.0
    lemma = bounds.lemma_4_17(X, eye, eye, u=2.0**-10)
    assert float(lemma.terms["xi(S, X)"]) == np.inf and not bool(lemma.valid)
    absolute = bounds.lemma_4_17_absolute(X, eye, eye, u=2.0**-10)
    assert bool(absolute.valid) and np.isfinite(float(absolute.coefficient))


def test_bounds_are_differentiable_in_the_weights():
    X = jax.vmap(layer_norm)(draw(30, (1, 4, 3)))[0]
    Wq, Wk, Wv = (draw(31 + k, (4, 4)) for k in range(3))
    grad = jax.grad(lambda w: jnp.log(bounds.lemma_4_21_absolute(X, Wq, Wk, w, u=2.0**-10).coefficient))(Wv)
    assert np.all(np.isfinite(np.asarray(grad)))
    grad = jax.grad(lambda w: jnp.log(bounds.remark_4_22(X, w, Wk, Wv, u=2.0**-10).coefficient))(Wq)
    assert np.all(np.isfinite(np.asarray(grad)))


def test_per_query_records_equal_the_statement_on_each_prefix():
    d, n = 4, 6
    X = draw(3, (d, n))
    Wq, Wk, Wv = draw(4, (d, d)), draw(5, (d, d)), draw(6, (d, d))
    u = 2.0**-12
    columns = bounds.lemma_4_17_columns(X, Wq, Wk, u=u)
    S = (Wk @ X).T @ (Wq @ X) / jnp.sqrt(d)
    softmax_columns = bounds.lemma_4_19_columns(S, u=u)
    perturbed = bounds.corollary_4_20_columns(S, u=u)
    for t in range(1, n + 1):
        want = float(bounds.lemma_4_17(X[:, :t], Wq, Wk, u=u).coefficient)  # same formula, other summation order
        assert float(columns.coefficient[t - 1]) == pytest.approx(want, rel=relative_tolerance())
        assert float(softmax_columns.coefficient[t - 1]) == float(bounds.lemma_4_19(S[:t, t - 1], u=u).coefficient)
        single = bounds.corollary_4_20(S[:t, t - 1], u=u)
        assert float(perturbed.input_gain[t - 1]) == float(single.input_gain)
    # Corollary 4.23 is Remark 4.22 with the factor 4 (not 2): never smaller (the constants of
    # both are checked against tests/paper_reference.py in test_analysis)
    corollary = bounds.corollary_4_23(X, Wq, Wk, Wv, u=u)
    assert float(corollary.coefficient) >= float(bounds.remark_4_22(X, Wq, Wk, Wv, u=u).coefficient)


# -- misuse: every way of calling a statement gives the paper's number or fails loudly ----------

FP16_U = 2.0**-11


def test_a_statement_about_one_vector_refuses_a_matrix_and_vmap_gives_the_columns():
    X = jnp.array([[1.0, 2.0, 5.0], [3.0, 2.0, -1.0], [0.5, 2.0, 4.0]])  # column 1 is constant
    for statement in (bounds.lemma_4_10, bounds.lemma_4_11, bounds.lemma_4_6, bounds.lemma_4_19):
        with pytest.raises(ValueError, match="one vector"):
            statement(X, u=FP16_U)
    columns = jax.vmap(lambda x: bounds.lemma_4_10(x, u=FP16_U), in_axes=1)(X)
    coefficient = np.asarray(columns.coefficient)
    # independent: 1 + ||x||_1 / min_i |x_i - mean(x)| per column; the constant column is undefined
    assert coefficient[1] == np.inf and not bool(np.asarray(columns.valid)[1])
    for t in (0, 2):
        x = np.asarray(X[:, t])
        assert coefficient[t] == pytest.approx(1 + np.abs(x).sum() / np.abs(x - x.mean()).min(), rel=2.0**-50)
        assert bool(np.asarray(columns.valid)[t])


def test_a_zero_column_is_flagged_in_its_own_column():
    X = jnp.array([[1.0, 0.0, 2.0], [-2.0, 0.0, 1.0]])
    with pytest.raises(ValueError, match="one vector"):
        bounds.lemma_4_6(X, u=FP16_U)  # once an any() over the matrix called this valid
    valid = np.asarray(jax.vmap(lambda x: bounds.lemma_4_6(x, u=FP16_U), in_axes=1)(X).valid)
    assert valid.tolist() == [True, False, True]


def test_arguments_after_the_arrays_are_keyword_only_and_u_is_required():
    A = jnp.array([[1.0, 2.0], [3.0, 4.0]])
    x = jnp.array([1.0, -1.0])
    with pytest.raises(TypeError):
        bounds.lemma_4_3(A, x, 2.0**-11)  # u would have been read as the bias
    with pytest.raises(TypeError):
        bounds.lemma_4_6(jnp.ones(5))  # no u: its hypotheses cannot be checked
    # independent value: max_i d |A||x| / |A x| = 2 * max(3/1, 7/1) = 14
    assert float(bounds.lemma_4_3(A, x, u=FP16_U).coefficient) == 14.0
    with pytest.raises(ValueError, match="unit roundoff"):
        bounds.lemma_4_6(jnp.ones(5), u=-1.0)


def test_hypotheses_are_checked_at_the_given_u():
    x = jnp.ones(5000)
    assert bool(bounds.lemma_4_6(x, u=2.0**-24).valid)
    assert not bool(bounds.lemma_4_6(x, u=FP16_U).valid)  # d u >= 1 in fp16


def test_shape_mismatches_are_refused():
    X, W = jnp.ones((3, 2)), jnp.eye(3)
    with pytest.raises(ValueError, match="X must be"):
        bounds.lemma_4_17(jnp.ones(3), W, W, u=FP16_U)
    with pytest.raises(ValueError, match="Wk must be"):
        bounds.lemma_4_21(X, W, jnp.eye(2), W, u=FP16_U)


def test_statements_need_float64(x64_off):
    X, W = np.ones((3, 2)), np.eye(3)
    for call in (lambda: bounds.lemma_4_17(X, W, W, u=FP16_U), lambda: bounds.lemma_4_21(X, W, W, W, u=FP16_U),
                 lambda: bounds.lemma_4_6(np.ones(3), u=FP16_U), lambda: bounds.remark_4_18(W, W)):
        with pytest.raises(RuntimeError, match="jax_enable_x64"):
            call()


def test_an_exactly_singular_score_matrix_is_flagged():
    rng = np.random.default_rng(0)
    Wq = jnp.asarray(rng.standard_normal((4, 4)))
    Wk = jnp.asarray(rng.standard_normal((4, 4))).at[2].set(0.0)  # a zero row: W_k^T W_q has rank 3
    printed = bounds.remark_4_18(Wq, Wk)
    assert not bool(printed.flags["W_k^T W_q non-singular"]) and float(printed.coefficient) == np.inf
    assert bool(bounds.remark_4_18(Wq, Wq).flags["W_k^T W_q non-singular"])
    X = jnp.asarray(rng.standard_normal((4, 3)))
    assert not bool(bounds.corollary_4_23(X, Wq, Wk, Wq, u=FP16_U).valid)


def test_an_eager_statement_is_one_compiled_program_per_shape_and_the_checks_still_raise():
    from boundlab.bounds.components import lemma_4_11

    program = lemma_4_11.jitted
    before = program._cache_size()
    rng = np.random.default_rng(0)
    first = [lemma_4_11(jnp.asarray(rng.standard_normal(7)), u=u) for u in (2.0**-11, 2.0**-24, 2.0**-11)]
    assert program._cache_size() == before + 1  # new values and a new u: no new trace or compilation
    for record in first:  # the compiled program computes what the statement says
        assert record.statement == "Lemma 4.11" and np.isfinite(float(record.coefficient))
    with pytest.raises(ValueError, match="unit roundoff"):  # concrete checks stay outside the program
        lemma_4_11(jnp.ones(7), u=1.5)
    with pytest.raises(ValueError, match="one vector"):
        lemma_4_11(jnp.ones((7, 2)), u=2.0**-11)
