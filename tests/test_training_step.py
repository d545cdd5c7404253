"""boundlab.training: the emulated training step and its recipes."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from boundlab.training import RECIPES, Recipe, get_recipe, init_state, make_step

RNG = np.random.default_rng(0)
PARAMS = {"W1": RNG.standard_normal((4, 16)) * 0.5, "b1": np.zeros(16), "W2": RNG.standard_normal((16, 3)) * 0.3}
X = RNG.standard_normal((32, 4))
BATCH = (X, jax.nn.one_hot((X[:, 0] > 0).astype(int) + (X[:, 1] > 0), 3))
TRACES = {"count": 0}


def loss_fn(params, batch):
    TRACES["count"] += 1  # at trace time only: counts compilations of the step
    x, y = batch
    hidden = jax.nn.relu(x @ params["W1"] + params["b1"])
    return optax.softmax_cross_entropy(hidden @ params["W2"], y).mean()


def _equal(a, b):
    return all(bool(jnp.array_equal(x, y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def test_the_exact_recipe_is_optaxs_float64_step_bit_for_bit_over_ten_steps():
    optimizer = optax.adam(1e-2)

    @jax.jit
    def native(params, opt_state, batch):
        grads = jax.grad(loss_fn)(params, batch)
        with jax.numpy_dtype_promotion("standard"):  # optax mixes its int32 step count with floats
            updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    params, opt_state = PARAMS, optimizer.init(PARAMS)
    state, step = init_state(PARAMS, optimizer, "float64"), make_step(loss_fn, optimizer, "float64")
    before = TRACES["count"]
    for _ in range(10):
        params, opt_state = native(params, opt_state, BATCH)
        state, info = step(state, BATCH)
    assert _equal(params, state.params) and _equal(opt_state, state.opt_state)
    assert TRACES["count"] - before == 2  # the native step and the emulated one, each traced once
    assert bool(info.finite) and float(info.rounded_away) == 0.0


def _attention_model(p, x):
    """Layer norm, single-head attention, a residual, mean pooling and a GELU perceptron."""
    mu = x.mean(-1, keepdims=True)
    z = (x - mu) / jnp.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + 1e-5) * p["gamma"] + p["beta"]
    scores = jnp.einsum("bid,bjd->bij", z @ p["Wq"], z @ p["Wk"]) / jnp.sqrt(z.shape[-1])
    y = x + jax.nn.softmax(scores, axis=-1) @ (z @ p["Wv"])
    return jax.nn.gelu(y.mean(1) @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]


@pytest.mark.parametrize("labels", ["one-hot", "integer"])
def test_the_exact_recipe_is_native_bit_for_bit_on_an_attention_model_with_adamw_and_a_schedule(labels):
    # emulate(f, Exact()) of a float64 program is f's own program (every primitive as traced), so
    # the claim holds beyond the MLP: here Adam's normalisation would turn any round-off
    # difference in a zero-gradient entry into a full step within ten steps
    from boundlab import Exact, emulate

    rng = np.random.default_rng(1)
    d, h, classes = 6, 12, 4
    params = {"Wq": rng.standard_normal((d, d)) * 0.4, "Wk": rng.standard_normal((d, d)) * 0.4,
              "Wv": rng.standard_normal((d, d)) * 0.4, "gamma": np.ones(d), "beta": np.zeros(d),
              "W1": rng.standard_normal((d, h)) * 0.4, "b1": np.zeros(h), "W2": rng.standard_normal((h, classes)) * 0.4,
              "b2": np.zeros(classes)}
    x, y = rng.standard_normal((8, 5, d)), rng.integers(0, classes, 8)
    if labels == "one-hot":
        batch = (x, jax.nn.one_hot(y, classes))
        loss = lambda p, b: optax.softmax_cross_entropy(_attention_model(p, b[0]), b[1]).mean()  # noqa: E731
    else:
        batch = (x, y)
        loss = lambda p, b: optax.softmax_cross_entropy_with_integer_labels(_attention_model(p, b[0]), b[1]).mean()  # noqa: E731
    assert _equal(jax.jit(jax.grad(loss))(params, batch), jax.jit(emulate(jax.grad(loss), Exact()))(params, batch))
    optimizer = optax.adamw(optax.cosine_decay_schedule(1e-2, 10), weight_decay=1e-2)

    @jax.jit
    def native(p, opt_state, b):
        with jax.numpy_dtype_promotion("standard"):
            updates, opt_state = optimizer.update(jax.grad(loss)(p, b), opt_state, p)
        return optax.apply_updates(p, updates), opt_state

    ours, opt_state = params, optimizer.init(params)
    state, step = init_state(params, optimizer, "float64"), make_step(loss, optimizer, "float64")
    for _ in range(10):
        ours, opt_state = native(ours, opt_state, batch)
        state, _ = step(state, batch)
    assert _equal(ours, state.params) and _equal(opt_state, state.opt_state)


def test_pure_bf16_rounds_small_updates_away_and_stochastic_or_kahan_updates_recover_them():
    # Zamirai et al. 2020: with round to nearest, an update below half an ulp of the weight is
    # lost; stochastic rounding keeps it in expectation, Kahan's compensation keeps it exactly
    optimizer = optax.sgd(3e-4)
    finals, away = {}, {}
    for name in ("float64", "bf16-pure", "bf16-pure-sr", "bf16-pure-kahan"):
        state, step = init_state(PARAMS, optimizer, name), make_step(loss_fn, optimizer, name)
        key = jax.random.key(1)
        for _ in range(30):
            key, sub = jax.random.split(key)
            state, info = step(state, BATCH, key=sub)
            away.setdefault(name, []).append(float(info.rounded_away))
        finals[name] = state.params
        if name == "bf16-pure-kahan":
            compensation = state.compensation
    start = init_state(PARAMS, optimizer, "bf16-pure").params
    for name in ("W1", "W2"):  # every update of these below half an ulp: lost, 30 times over
        assert bool(jnp.array_equal(finals["bf16-pure"][name], start[name]))
    assert min(away["bf16-pure"]) == 112 / 128  # all but the 16 biases, which start at zero

    def displacement_error(name):  # how far the recipe's weights moved, against float64's move
        moved = [finals[name][k] - start[k] for k in ("W1", "W2")]
        if name == "bf16-pure-kahan":  # the weight Kahan's sum carries: w - c
            moved = [m - compensation[k] for m, k in zip(moved, ("W1", "W2"))]
        exact = [finals["float64"][k] - PARAMS[k] for k in ("W1", "W2")]
        return (sum(float(jnp.sum((m - e) ** 2)) for m, e in zip(moved, exact))
                / sum(float(jnp.sum(e**2)) for e in exact)) ** 0.5

    def projection(name):  # the share of float64's move that the recipe's move carries, on average
        moved = [finals[name][k] - start[k] for k in ("W1", "W2")]
        exact = [finals["float64"][k] - PARAMS[k] for k in ("W1", "W2")]
        return sum(float(jnp.sum(m * e)) for m, e in zip(moved, exact)) / sum(float(jnp.sum(e**2)) for e in exact)

    errors = {name: displacement_error(name) for name in ("bf16-pure", "bf16-pure-kahan")}
    assert errors["bf16-pure"] == 1.0 and projection("bf16-pure") == 0.0  # it did not move at all
    assert errors["bf16-pure-kahan"] < 0.05, errors  # Kahan: float64's move, to bf16's precision
    # stochastic rounding: each weight moves by whole ulps at random, right on average
    assert 0.5 < projection("bf16-pure-sr") < 1.5, projection("bf16-pure-sr")


def test_fp16_loses_small_gradients_to_underflow_and_dynamic_loss_scaling_keeps_them():
    def tiny_loss(params, batch):
        return 2.0**-20 * loss_fn(params, batch)  # gradients below fp16's smallest subnormal 2^-24

    optimizer = optax.sgd(1.0)
    zeros = {}
    for name in ("fp16-mixed", "fp16-mixed-scaled"):
        state, step = init_state(PARAMS, optimizer, name), make_step(tiny_loss, optimizer, name)
        state, info = step(state, BATCH)
        zeros[name] = int(info.zero_gradients)
    exact = sum(int(jnp.sum(g == 0)) for g in jax.tree.leaves(jax.grad(tiny_loss)(PARAMS, BATCH)))
    assert zeros["fp16-mixed"] > exact + 20 and zeros["fp16-mixed-scaled"] <= exact + 2


def test_an_overflowing_step_is_skipped_and_the_loss_scale_halves():
    def huge_loss(params, batch):
        return 2.0**6 * loss_fn(params, batch)  # times 2^15: beyond fp16's 65504

    optimizer = optax.sgd(1e-2)
    state, step = init_state(PARAMS, optimizer, "fp16-mixed-scaled"), make_step(huge_loss, optimizer, "fp16-mixed-scaled")
    scales, skipped = [], 0
    for _ in range(8):
        new, info = step(state, BATCH)
        assert bool(info.skipped) == (not bool(info.finite))  # the loss itself stays finite: the gradient overflows
        if bool(info.skipped):
            assert _equal(new.params, state.params)
            skipped += 1
        assert np.isfinite(float(info.loss))  # L is reported, not S L (which overflows)
        scales.append(float(new.loss_scale))
        state = new
    assert scales[0] == 2.0**14 and scales[-1] < 2.0**14 and skipped >= 1 and not bool(info.skipped)


def test_recipes_are_checked_and_named():
    assert set(RECIPES) >= {"float64", "float32", "bf16-mixed", "bf16-pure", "bf16-pure-sr", "bf16-pure-kahan",
                            "fp16-mixed", "fp16-mixed-scaled", "fp8-gemms"}
    with pytest.raises(ValueError, match="unknown recipe 'bf8'.*bf16-mixed"):
        get_recipe("bf8")
    with pytest.raises(ValueError, match="update must be one of"):
        Recipe("x", master="bf16", update="truncate")
    with pytest.raises(ValueError, match="need a master format"):
        Recipe("x", update="kahan")
    step = make_step(loss_fn, optax.sgd(1e-2), "bf16-pure-sr")
    with pytest.raises(ValueError, match="pass key="):
        step(init_state(PARAMS, optax.sgd(1e-2), "bf16-pure-sr"), BATCH)
    from boundlab.arithmetic import Emulated

    # loss scaling only where the exponent range is fp16's (bf16 and float32 have float32's)
    for compute in (Emulated("bf16"), Emulated("fp32"), get_recipe("float64").compute):
        with pytest.raises(ValueError, match="drop loss_scale"):
            Recipe("x", compute, "fp32", "fp32", loss_scale="dynamic")
    assert Recipe("x", Emulated("fp16"), "fp32", "fp32", loss_scale="dynamic").loss_scale == "dynamic"
    with pytest.raises(ValueError, match=r"parameter \['counts'\] has dtype int.*float array"):
        init_state({**PARAMS, "counts": np.arange(3)}, optax.sgd(1e-2), "float32")


def test_a_nonfinite_step_is_skipped_when_asked_and_reaches_the_weights_otherwise():
    optimizer = optax.adam(1e-2)
    poisoned = (BATCH[0].copy(), BATCH[1])
    poisoned[0][3, 0] = np.nan
    for skip in (False, True):
        state = init_state(PARAMS, optimizer, "float32")
        step = make_step(loss_fn, optimizer, "float32", skip_nonfinite=skip)
        state, info = step(state, BATCH)
        assert bool(info.finite) and float(info.gradient_norm) > 0
        new, info = step(state, poisoned)
        assert not bool(info.finite) and not np.isfinite(float(info.loss)) and bool(info.skipped) == skip
        if skip:
            assert _equal(new.params, state.params) and _equal(new.opt_state, state.opt_state)
            new, info = step(new, BATCH)  # and training goes on
            assert bool(info.finite)
        else:
            assert not np.all(np.isfinite(np.asarray(new.params["W1"])))


def test_the_gradient_norm_is_the_float64_gradients_norm():
    optimizer = optax.sgd(1e-2)
    _, info = make_step(loss_fn, optimizer, "float64")(init_state(PARAMS, optimizer, "float64"), BATCH)
    grads = jax.grad(loss_fn)(PARAMS, BATCH)
    expected = np.sqrt(sum(np.sum(np.asarray(g) ** 2) for g in jax.tree.leaves(grads)))
    np.testing.assert_allclose(float(info.gradient_norm), expected, rtol=16 * 2.0**-53)


@pytest.mark.parametrize("name", ["bf16-mixed", "fp16-mixed"])
def test_the_gradients_first_order_bound_is_never_below_its_measured_error(name):
    from boundlab.training import check_gradient

    result = check_gradient(loss_fn, get_recipe(name), PARAMS, BATCH)
    assert set(result["tensors"]) == {"W1", "b1", "W2"}
    for tensor in result["tensors"].values():
        assert tensor["holds"] is True and tensor["worst_ratio"] <= 1, tensor
        assert 0 < tensor["relative_error"] <= tensor["bound_relative"]
        assert tensor["overflow"] == 0


def test_check_gradient_counts_what_fp16_flushes_and_what_a_loss_scale_keeps():
    from boundlab.training import check_gradient

    def tiny_loss(params, batch):
        return 2.0**-20 * loss_fn(params, batch)

    plain = check_gradient(tiny_loss, get_recipe("fp16-mixed"), PARAMS, BATCH)
    scaled = check_gradient(tiny_loss, get_recipe("fp16-mixed"), PARAMS, BATCH, loss_scale=2.0**15)
    flushed = sum(t["underflow"] for t in plain["tensors"].values())
    assert flushed > 20 and plain["sites_underflow"]  # and the bound says its hypothesis failed
    assert sum(t["underflow"] for t in scaled["tensors"].values()) < flushed // 10


@pytest.mark.slow  # a study's CLI run end to end (its parts are tested in the default run): `pytest -m slow`, see docs/benchmarks.md
@pytest.mark.long
@pytest.mark.fast_compile  # files, tables and inequalities (bounds held, fractions): tests/conftest.py
def test_train_recipes_quick_writes_curves_checkpoints_and_the_claims(tmp_path, capsys):
    import csv
    import json

    from boundlab.cli import main

    out = tmp_path / "recipes"
    assert main(["train", "--quick", "--recipes", "bf16-pure", "--out", str(out), "--no-progress"]) == 0
    for name in ("checkpoints.csv", "recipes.png", "summary.json"):
        assert (out / name).stat().st_size > 0
    summary = json.loads((out / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c}"))
    assert summary["status"] == "complete" and set(summary["recipes"]) == {"float32", "bf16-pure"}  # float32 added
    rows = list(csv.DictReader(open(out / "checkpoints.csv")))
    pure = [float(r["rounded_away"]) for r in rows if r["recipe"] == "bf16-pure" and int(r["step"]) > 0]
    assert min(pure) > 0.3  # Adam's small updates lost to round to nearest in bf16
    assert all(float(r["rounded_away"]) == 0 for r in rows if r["recipe"] == "float32")
    assert "rounded away" in summary["claims"]["zamirai_2020"]["numbers"]
    # the gradient's first-order bound at every checkpoint (a few entries per tensor): never below
    assert all(r["gradient_bound_held"] == "True" for r in rows)
    assert summary["recipes"]["bf16-pure"]["gradient_bound_held"] == "held at 3 of 3 checkpoints"
    assert "bf16-pure: final accuracy" in capsys.readouterr().out
    # Baek's two claims on the character-level model: the Precision@K table and the epsilon policy
    for name in ("instability.csv", "instability.png"):
        assert (out / name).stat().st_size > 0
    table = summary["instability"]["precision_at_k"]
    assert table["runs"] == 2 and len(table["onset_steps"]) == 2 and set(table["horizons"]) == {"H=8", "H=16"}
    for entry in table["horizons"].values():
        for name in ("kappa_softmax", "kappa_softmax_absolute", "loss", "gradient_norm"):
            assert entry[name]["k"] == entry[name]["positives"] and 0 <= entry[name]["base_rate"] <= 1
    steps = list(csv.DictReader(open(out / "instability.csv")))
    for onset in (o for o in table["onset_steps"] if o is not None):  # a stopped run ends at its non-finite loss
        assert any(r["event"] == "True" and int(r["step"]) == onset for r in steps)
    policy = summary["instability"]["epsilon_policy"]
    assert [(p["max_shift"], p["pairs"]) for p in policy] == [(False, 1)]
    assert all(1e-5 <= eps <= 1e-2 for p in policy for eps in p["final_eps_max"])
    assert {"baek_2025_forecast", "baek_2025_epsilon"} <= set(summary["claims"])


def test_a_per_site_compute_runs_each_site_in_its_own_arithmetic():
    from boundlab.arithmetic import Emulated
    from boundlab.emulation import Choice
    from boundlab.training import Mixed, check_gradient

    optimizer = optax.adam(1e-2)
    # everything chosen high: the float32 recipe bit for bit
    high = Recipe("all-high", Mixed(Emulated("bf16"), Emulated("fp32"), Choice(invert=True)), "fp32", "fp32")
    a = make_step(loss_fn, optimizer, high)(init_state(PARAMS, optimizer, high), BATCH)
    b = make_step(loss_fn, optimizer, "float32")(init_state(PARAMS, optimizer, "float32"), BATCH)
    assert _equal(a[0].params, b[0].params) and float(a[1].loss) == float(b[1].loss)
    # autocast: the GEMMs on Ampere's bf16 tensor core, the rest in float32: between bf16 and float32
    exact = float(loss_fn(PARAMS, BATCH))
    errors = {name: abs(float(make_step(loss_fn, optimizer, name)(init_state(PARAMS, optimizer, name), BATCH)[1].loss)
                        - exact) for name in ("bf16-mixed", "bf16-autocast")}
    assert abs(float(b[1].loss) - exact) < errors["bf16-autocast"] < errors["bf16-mixed"]
    with pytest.raises(ValueError, match="a Mixed compute has two"):
        check_gradient(loss_fn, get_recipe("bf16-autocast"), PARAMS, BATCH)
    sr = Recipe("sr", Mixed(Emulated("bf16", mode="stochastic"), Emulated("fp32")), "fp32", "fp32")
    with pytest.raises(ValueError, match="pass key="):
        make_step(loss_fn, optimizer, sr)(init_state(PARAMS, optimizer, sr), BATCH)


def test_a_gradient_that_jumps_across_a_relu_kink_is_not_checked_and_says_why():
    # x = v . e summed recursively in bf16: 1 + 3 2^-9 rounds up to 1 + 2^-7, which cancels the third
    # term, so the computed x is 2^-10 where the exact x is -2^-10: the ReLU after it is active only in
    # the emulation, and the gradient with respect to v jumps by O(1) where the first-order bound,
    # linearised on the exact run's branch, sees nothing.  The comparison x > 0 of ReLU's derivative
    # flips, inside a lax.scan as a model's layers are.
    from jax import lax

    from boundlab.arithmetic import Emulated
    from boundlab.training import check_gradient

    def kink_loss(params, batch):
        def layer(h, w):
            return h, jax.nn.relu(jnp.dot(params["v"], batch) - w) * params["c"]

        return jnp.sum(lax.scan(layer, 0.0, params["w"])[1])

    params = {"v": jnp.array([1.0, 3 * 2.0**-9, -(1 + 2.0**-7), 2.0**-10]), "c": jnp.array(3.0),
              "w": jnp.array([0.0, -0.5])}
    result = check_gradient(kink_loss, get_recipe("bf16-mixed"), params, jnp.ones(4))
    assert result["decisions_flipped"] == 1
    v = result["tensors"]["v"]
    assert v["relative_error"] > 0.5 and v["holds"] is None and "comparisons flipped" in v["verdict"]
    smooth = check_gradient(kink_loss, get_recipe("bf16-mixed"), params, jnp.array([1.0, 1.0, 1.0, 0.0]))
    assert smooth["decisions_flipped"] == 0 and all(t["holds"] is not False for t in smooth["tensors"].values())
    # the emulated gradient comes from the program that counts the flips: emulate's bits
    from boundlab.emulation import emulate
    from boundlab.training.gradients import _emulated_with_flips, _gradient_function

    grad_fn, compute, batch = _gradient_function(kink_loss, 1.0), get_recipe("bf16-mixed").compute, jnp.ones(4)
    counted, flips = _emulated_with_flips(grad_fn, compute)(params, batch)
    assert int(flips) == 1 and _equal(counted, emulate(grad_fn, compute)(params, batch))
    with pytest.raises(ValueError, match="rounds stochastically and check_gradient takes no PRNG key"):
        check_gradient(kink_loss, Emulated("bf16", mode="stochastic"), params, jnp.ones(4))
