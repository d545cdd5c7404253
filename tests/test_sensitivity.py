"""boundlab.first_order: never above the matching Section 4 statement, never below the measured
error by more than a second-order margin (1000 random cases each), probabilistic coverage under
stochastic rounding, per-site contributions, flags."""

import jax
import jax.numpy as jnp
import math
import numpy as np
import pytest

from boundlab import Emulated, bounds, gamma
from boundlab.emulation import UnsupportedPrimitive, emulate
from boundlab.sensitivity import first_order, lambda_for

pytestmark = pytest.mark.fast_compile  # inequalities, tables, files: tests/conftest.py

CASES = 1000
T12 = Emulated("t12", unroll=0)
U = 2.0**-12


def _paper_rms(x):
    return (math.sqrt(x.shape[0]) * x) / jnp.sqrt(jnp.sum(x * x))


def _paper_layer_norm(x):
    return _paper_rms(x - jnp.sum(x) / x.shape[0])


def _paper_softmax(s):
    e = jnp.exp(s)
    return e / jnp.sum(e)


def _measured_and_bound(f, *batch):
    """|emulated - exact| and the first-order record, for a batch of cases (vmapped)."""
    record = jax.vmap(first_order(f, T12))(*batch)
    emulated = jax.vmap(emulate(f, T12))(*batch)
    return jnp.abs(emulated - record.value), record


def test_dot_product_bound_lies_between_the_error_and_lemma_4_3():
    k = 16
    a, b = (jax.random.normal(key, (CASES, k)) for key in jax.random.split(jax.random.key(0)))
    measured, record = _measured_and_bound(lambda x, y: x @ y, a, b)
    magnitude = jnp.sum(jnp.abs(T12.cast(a) * T12.cast(b)), axis=1)
    lemma = gamma(k, U) * magnitude  # Lemma 4.3.2: |fl(a^T b) - a^T b| <= gamma_k |a|^T |b|
    assert bool(jnp.all(record.bound <= lemma))
    second_order = 2 * (gamma(k, U) - k * U) * magnitude  # (1 + u)^k - 1 - k u <= gamma_k - k u
    assert bool(jnp.all(measured <= record.bound + second_order))
    assert float(jnp.median(record.bound / lemma)) < 0.9  # the partial sums cancel: tighter than k u


@pytest.mark.parametrize("name, f, lemma", [
    ("Lemma 4.6", _paper_rms, lambda x: bounds.lemma_4_6(x, u=U).coefficient),
    ("Lemma 4.11", _paper_layer_norm, lambda x: bounds.lemma_4_11(x, u=U).coefficient),
    ("Lemma 4.19", _paper_softmax, lambda s: bounds.lemma_4_19(s, u=U).coefficient),
])
def test_normalisations_and_softmax_stay_below_their_lemmas(name, f, lemma):
    d = 8
    x = jax.random.normal(jax.random.key(1), (CASES, d)) * jnp.exp(jax.random.normal(jax.random.key(2), (CASES, 1)))
    measured, record = _measured_and_bound(f, x)
    exact = jnp.abs(record.value)
    first_order_rho = jnp.max(record.bound / exact, axis=1)  # componentwise relative, in units of u below
    coefficient = jax.vmap(lemma)(T12.cast(x))
    assert bool(jnp.all(first_order_rho / U <= coefficient)), name
    second_order = 4 * (coefficient[:, None] * U) ** 2 * exact  # O(u^2) with the first-order constant squared
    assert bool(jnp.all(measured <= record.bound + second_order)), name


def test_contributions_add_up_and_name_the_sites():
    from boundlab.models.paper import init
    from boundlab.models.paper.plain import plain_forward

    params, X = init(jax.random.key(0), "figure1", d=3, n=3, D=4, L=2)
    record = first_order(lambda p, x: plain_forward(p, x, unroll_layers=True), T12)(params, X)
    assert record.contributions.shape == (len(record.sites),) + X.shape
    np.testing.assert_allclose(jnp.sum(record.contributions, axis=0), record.bound, rtol=1e-12)
    assert [m.shape for m in record.site_maps] == [site.shape for site in record.sites]
    totals = [total for _, total in record.ranking(len(record.sites))]
    assert totals == sorted(totals, reverse=True)
    scopes = record.by_scope()
    assert {"layer1/attention", "layer2/perceptron"} <= set(scopes)
    assert abs(sum(scopes.values()) - float(jnp.sum(record.bound))) <= 1e-12 * float(jnp.sum(record.bound))
    # the softmax denominators are same-sign sums; the flag says so
    assert record.independence_doubtful
    flagged = [site for site, flag in zip(record.sites, record.flags["same-sign sum"]) if flag]
    assert any(site.primitive == "reduce_sum" and "attention" in site.scope for site in flagged)


