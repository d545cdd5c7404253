"""boundlab.nn: the NNX network against the pure forward, the diagnostics, the bound penalty."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from boundlab import Emulated, Exact, get_format
from boundlab.bounds import theorem_4_30
from boundlab.errors import relative_normwise
from boundlab.models import SequenceClassifier, Transformer, from_params, to_params
from boundlab.analysis.monitoring import FragilityMetric, diagnostics
from boundlab.fragility import layer_diagnostics
from boundlab.training.penalty import bound_penalty, log10_bound
from boundlab.models.paper import forward, init
from tolerances import relative_difference, relative_tolerance

D_MODEL, D_HIDDEN, LAYERS, TOKENS, BATCH = 5, 7, 2, 4, 3

# optax's bias correction mixes an int32 step count with floats, which the suite's strict dtype
# promotion refuses (conftest); optimizer steps run under standard promotion.
standard_promotion = jax.numpy_dtype_promotion("standard")


def model_and_batch(seed=0, norm="layer"):
    model = Transformer(D_MODEL, D_HIDDEN, LAYERS, norm=norm, rngs=nnx.Rngs(seed))
    X = jax.random.normal(jax.random.key(100 + seed), (BATCH, D_MODEL, TOKENS), jnp.float64)
    return model, X


CASES = [(Exact(), "layer"), (Exact(), "rms"), (Exact(accumulation="recursive"), "layer"),
         (Emulated("bf16"), "layer"), (Emulated("fp16", accumulation="blocked", block_size=2, unroll=0), "rms")]


@pytest.mark.parametrize("arithmetic, norm", CASES, ids=lambda case: str(case))
def test_transformer_is_forward_bit_for_bit(arithmetic, norm):
    model, X = model_and_batch(norm=norm)
    params = to_params(model)
    if arithmetic == Exact():  # eager as well (other eager calls would only add compile time)
        assert np.array_equal(model(X[0], arithmetic=arithmetic), forward(params, X[0], arithmetic, norm))
    jitted = nnx.jit(lambda m, x: m(x, arithmetic=arithmetic))(model, X)
    reference = jax.jit(jax.vmap(lambda x: forward(params, x, arithmetic, norm)))(X)
    assert jitted.dtype == reference.dtype == arithmetic.dtype
    assert np.array_equal(jitted, reference)


def test_stochastic_rounding_uses_forward_keys():
    model, X = model_and_batch()
    arithmetic, key = Emulated("bf16", mode="stochastic", unroll=0), jax.random.key(7)  # loops: fast to compile

    @nnx.jit
    def both(model, X, key):  # one compilation for both sides
        keys = jax.vmap(lambda b: jax.random.fold_in(key, b))(jnp.arange(BATCH))
        return model(X, arithmetic=arithmetic, key=key), \
            jax.vmap(lambda x, k: forward(to_params(model), x, arithmetic, key=k))(X, keys)

    batch, reference = both(model, X, key)
    assert np.array_equal(batch, reference)  # sample b rounds with fold_in(key, b)


def test_the_same_weights_run_exactly_or_emulated():
    model, X = model_and_batch()
    t8 = Emulated("t8", unroll=0)
    emulated_model = Transformer(D_MODEL, D_HIDDEN, LAYERS, arithmetic=t8, rngs=nnx.Rngs(0))
    nnx.update(emulated_model, nnx.state(model))  # the same weights, a different default arithmetic
    assert np.array_equal(emulated_model(X[0]), model(X[0], arithmetic=t8))
    error = float(relative_normwise(emulated_model(X[0]).astype(jnp.float64), model(X[0])))
    assert 0 < error < 1  # t8 rounding changes the output, but only a little here


def test_to_params_and_from_params_round_trip():
    params, X = init(jax.random.key(3), "figure4", d=D_MODEL, n=TOKENS, D=D_HIDDEN, L=LAYERS)
    model = from_params(params, norm="rms")
    assert model.norm == "rms"
    for name in params._fields:
        assert np.array_equal(getattr(to_params(model), name), getattr(params, name))
    assert np.array_equal(model(X), forward(params, X, Exact(), "rms"))
    again = from_params(to_params(model))
    assert jax.tree.all(jax.tree.map(np.array_equal, nnx.state(again), nnx.state(model)))


def test_bad_construction_and_inputs_are_refused():
    with pytest.raises(ValueError, match="L must be a positive int"):
        Transformer(4, 4, 0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="norm must be one of"):
        Transformer(4, 4, 1, norm="batch", rngs=nnx.Rngs(0))
    model, X = model_and_batch()
    with pytest.raises(ValueError, match="d = 5"):
        model(X[0].T)
    with pytest.raises(ValueError, match="column 0 of X is constant"):
        model(jnp.ones((D_MODEL, TOKENS)))


# -- Baek's diagnostics, each against an independent evaluation of its definition -------------

@pytest.mark.fast_compile  # a relative tolerance from u against numpy: tests/conftest.py
def test_baek_diagnostics_match_their_definitions():
    model, X = model_and_batch(seed=2)
    params = to_params(model)
    _, inter = jax.jit(lambda p, x: forward(p, x, Exact(), return_intermediates=True))(params, X[0])
    layer = jax.tree.map(lambda a: a[1], params)
    one = jax.tree.map(lambda a: a[1], inter)
    u = get_format("bf16").unit_roundoff
    got = jax.jit(lambda w, i: layer_diagnostics(w, i, "layer", 1e-5, {"bf16": u}))(layer, one)

    N = np.asarray(one.attention_input)
    d = N.shape[0]
    Q, K, V = (np.asarray(W) @ N for W in (layer.Wq, layer.Wk, layer.Wv))
    two = lambda M: np.linalg.norm(M, 2)  # noqa: E731
    kappa_score = two(Q) * two(K) / (two(Q.T @ K / np.sqrt(d)) * np.sqrt(d))
    sensitivities = []
    for t in range(TOKENS):  # the Jacobian of softmax at the visible scores: diag(p) - p p^T
        s = np.asarray(one.scores)[: t + 1, t]
        p = np.exp(s - s.max()) / np.sum(np.exp(s - s.max()))
        jacobian = np.diag(p) - np.outer(p, p)
        sensitivities.append(two(jacobian) * np.linalg.norm(s) / np.linalg.norm(p))
    singular = np.linalg.svd(V, compute_uv=False)
    stds = [np.median(np.std(np.asarray(M), axis=0)) for M in (one.inputs, one.attention_residual)]
    sigma = max(stds)
    expected = {"kappa_score": kappa_score, "kappa_softmax": max(sensitivities),
                "kappa_V": singular[0] / singular[-1], "kappa_A1": np.linalg.cond(np.asarray(layer.A1)),
                "kappa_A2": np.linalg.cond(np.asarray(layer.A2)),
                "C_LN": sigma / np.sqrt(1e-5) + sigma**2 / 1e-5 + 1, "rho_LN/bf16": sigma**2 / 1e-5 * d * u}
    expected["baek_layer"] = expected["kappa_softmax"] * (1 + expected["kappa_score"]) * expected["kappa_V"] \
        + expected["kappa_A1"] + expected["kappa_A2"] + 1 + expected["C_LN"]
    assert kappa_score >= 1
    for name, value in expected.items():
        assert relative_difference(got[name], value) <= relative_tolerance(), name


# -- the diagnostics in a training loop ----------------------------------------------------------

@pytest.fixture(scope="module")
def diagnosed():
    model, X = model_and_batch(seed=1)
    return model, X, diagnostics(model, X, formats=("bf16",))


def test_diagnostics_agree_with_the_statements_they_report(diagnosed):
    model, X, result = diagnosed
    params = to_params(model)
    u = get_format("bf16").unit_roundoff

    @jax.jit
    def independent(params, X):  # the statements and the two forwards, per sample, outside diagnose
        def one(x):
            printed, free = (theorem_4_30(params, x, u=u, sigma_min_free=f).terms for f in (False, True))
            rounded = jax.tree.map(lambda a: Emulated("bf16").cast(a).astype(jnp.float64), (params, x))
            return (printed["log10_coefficient"], free["log10_coefficient"], printed["weights_only_growth"],
                    forward(params, x, Emulated("bf16")).astype(jnp.float64), forward(*rounded))

        return jax.vmap(one)(X)

    printed, free, growth, emulated, exact = (np.asarray(a) for a in independent(params, X))
    assert relative_difference(result.network["log10_theorem_4_30"], printed.max()) <= relative_tolerance()
    assert relative_difference(result.network["log10_theorem_4_30_free"], free.max()) <= relative_tolerance()
    assert relative_difference(10 ** result.network["log10_growth"], growth[0]) <= relative_tolerance()
    expected = np.linalg.norm(emulated - exact) / np.linalg.norm(exact)
    assert relative_difference(result.error("bf16"), expected) <= relative_tolerance()
    assert result.error("bf16") > 0
    assert set(result.layers["K"].shape) == {LAYERS}
    assert bool(result.flags["finite"]) and bool(result.flags["normalisation defined"])


def test_diagnostics_run_inside_a_jitted_training_step_and_compile_once(diagnosed):
    _, X, standalone = diagnosed

    @nnx.jit
    @chex.assert_max_traces(n=1)
    def step(model, optimizer, X, target):
        def loss_fn(model):
            return jnp.mean((model(X) - target) ** 2)

        before = diagnostics(model, X, formats=("bf16",))
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss, before

    chex.clear_trace_counter()
    transformation = optax.adamw(1e-3)  # static in the optimizer's graph: one object, one trace
    for seed in (1, 4):  # two models of one shape: one trace
        model, _ = model_and_batch(seed=seed)
        optimizer = nnx.Optimizer(model, transformation, wrt=nnx.Param)
        with standard_promotion:
            loss, inside = step(model, optimizer, X, jnp.zeros_like(X))
        assert np.isfinite(loss)
        if seed == 1:  # the same numbers as outside the step
            assert relative_difference(inside.network["log10_theorem_4_30"],
                                       standalone.network["log10_theorem_4_30"]) <= relative_tolerance()


def test_nan_weights_and_constant_inputs_are_flagged_not_finite(diagnosed):
    model, X, _ = diagnosed
    broken = from_params(to_params(model)._replace(A1=to_params(model).A1.at[0, 0, 0].set(jnp.nan)))
    result = nnx.jit(lambda m, x: diagnostics(m, x, formats=("bf16",)))(broken, X)
    assert not bool(result.flags["finite"])
    assert all(np.all(np.isnan(v)) for v in jax.tree.leaves((result.layers, result.network)))

    constant = X.at[1, :, 2].set(3.0)  # layer norm of column 2 of sample 1 is undefined
    result = diagnostics(model, constant, formats=("bf16",))
    assert bool(result.flags["finite"]) and not bool(result.flags["normalisation defined"])
    for name in ("log10_theorem_4_30", "log10_theorem_4_30_free", "log10_layerwise", "error_normwise/bf16"):
        assert not np.isfinite(result.network[name]), name
    assert not bool(result.flags["theorem hypotheses"])


# -- the penalty -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["theorem", "layerwise"])
def test_penalty_gradient_matches_finite_differences(kind):
    params, _ = init(jax.random.key(5), "figure4", d=D_MODEL, n=TOKENS, D=D_HIDDEN, L=LAYERS)  # biases non-zero
    model, X = from_params(params), model_and_batch(seed=5)[1]
    u = get_format("bf16").unit_roundoff
    value, grads = nnx.jit(nnx.value_and_grad(lambda m: bound_penalty(m, X, u=u, kind=kind)))(model)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(nnx.state(grads)))
    params = to_params(model)

    @jax.jit
    def penalty(p):
        return jnp.mean(jax.vmap(lambda x: log10_bound(p, x, u=u, kind=kind))(X))

    assert relative_difference(penalty(params), value) <= relative_tolerance()
    h = 2.0**-20  # central differences: error O(h^2) plus rounding O(u64 / h)
    for name, index in (("Wq", (0, 1, 2)), ("Wv", (1, 0, 3)), ("A1", (1, 2, 0)), ("b1", (0, 3)), ("b2", (1, 4))):
        step = jnp.zeros_like(getattr(params, name)).at[index].set(h)
        difference = (penalty(params._replace(**{name: getattr(params, name) + step}))
                      - penalty(params._replace(**{name: getattr(params, name) - step}))) / (2 * h)
        analytic = getattr(grads.layers[index[0]], name)[...][index[1:]]
        assert abs(analytic - difference) <= 1e-5 * max(1.0, abs(difference)), name


@pytest.mark.fast_compile
def test_penalty_trains_in_an_optax_loop():
    model, X = model_and_batch(seed=6)
    u = get_format("bf16").unit_roundoff
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    penalty = nnx.jit(lambda m: bound_penalty(m, X, u=u))
    before = float(penalty(model))

    @nnx.jit
    def step(model, optimizer):
        loss, grads = nnx.value_and_grad(lambda m: bound_penalty(m, X, u=u))(model)
        optimizer.update(model, grads)
        return loss

    for _ in range(5):
        with standard_promotion:
            step(model, optimizer)
    assert float(penalty(model)) < before  # descent on the penalty alone lowers it
    with pytest.raises(ValueError, match="kind must be one of"):
        bound_penalty(model, X, u=u, kind="norm")


def test_sequence_classifier_reads_the_last_token():
    classifier = SequenceClassifier(8, 6, 10, D_MODEL, D_HIDDEN, LAYERS, rngs=nnx.Rngs(0))
    images = jax.random.uniform(jax.random.key(0), (BATCH, 6, 8), jnp.float64)
    tokens = classifier.tokens(images)
    assert tokens.shape == (BATCH, D_MODEL, 6)
    Z = classifier.transformer(tokens)
    expected = Z[:, :, -1] @ classifier.readout.kernel[...] + classifier.readout.bias[...]
    assert np.array_equal(classifier(images), expected)


def test_fragility_metric_keeps_the_worst_batch_and_all_flags(diagnosed):
    model, X, first = diagnosed
    constant = diagnostics(model, X.at[0, :, 1].set(2.0), formats=("bf16",))  # a batch with a flag down
    metric = nnx.MultiMetric(loss=nnx.metrics.Average("loss"), fragility=FragilityMetric(formats=("bf16",)))
    with standard_promotion:  # flax's Average divides a float32 total by an int32 count
        metric.update(loss=jnp.asarray(1.0, jnp.float32), diagnostics=first)
        after_one = metric.compute()["fragility"]
        metric.update(loss=jnp.asarray(3.0, jnp.float32), diagnostics=constant)
        result = metric.compute()
    assert after_one["log10_theorem_4_30"] == first.network["log10_theorem_4_30"]
    assert bool(after_one["flag/normalisation defined"])
    assert result["loss"] == 2.0
    assert not bool(result["fragility"]["flag/normalisation defined"])
    assert result["fragility"]["error_normwise/bf16"] >= first.network["error_normwise/bf16"] or \
        np.isnan(result["fragility"]["error_normwise/bf16"])
    with pytest.raises(ValueError, match="lack"):
        FragilityMetric(formats=("fp8_e4m3",)).update(diagnostics=first)


def test_a_block_module_is_the_pure_block():
    from boundlab.models.paper import block

    model, X = model_and_batch(seed=3)
    layer = jax.tree.map(lambda a: a[1], to_params(model))
    assert np.array_equal(model.layers[1](X[0]), block(X[0], layer, Exact()))
    out, inter = model.layers[1](X[0], return_intermediates=True)
    assert np.array_equal(inter.outputs, out) and np.array_equal(inter.inputs, X[0])


def test_the_softmax_jacobians_top_eigenvalue_without_lapack():
    from boundlab.fragility import softmax_jacobian_top

    rng = np.random.default_rng(4)
    for n in (2, 5, 12):
        scores = rng.standard_normal((50, n)) * 2
        p = np.exp(scores - scores.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        want = np.array([np.linalg.eigvalsh(np.diag(q) - np.outer(q, q))[-1] for q in p])
        got = np.asarray(jax.jit(softmax_jacobian_top)(p))
        assert np.all(relative_difference(got, want) <= relative_tolerance()), n
    # p = (1 - e, e): lambda = 2 e (1 - e); numpy on the formed matrix loses p_1 - p_1^2 to cancellation
    e = 1e-10
    peaked = np.array([1 - e, e])
    exact = 2 * e * (1 - e)
    assert relative_difference(float(softmax_jacobian_top(peaked)), exact) <= 2.0**20 * get_format("fp64").unit_roundoff
    assert relative_difference(np.linalg.eigvalsh(np.diag(peaked) - np.outer(peaked, peaked))[-1], exact) > 1e-8
    # ties, one-hot and masked columns, a lone entry, NaN
    cases = {(0.5, 0.5): 0.5, (0.3, 0.3, 0.4): 0.36, (1.0, 0.0, 0.0): 0.0, (0.0, 0.0): 0.0, (0.7, 0.0): 0.7 * 0.3}
    for q, value in cases.items():
        assert float(softmax_jacobian_top(np.array(q))) == pytest.approx(value, rel=relative_tolerance(), abs=0.0), q
    assert np.isnan(float(softmax_jacobian_top(np.array([np.nan, 0.5]))))
    # d lambda = v^T (diag(dp) - dp p^T - p dp^T) v, against numpy's eigenvector
    q = np.array([0.1, 0.2, 0.3, 0.4])
    v = np.linalg.eigh(np.diag(q) - np.outer(q, q))[1][:, -1]
    grad = jax.grad(softmax_jacobian_top)(q)
    assert np.allclose(np.asarray(grad), v * v - 2 * v * (v @ q), rtol=0, atol=relative_tolerance())
