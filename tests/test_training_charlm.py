"""boundlab.models.charlm: the character-level model, Baek's diagnostics of it, the epsilon policy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from boundlab.models import charlm

CONFIG = charlm.CharLMConfig(d=8, heads=2, ffn=16, layers=2, context=6)
VOCAB = 11
PARAMS = charlm.init_params(CONFIG, VOCAB, jax.random.key(0))
IDS = jnp.asarray(np.random.default_rng(0).integers(0, VOCAB, (3, 6)))
EPS = jnp.full((CONFIG.norms,), 1e-5)


def _scaled(params, factor):
    """The attention's query and key maps scaled up: large scores."""
    layers = dict(params["layers"], Wq=params["layers"]["Wq"] * factor, Wk=params["layers"]["Wk"] * factor)
    return dict(params, layers=layers)


def test_the_corpus_ships_with_scikit_learn_and_windows_hold_next_characters():
    text = charlm.corpus()
    vocabulary = charlm.Vocabulary(text)
    ids = vocabulary.encode(text)
    assert len(text) > 10_000 and 40 < len(vocabulary) < 128 and "".join(vocabulary.chars[i] for i in ids[:50]) == text[:50]
    batch = charlm.windows(ids, 16, 5, np.random.default_rng(0))
    assert batch.shape == (5, 17) and batch.dtype == np.int32
    with pytest.raises(ValueError, match="too few"):
        charlm.windows(ids[:10], 16, 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="multiple of heads"):
        charlm.CharLMConfig(d=10, heads=4)


def test_the_model_is_causal_and_the_max_shift_changes_nothing_in_float64():
    logits = charlm.forward(PARAMS, IDS[0], EPS, CONFIG)
    changed = charlm.forward(PARAMS, IDS[0].at[4].set((IDS[0, 4] + 1) % VOCAB), EPS, CONFIG)
    np.testing.assert_array_equal(logits[:, :4], changed[:, :4])  # tokens before 4 do not see it
    assert not np.array_equal(logits[:, 4:], changed[:, 4:])
    plain = charlm.CharLMConfig(**{**CONFIG.__dict__, "max_shift": False})
    np.testing.assert_allclose(charlm.forward(PARAMS, IDS[0], EPS, plain), logits, rtol=0, atol=64 * 2.0**-53)


def test_the_nnx_module_is_the_pure_function_bit_for_bit_natively_and_emulated():
    from flax import nnx

    from boundlab import Emulated, emulate

    model = charlm.CharLM(CONFIG, params=PARAMS)
    pure = jax.vmap(lambda ids: charlm.forward(PARAMS, ids, EPS, CONFIG))(IDS)
    np.testing.assert_array_equal(np.asarray(model(IDS, EPS)), np.asarray(pure))
    graph, state = nnx.split(model)
    emulated = emulate(lambda s: nnx.merge(graph, s)(IDS, EPS), Emulated("bf16"))(state)
    np.testing.assert_array_equal(np.asarray(emulated),
                                  np.asarray(emulate(lambda p: jax.vmap(lambda i: charlm.forward(p, i, EPS, CONFIG))(IDS),
                                                     Emulated("bf16"))(PARAMS)))
    assert charlm.CharLM(CONFIG, vocab=VOCAB, rngs=nnx.Rngs(0))(IDS, EPS).shape == (3, VOCAB, 6)


def test_fp16_without_the_max_shift_overflows_where_the_shifted_softmax_does_not():
    # exp of a score above log(65504) = 11.09 is inf in fp16: inf / inf = NaN (eq. 4 as printed)
    from boundlab import Emulated, emulate

    big = _scaled(PARAMS, 300.0)
    plain = charlm.CharLMConfig(**{**CONFIG.__dict__, "max_shift": False})
    scores = charlm.forward(big, IDS[0], EPS, CONFIG, return_internals=True)[1]["scores"]
    assert float(jnp.max(scores)) > 11.1
    unshifted = emulate(lambda p: charlm.forward(p, IDS[0], EPS, plain), Emulated("fp16"))(big)
    shifted = emulate(lambda p: charlm.forward(p, IDS[0], EPS, CONFIG), Emulated("fp16"))(big)
    assert not np.all(np.isfinite(np.asarray(unshifted))) and np.all(np.isfinite(np.asarray(shifted)))