def test_probabilistic_bound_covers_stochastic_rounding_at_its_confidence():
    k, keys = 64, 400
    sr = Emulated("t8", mode="stochastic", unroll=0)
    a = jax.random.uniform(jax.random.key(3), (k,), minval=-1, maxval=1)
    b = jax.random.uniform(jax.random.key(4), (k,), minval=0.5, maxval=1)
    f = lambda x, y: jnp.tanh(x * y) @ y  # noqa: E731
    record = first_order(f, sr, confidence=0.99)(a, b)
    runs = jax.vmap(lambda key: emulate(f, sr)(a, b, key=key))(jax.random.split(jax.random.key(5), keys))
    errors = jnp.abs(runs - record.value)
    assert bool(jnp.all(errors <= record.bound * (1 + k * 2 * 2.0**-8)))  # deterministic (one-ulp model)
    within = float(jnp.mean(errors <= record.probabilistic))
    assert within >= 0.99 - 3 * math.sqrt(0.99 * 0.01 / keys)
    assert record.probabilistic < record.bound / 3  # the sqrt(n) rule is far tighter than the worst case
    assert record.lam == pytest.approx(lambda_for(0.99)) and 1 - 2 * math.exp(-record.lam**2 / 2) == pytest.approx(0.99)


def test_nan_input_gives_nan_bounds_and_a_flag_also_under_jit():
    bounded = jax.jit(first_order(lambda x: jnp.sum(x * x), T12))
    record = bounded(jnp.array([1.0, jnp.nan, 2.0]))
    assert bool(jnp.isnan(record.bound)) and not bool(record.flags["finite"])
    record = bounded(jnp.array([1.0, 3.0, 2.0]))  # the same compiled function, a finite input
    assert bool(record.flags["finite"]) and record.sites[0].primitive == "mul"


def test_selected_outputs_and_linear_functionals():
    A = jax.random.normal(jax.random.key(6), (5, 7))
    x = jax.random.normal(jax.random.key(7), (7,))
    full = first_order(lambda A, x: A @ x, T12)(A, x)
    picked = first_order(lambda A, x: A @ x, T12, outputs=lambda y: y[1:3])(A, x)
    np.testing.assert_array_equal(picked.bound, full.bound[1:3])
    w = jnp.arange(5.0)
    functional = first_order(lambda A, x: A @ x, T12, outputs=lambda y: w @ y)(A, x)
    assert functional.value.shape == () and float(functional.bound) > 0
    with pytest.raises(UnsupportedPrimitive, match="primitive 'lu'"):
        first_order(jnp.linalg.det, T12)(jnp.eye(5) + 0.5)
    with pytest.raises(ValueError, match="confidence"):
        first_order(jnp.sin, T12, confidence=1.5)


@pytest.mark.parametrize("arithmetic", [Emulated("bf16"), Emulated("fp16", accumulator="fp32"),
                                        Emulated("t10", mode="stochastic")], ids=["bf16", "fp32acc", "stochastic"])
def test_vectorised_recursive_sums_give_the_loops_bound(arithmetic, monkeypatch):
    # the loop-free recursive sum of TapPolicy against the loop it replaces (every product and
    # partial sum its own tap): the same first-order terms, summed in another order
    from boundlab.arithmetic import Policy
    from boundlab.sensitivity.taps import TapPolicy

    def f(W, x):
        h = jnp.tanh(W @ x)
        return jnp.sum(h * h, axis=0) + (W.T @ h)[0]

    W = jax.random.normal(jax.random.key(0), (6, 5))
    x = jax.random.normal(jax.random.key(1), (5, 3))
    fast = first_order(f, arithmetic)(W, x)
    monkeypatch.setattr(TapPolicy, "_reduce", Policy._reduce)
    loop = first_order(lambda W, x: f(W, x), arithmetic)(W, x)  # a new function: its own program
    for name in ("bound", "probabilistic"):
        np.testing.assert_allclose(getattr(fast, name), getattr(loop, name), rtol=64 * 2.0**-53)
    np.testing.assert_allclose(fast.value, loop.value, rtol=64 * 2.0**-53)
    assert [s.primitive for s in fast.sites] == [s.primitive for s in loop.sites]


def _equations(jaxpr):
    """A jaxpr's equations and those of the jaxprs inside them (jit, scan, custom rules, ...)."""
    found = []
    for eqn in jaxpr.eqns:
        found.append(eqn)
        for value in eqn.params.values():
            for inner in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(inner, "jaxpr", inner)  # a ClosedJaxpr's Jaxpr
                if hasattr(inner, "eqns"):
                    found += _equations(inner)
    return found


