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
from boundlab.transformer import attention, centring, layer_norm, perceptron, rms_norm, scores, softmax

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
    return check(measured, jax.vmap(lambda v: statement(v, u))(x), u)


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
    assert not bool(bounds.lemma_4_11(nearly_constant, u).valid)
    assert not bool(bounds.lemma_4_6(jnp.zeros(3), u).valid)
    assert not bool(bounds.lemma_4_19(jnp.zeros(2000), u).valid)  # n u >= 1
    A1 = jnp.array([[1.0, -1.0], [0.0, 1.0]])  # L_1(x)_1 = x_1 - x_2 cancels: near the ReLU kink
    kink = bounds.lemma_4_14(jnp.array([1.0, 1.0 + 1e-12]), A1, jnp.zeros(2), jnp.eye(2), jnp.ones(2), u)
    assert not bool(kink.flags["alpha-condition"]) and not bool(kink.valid)


def test_remark_4_18_as_printed_is_false_and_the_absolute_variant_needs_no_sigma_min():
    # W_k = W_q = I, x_1 orthogonal to x_n: S(X)_1 = 0, so xi(S, X) is infinite, while the
    # printed Remark 4.18 claims xi(S, X) <= sigma_max(|W_k|^T|W_q|) / sigma_min(W_k^T W_q) = 1.
    eye = jnp.eye(2)
    X = jnp.array([[1.0, 1.0], [1.0, -1.0]])  # columns (1, 1) and (1, -1)
    assert float(bounds.remark_4_18(eye, eye).coefficient) == 1.0
    lemma = bounds.lemma_4_17(X, eye, eye, 2.0**-10)
    assert float(lemma.terms["xi(S, X)"]) == np.inf and not bool(lemma.valid)
    absolute = bounds.lemma_4_17_absolute(X, eye, eye, 2.0**-10)
    assert bool(absolute.valid) and np.isfinite(float(absolute.coefficient))


def test_bounds_are_differentiable_in_the_weights():
    X = jax.vmap(layer_norm)(draw(30, (1, 4, 3)))[0]
    Wq, Wk, Wv = (draw(31 + k, (4, 4)) for k in range(3))
    grad = jax.grad(lambda w: jnp.log(bounds.lemma_4_21_absolute(X, Wq, Wk, w).coefficient))(Wv)
    assert np.all(np.isfinite(np.asarray(grad)))
    grad = jax.grad(lambda w: jnp.log(bounds.remark_4_22(X, w, Wk, Wv).coefficient))(Wq)
    assert np.all(np.isfinite(np.asarray(grad)))


def test_per_query_records_equal_the_statement_on_each_prefix():
    d, n = 4, 6
    X = draw(3, (d, n))
    Wq, Wk, Wv = draw(4, (d, d)), draw(5, (d, d)), draw(6, (d, d))
    u = 2.0**-12
    columns = bounds.lemma_4_17_columns(X, Wq, Wk, u)
    S = (Wk @ X).T @ (Wq @ X) / jnp.sqrt(d)
    softmax_columns = bounds.lemma_4_19_columns(S, u)
    perturbed = bounds.corollary_4_20_columns(S, u)
    for t in range(1, n + 1):
        want = float(bounds.lemma_4_17(X[:, :t], Wq, Wk, u).coefficient)  # same formula, other summation order
        assert float(columns.coefficient[t - 1]) == pytest.approx(want, rel=relative_tolerance())
        assert float(softmax_columns.coefficient[t - 1]) == float(bounds.lemma_4_19(S[:t, t - 1], u).coefficient)
        single = bounds.corollary_4_20(S[:t, t - 1], u)
        assert float(perturbed.input_gain[t - 1]) == float(single.input_gain)
    # Corollary 4.23 is Remark 4.22 with the factor 4 (not 2) and the input error
    corollary = bounds.corollary_4_23(X, Wq, Wk, Wv, u)
    assert float(corollary.input_gain) * (2 * n + 3 * d) == pytest.approx(float(corollary.coefficient))
    assert float(corollary.coefficient) >= float(bounds.remark_4_22(X, Wq, Wk, Wv, u).coefficient)
