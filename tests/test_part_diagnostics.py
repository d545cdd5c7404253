"""boundlab.analysis.part_diagnostics (model_diagnostics) and the penalty on any model, against independent references:
the paper's Lemma 3.8 Jacobian, NumPy float64 attention statistics, boundlab.emulate, finite
differences."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from user_models import GPT, MLP, RMS, Attention, Mine

from boundlab import Emulated, emulate, get_format
from boundlab.condition.closed_forms import layer_norm as layer_norm_closed_form
from boundlab.analysis import diagnostics, model_diagnostics
from boundlab.models import Transformer
from boundlab.training import bound_penalty

pytestmark = pytest.mark.fast_compile  # inequalities, tables, files: tests/conftest.py

FMT = "bf16"
U = get_format(FMT).unit_roundoff


def as_float64(model):
    graphdef, state = nnx.split(model)
    return nnx.merge(graphdef, jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), state))


class PlainNorm(nnx.Module):
    def __init__(self, d, rngs):
        self.ln = nnx.LayerNorm(d, epsilon=0.0, use_scale=False, use_bias=False, rngs=rngs)

    def __call__(self, x):
        return self.ln(x)


def test_a_layer_norm_against_lemma_3_8_and_emulate():
    x = jax.random.normal(jax.random.key(0), (3, 6), jnp.float32) * 2 + 1
    model = PlainNorm(6, nnx.Rngs(0))
    result = model_diagnostics(model, x, formats=(FMT,))
    (name,) = result.parts
    part = result.parts[name]
    # condition: jacfwd through the recognised operations = Lemma 3.8's exact Jacobian, per token
    xs = np.asarray(x, np.float64)
    kappas = []
    for row in xs:
        record = layer_norm_closed_form(jnp.asarray(row))
        y = np.sqrt(6) * (row - row.mean()) / np.linalg.norm(row - row.mean())
        kappas.append(np.max(np.abs(np.asarray(record.jacobian)) @ np.abs(row) / np.abs(y)))
    np.testing.assert_allclose(float(part.condition), max(kappas), rtol=64 * 2.0**-53 * 6)
    assert float(part.closed_form) >= float(part.condition)  # Lemma 3.8's bound on kappa_cc
    # measured error: the model's own output under emulate against a float64 NumPy layer norm
    y_hat = np.asarray(emulate(model, Emulated(FMT))(x), np.float64)
    c = xs - xs.mean(axis=1, keepdims=True)
    y = c / np.sqrt((c**2).mean(axis=1, keepdims=True))
    expected = np.linalg.norm(y_hat - y) / np.linalg.norm(y)
    np.testing.assert_allclose(float(part.error_normwise[FMT]), expected, rtol=1e-12)
    assert float(result.output[f"error_normwise/{FMT}"]) == pytest.approx(expected, rel=1e-12)
    # Baek's indicator with the model's epsilon (0 here): undefined, so inf, never a finite number
    assert np.isinf(float(part.baek["C_LN"]))


def test_an_rms_norm_without_epsilon_has_lemma_3_6s_condition_number():
    model = RMS(6, eps=0.0)
    x = jax.random.normal(jax.random.key(6), (2, 3, 6), jnp.float32)
    result = model_diagnostics(model, x, formats=(FMT,), first_order=False)
    (part,) = result.parts.values()
    rows = np.asarray(x, np.float64).reshape(-1, 6)
    lemma_3_6 = max(2 * (1 - np.min(r**2) / np.sum(r**2)) for r in rows)  # kappa_cc = 2 (1 - ||x||_-inf^2/||x||^2)
    np.testing.assert_allclose([float(part.condition), float(part.closed_form)], [lemma_3_6] * 2, rtol=2.0**-40)
    with_eps = model_diagnostics(RMS(6, eps=1e-6), x, formats=(FMT,), first_order=False)
    assert np.isnan(float(next(iter(with_eps.parts.values())).closed_form))  # not the paper's form


def numpy_attention_statistics(model, x):
    """Baek's three attention statistics of the user Attention module, written out in NumPy."""
    p = {name: np.asarray(getattr(model, name).kernel[...], np.float64) for name in "qkv"}
    b = {name: np.asarray(getattr(model, name).bias[...], np.float64) for name in "qkv"}
    h = model.heads
    x = np.asarray(x, np.float64)
    B, n, d = x.shape
    split = lambda t: t.reshape(B, n, h, d // h).transpose(0, 2, 1, 3)  # noqa: E731
    q, k, v = (split(x @ p[name] + b[name]) for name in "qkv")
    score, soft, value = [], [], []
    for i in range(B):
        for j in range(h):
            Q, K, V = q[i, j], k[i, j], v[i, j]
            score.append(np.linalg.norm(Q, 2) * np.linalg.norm(K, 2) / np.linalg.norm(Q @ K.T, 2))
            s = Q @ K.T / np.sqrt(d // h)
            for t in range(n):
                visible = s[t, :t + 1]
                prob = np.exp(visible - visible.max())
                prob /= prob.sum()
                lam = np.linalg.eigvalsh(np.diag(prob) - np.outer(prob, prob))[-1]
                soft.append(lam * np.linalg.norm(visible) / np.linalg.norm(prob))
            sv = np.linalg.svd(V, compute_uv=False)
            value.append(sv[0] / sv[-1])
    return max(score), max(soft), max(value)


def test_attention_statistics_equal_a_numpy_reference():
    model = Attention(8, 2, nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (2, 5, 8), jnp.float32)
    result = model_diagnostics(model, x, formats=(FMT,), first_order=False, condition=False)
    (part,) = [p for p in result.structure.parts if p.kind == "attention"]
    baek = result.parts[part.name].baek
    expected = numpy_attention_statistics(model, x)
    got = (baek["kappa_score"], baek["kappa_softmax"], baek["kappa_V"])
    np.testing.assert_allclose(np.array(got, float), np.array(expected), rtol=1e-9)


@pytest.fixture(scope="module")
def mine_result():
    model = Mine(rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(2), (2, 5, 8), jnp.float32)
    return model, x, model_diagnostics(model, x, formats=(FMT,))


def test_every_part_of_a_user_model_has_every_diagnostic(mine_result):
    model, x, result = mine_result
    assert [p.kind for p in result.structure.parts] == ["layer_norm", "attention", "layer_norm", "perceptron"] * 2
    assert bool(result.flags["finite"]) and bool(result.flags[f"sites matched: {FMT}"])
    for part in result.structure.parts:
        values = result.parts[part.name]
        assert 0 < float(values.error_normwise[FMT]) < 1 and float(values.condition) >= 1
        assert float(values.share[FMT]) > 0
    rows = result.table()
    assert {"kappa_score", "kappa_softmax", "kappa_V"} <= set(rows[1]) and "C_LN" in rows[0]
    assert rows[0]["C_LN"] > 1 and rows[3]["kappa_W1"] >= 1


def test_shares_add_up_to_the_bound_and_the_bound_covers_the_measured_error(mine_result):
    model, x, result = mine_result
    shares = sum(float(p.share[FMT]) for p in result.parts.values()) + float(result.output[f"other/{FMT}"])
    assert shares == pytest.approx(float(result.output[f"bound/{FMT}"]), rel=1e-12)
    # the exact output at the operands the emulation uses: weights and inputs rounded to the format
    rounded = lambda a: jnp.asarray(emulate(lambda v: v, Emulated(FMT))(a), jnp.float64)  # noqa: E731
    graphdef, state = nnx.split(model)
    with jax.numpy_dtype_promotion("standard"):
        exact = np.asarray(nnx.merge(graphdef, jax.tree.map(rounded, state))(rounded(x)))
    assert exact.dtype == np.float64
    measured = np.sum(np.abs(np.asarray(emulate(model, Emulated(FMT))(x), np.float64) - exact))
    assert measured <= float(result.output[f"bound/{FMT}"])  # the lumped first-order bound, summed over entries
    ranking = result.ranking(FMT, top=3)
    assert len(ranking) == 3 and ranking[0][1] >= ranking[1][1] >= ranking[2][1]


def test_inside_a_jitted_training_step_without_retracing():
    model = GPT(d=4, heads=2, layers=1, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.sgd(1e-3), wrt=nnx.Param)  # adam trips strict promotion
    x = jax.random.normal(jax.random.key(3), (2, 3, 4), jnp.float32)

    @nnx.jit
    @chex.assert_max_traces(n=1)
    def step(model, optimizer, x):
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean(m(x) ** 2))(model)
        optimizer.update(model, grads)
        return loss, model_diagnostics(model, x, formats=(FMT,), condition=False)

    for _ in range(3):
        _, result = step(model, optimizer, x)
    assert bool(result.flags["finite"]) and len(result.parts) == 4


def test_the_papers_network_brings_its_own_layerwise_diagnostics():
    model = Transformer(4, 6, 2, rngs=nnx.Rngs(0))
    X = jax.random.normal(jax.random.key(4), (2, 4, 5))
    result = model_diagnostics(model, X, formats=(FMT,), first_order=False, condition=False)
    assert all(part.in_loop for part in result.structure.parts)
    assert not any(bool(result.flags[f"values recorded: {p.name}"]) for p in result.structure.parts)
    reference = diagnostics(model, X, formats=(FMT,))
    np.testing.assert_array_equal(result.paper.network["log10_theorem_4_30"], reference.network["log10_theorem_4_30"])
    np.testing.assert_array_equal(result.paper.layers["kappa_softmax"], reference.layers["kappa_softmax"])


def test_penalty_of_a_user_model_has_the_gradient_of_finite_differences():
    model = as_float64(GPT(d=4, heads=2, layers=1, rngs=nnx.Rngs(0)))
    x = jax.random.normal(jax.random.key(5), (2, 3, 4))
    whole = bound_penalty(model, x)
    part = bound_penalty(model, x, part="blocks.0.attn:attention")
    assert np.isfinite(float(whole)) and float(part) < float(whole)
    grads = nnx.grad(lambda m: bound_penalty(m, x))(model)
    graphdef, state = nnx.split(model)
    leaves, tree = jax.tree.flatten(state)
    directions = [jax.random.normal(jax.random.key(10 + i), leaf.shape) for i, leaf in enumerate(leaves)]

    def along(h):
        moved = jax.tree.unflatten(tree, [leaf + h * v for leaf, v in zip(leaves, directions)])
        return float(bound_penalty(nnx.merge(graphdef, moved), x))

    h = 1e-5  # central differences: truncation O(h^2), float64 cancellation O(2^-53 / h)
    finite_difference = (along(h) - along(-h)) / (2 * h)
    analytic = sum(float(jnp.sum(g * v)) for g, v in zip(jax.tree.leaves(grads), directions))
    assert analytic == pytest.approx(finite_difference, rel=1e-6)


def test_bad_input_gets_one_line_errors():
    model = MLP(rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="no floating-point output"):
        model_diagnostics(lambda v: jnp.argmax(v), jnp.ones(3))
    with pytest.raises(ValueError, match=r"model\(x\) failed for x of shape \(3, 5\)"):
        model_diagnostics(model, jnp.ones((3, 5), jnp.float32))
    with pytest.raises(ValueError, match="has no part 'blocks.9:attention'"):
        bound_penalty(as_float64(model), jnp.ones((3, 8)), part="blocks.9:attention")


def test_report_and_metric(mine_result, tmp_path):
    import json

    from boundlab.analysis import ModelMetric, write_report

    _, _, result = mine_result
    paths = write_report(result, str(tmp_path))
    summary = json.loads((tmp_path / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert [row["part"] for row in summary["parts"]] == [p.name for p in result.structure.parts]
    assert summary["structure"]["unrecognised"][0]["module"] == "head"
    assert sorted(p.split("/")[-1] for p in paths["plots"]) == ["layer0.png", "layer1.png"]
    assert all((tmp_path / name).stat().st_size > 1000 for name in ("layer0.png", "layer1.png"))
    text = (tmp_path / "report.md").read_text()
    assert "`head` (Linear)" in text and "blocks.0.attn:attention" in text
    metric = ModelMetric(result)
    metric.update(diagnostics=result)
    metric.update(diagnostics=result)
    values = metric.compute()
    assert float(values[f"output/error_normwise/{FMT}"]) == float(result.output[f"error_normwise/{FMT}"])
    assert bool(values["flag/finite"])


def test_a_model_without_attention_gets_its_perceptron_and_a_note():
    model = MLP(rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(7), (3, 8), jnp.float32)
    result = model_diagnostics(model, x, formats=(FMT,), first_order=False)
    assert list(result.parts) == ["model:perceptron"]
    part = result.parts["model:perceptron"]
    assert 0 < float(part.error_normwise[FMT]) < 1 and float(part.condition) >= 1
    assert set(part.baek) == {"kappa_W1", "kappa_W2"}
    assert result.structure.notes[0].startswith("no attention block")