def test_the_reverse_pass_carries_no_cotangent_into_local_bounds_or_partial_sums():
    # first_order's batched VJPs should run the network's reverse pass and nothing else (README,
    # "first_order"): a tap passes its cotangent g through to v untouched (no contribution of its
    # local bound e = u |v| or of its flags is added: their cotangents are symbolic zeros), and a
    # recursive sum's total is differentiated as a sum (a broadcast), not as the last entry of a
    # cumulative sum (a padded, reversed cumulative sum per cotangent). Both reverted: 5x slower
    from boundlab.sensitivity.taps import _recursive_total, tap, zero_channel

    def tapped(x):
        channel = zero_channel(x.shape)
        e = 2.0**-8 * jnp.abs(x)
        flags = jnp.stack([0.0, jnp.any(jnp.abs(x) > 1.0).astype(jnp.float64)])
        return jnp.sum(jnp.sin(tap(x, e, flags, jnp.abs(x) > 2.0, channel["z"], channel["w"], channel["q"])))

    x = jnp.linspace(-1.0, 1.0, 7)
    names = [eqn.primitive.name for eqn in _equations(jax.make_jaxpr(jax.grad(tapped))(x).jaxpr)]
    assert "add_any" not in names and "select_n" not in names, names
    np.testing.assert_array_equal(jax.grad(tapped)(x), jnp.cos(x))
    terms = jax.random.normal(jax.random.key(0), (5, 3))
    total = lambda t: jnp.sum(jnp.sin(_recursive_total(t)))  # noqa: E731
    eqns = _equations(jax.make_jaxpr(jax.grad(total))(terms).jaxpr)
    reversed_sums = [eqn for eqn in eqns if eqn.primitive.name == "cumsum" and eqn.params["reverse"]]
    assert not reversed_sums and "pad" not in [eqn.primitive.name for eqn in eqns]
    np.testing.assert_array_equal(_recursive_total(terms), jnp.cumsum(terms, axis=0)[-1])
    expected = jnp.broadcast_to(jnp.cos(jnp.cumsum(terms, axis=0)[-1]), (5, 3))
    np.testing.assert_array_equal(jax.grad(total)(terms), expected)


class _CausalAttention:
    """A causal decoder's attention as users write it: Flax's attention with a causal mask, whose
    masked scores are finfo(float64).min (beyond fp16's range: -inf there)."""

    def __new__(cls):
        from flax import nnx

        class Model(nnx.Module):
            def __init__(self, rngs):
                self.attention = nnx.MultiHeadAttention(num_heads=2, in_features=8, qkv_features=8, decode=False,
                                                        rngs=rngs, param_dtype=jnp.float64, dtype=jnp.float64)

            def __call__(self, x):
                return self.attention(x, mask=nnx.make_causal_mask(jnp.ones(x.shape[:1]), dtype=jnp.bool_))

        return Model(nnx.Rngs(0))


@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
def test_masked_scores_that_overflow_contribute_nothing_and_the_bound_holds(fmt):
    model = _CausalAttention()
    x = jax.random.normal(jax.random.key(1), (6, 8), jnp.float64)
    with jax.numpy_dtype_promotion("standard"):  # Flax's attention mixes its float32 mask in
        record = first_order(model, Emulated(fmt))(x)
        measured = jnp.abs(emulate(model, Emulated(fmt))(x).astype(jnp.float64) - record.value)
    assert bool(record.flags["finite"]) and not bool(jnp.any(record.flags["overflow"]))
    assert record.verdict() is None
    assert bool(jnp.all(measured <= record.bound)), float(jnp.max(measured / record.bound))
    assert float(jnp.min(record.bound)) > 0


def test_an_overflow_that_matters_is_flagged_at_its_site():
    record = first_order(lambda x: jnp.sum(x * 1e3), Emulated("fp16"))(jnp.array([100.0, 1.0]))
    flagged = [site.primitive for site, flag in zip(record.sites, record.flags["overflow"]) if flag]
    assert "mul" in flagged and "reduce_sum" in flagged  # the product and the sum it enters
    assert record.verdict().startswith("not checked (overflow at #0 mul [2]")
    # the same overflowed product multiplied by zero downstream matters nowhere
    quiet = first_order(lambda x: jnp.sum(x * 1e3 * jnp.array([0.0, 1.0])), Emulated("fp16"))(jnp.array([100.0, 1.0]))
    assert not bool(jnp.any(quiet.flags["overflow"])) and bool(jnp.isfinite(quiet.bound)) and quiet.verdict() is None