def test_the_diagnostics_are_baeks_quantities_of_the_exact_intermediates():
    from boundlab.fragility import softmax_sensitivity

    u = 2.0**-11
    found = charlm.diagnostics(PARAMS, IDS, EPS, CONFIG, u)
    inside = [charlm.forward(PARAMS, ids, EPS, CONFIG, return_internals=True)[1] for ids in IDS]
    for layer in range(CONFIG.layers):
        per_column = []
        for one in inside:  # lambda_max of diag(p) - p p^T by numpy, column by column
            for S, P in zip(np.asarray(one["scores"][layer]), np.asarray(one["softmax"][layer])):
                for t in range(S.shape[1]):
                    p, s = P[:, t], S[:, t]
                    lam = np.linalg.eigvalsh(np.diag(p) - np.outer(p, p))[-1]
                    per_column.append(lam * np.linalg.norm(s) / np.linalg.norm(p))
        np.testing.assert_allclose(found["kappa_softmax"][layer], max(per_column), rtol=1e-10)
        assert float(softmax_sensitivity(inside[0]["scores"][layer, 0], inside[0]["softmax"][layer, 0])) <= \
            float(found["kappa_softmax"][layer])
    for norm in range(CONFIG.norms):
        columns = np.concatenate([np.asarray(one["norm_inputs"][norm]) for one in inside], axis=1)
        sigma = np.median(columns.std(axis=0))
        np.testing.assert_allclose(found["sigma_med"][norm], sigma, rtol=1e-12)
        np.testing.assert_allclose(found["rho_LN"][norm], sigma**2 / 1e-5 * CONFIG.d * u, rtol=1e-12)


def test_the_epsilon_policy_targets_rho_star_under_the_cap_and_never_lowers_epsilon():
    d, u, rho_star = 8, 2.0**-11, 0.6
    sigma = jnp.array([1e-3, 0.05, 2.0, 0.05])
    eps = jnp.array([1e-5, 1e-5, 1e-5, 1e-3])
    new = np.asarray(charlm.epsilon_policy(eps, sigma, d, u, rho_star, cap=1e-2))
    rho_before = np.asarray(sigma) ** 2 / np.asarray(eps) * d * u
    rho_after = np.asarray(sigma) ** 2 / new * d * u
    assert rho_before[0] < rho_star and new[0] == 1e-5  # not epsilon-limited: untouched
    assert rho_before[1] > rho_star and rho_after[1] == pytest.approx(rho_star, rel=1e-12)  # brought to rho_star
    assert new[2] == 1e-2 and rho_after[2] > rho_star  # capped
    assert new[3] == 1e-3  # already above the target: never lowered


def test_a_training_step_of_the_model_compiles_once_whatever_the_epsilons():
    import functools

    import optax

    from boundlab.training import init_state, make_step

    traces = {"count": 0}

    def loss(params, batch):
        traces["count"] += 1
        return charlm.loss(params, batch, CONFIG)

    optimizer = optax.adam(1e-3)
    step = make_step(loss, optimizer, "float64")  # the emulated recipes trace the same way (and compile longer)
    state = init_state(PARAMS, optimizer, "float64")
    windows = jnp.asarray(np.random.default_rng(2).integers(0, VOCAB, (4, 7)))
    losses = []
    for eps in (1e-5, 1e-3, 1e-2):
        before = state.params
        state, info = step(state, (windows, jnp.full((CONFIG.norms,), eps)))
        losses.append(float(info.loss))
        exact = functools.partial(charlm.loss, config=CONFIG)(before, (windows, jnp.full((CONFIG.norms,), eps)))
        assert float(info.loss) == float(exact)  # the epsilon that came in is the one used
    assert traces["count"] == 1 and len(set(losses)) == 3
