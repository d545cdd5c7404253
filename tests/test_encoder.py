"""The general encoder family (boundlab.models.encoder.network), mixed precision (boundlab.emulation.mixed_precision) and
the lumped first-order bound, on small random models (no real weights needed)."""

import dataclasses
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tolerances import relative_tolerance

from boundlab import Emulated, Exact, emulate, first_order
from boundlab.emulation import Choice, mixed, mixed_by_mask, sites
from boundlab.models.encoder.network import EncoderConfig, check_params, encode_batch


def random_params(config: EncoderConfig, vocab=20, positions=12, seed=0):
    rng = np.random.default_rng(seed)
    L, d, F = config.layers, config.d, config.ffn

    def r(*shape, scale=0.5):
        return (scale * rng.standard_normal(shape)).astype(np.float32).astype(np.float64)

    return {"embeddings": {"word": r(vocab, d), "position": r(positions, d), "type": r(2, d),
                           "ln_gamma": 1 + r(d, scale=0.1), "ln_beta": r(d, scale=0.1)},
            "layers": {"Wq": r(L, d, d), "bq": r(L, d), "Wk": r(L, d, d), "bk": r(L, d), "Wv": r(L, d, d),
                       "bv": r(L, d), "Wo": r(L, d, d), "bo": r(L, d), "ln1_gamma": 1 + r(L, d, scale=0.1),
                       "ln1_beta": r(L, d, scale=0.1), "W1": r(L, F, d), "b1": r(L, F), "W2": r(L, d, F),
                       "b2": r(L, d), "ln2_gamma": 1 + r(L, d, scale=0.1), "ln2_beta": r(L, d, scale=0.1)}}


IDS = np.array([[1, 5, 7, 2, 9, 0], [3, 4, 11, 0, 0, 0]], np.int32)
VALID = IDS > 0


def numpy_encoder(params, ids, valid, config: EncoderConfig):
    """An independent float64 reference written the textbook way (rows are tokens, as in
    PyTorch): BERT/GPT-2 blocks with math.erf / np.tanh GELU and a max-shifted softmax."""
    p = params

    def ln(x, g, b):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + config.eps) * g + b

    def act(x):
        if config.activation == "relu":
            return np.maximum(x, 0)
        if config.activation == "gelu_tanh":
            return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
        return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))

    out = []
    for i, v in zip(ids, valid):
        n = len(i)
        x = p["embeddings"]["word"][i] + p["embeddings"]["position"][:n] + p["embeddings"]["type"][0]
        x = ln(x, p["embeddings"]["ln_gamma"], p["embeddings"]["ln_beta"])
        visible = np.broadcast_to(v[None, :], (n, n))  # [query, key]
        if config.causal:
            visible = visible & (np.arange(n)[None, :] <= np.arange(n)[:, None])
        for l in range(config.layers):
            w = {k: a[l] for k, a in p["layers"].items()}

            def attention(y):
                H, dh = config.heads, config.d // config.heads
                q = (y @ w["Wq"].T + w["bq"]).reshape(n, H, dh).transpose(1, 0, 2)
                k = (y @ w["Wk"].T + w["bk"]).reshape(n, H, dh).transpose(1, 0, 2)
                val = (y @ w["Wv"].T + w["bv"]).reshape(n, H, dh).transpose(1, 0, 2)
                s = q @ k.transpose(0, 2, 1) / math.sqrt(dh)
                s = np.where(visible, s, -np.inf)
                e = np.exp(s - s.max(-1, keepdims=True))
                a = e / e.sum(-1, keepdims=True)
                return (a @ val).transpose(1, 0, 2).reshape(n, config.d) @ w["Wo"].T + w["bo"]

            def ffn(y):
                return act(y @ w["W1"].T + w["b1"]) @ w["W2"].T + w["b2"]

            if config.norm == "post":
                x = ln(x + attention(x), w["ln1_gamma"], w["ln1_beta"])
                x = ln(x + ffn(x), w["ln2_gamma"], w["ln2_beta"])
            else:
                x = x + attention(ln(x, w["ln1_gamma"], w["ln1_beta"]))
                x = x + ffn(ln(x, w["ln2_gamma"], w["ln2_beta"]))
        out.append(x[v].mean(0))
    return np.stack(out)


CONFIGS = [EncoderConfig(d=8, heads=2, ffn=16, layers=2),
           EncoderConfig(d=8, heads=4, ffn=12, layers=2, norm="pre", activation="gelu_tanh", causal=True, eps=1e-5),
           EncoderConfig(d=6, heads=1, ffn=6, layers=1, activation="relu", eps=0.0)]


# emulation compiles every rounding of every site: the emulated tests use one small layer (two
# for the scan test), whose bits say as much as a big one's
TINY = EncoderConfig(d=4, heads=2, ffn=4, layers=1, norm="pre", activation="gelu_tanh", causal=True, eps=1e-5)
TWO = EncoderConfig(d=4, heads=2, ffn=4, layers=2)


@pytest.mark.parametrize("config", CONFIGS, ids=["post-gelu", "pre-tanh-causal", "relu-eps0"])
def test_exact_encoder_matches_an_independent_float64_implementation(config):
    params = random_params(config)
    got = np.asarray(jax.jit(lambda p: encode_batch(p, IDS, VALID, config))(params))
    want = numpy_encoder(params, IDS, VALID, config)
    np.testing.assert_allclose(got, want, rtol=relative_tolerance("fp64", 2**12), atol=relative_tolerance("fp64", 2**12))


def test_scan_and_unrolled_layers_agree_bit_for_bit():
    config = TWO
    params = random_params(config)
    arithmetic = Emulated("bf16", unroll=0)  # (Exact's native sums follow XLA's order, not bits)
    p = jax.tree.map(arithmetic.cast, params)
    run = jax.jit(lambda p, unroll: encode_batch(p, IDS, VALID, config, arithmetic, return_layers=True,
                                                 unroll_layers=unroll), static_argnums=1)
    a, b = run(p, True), run(p, False)  # compiled, as users run them
    for x, y in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("fmt", ["bf16", "fp8_e4m3"])
def test_emulating_the_exact_encoder_equals_the_encoder_in_the_emulated_arithmetic(fmt):
    config = dataclasses.replace(TINY, activation="gelu")
    params = random_params(config)
    arithmetic = Emulated(fmt, unroll=0)  # loops: fast to compile, the same bits
    direct = jax.jit(lambda p: encode_batch(p, IDS, VALID, config, arithmetic))(jax.tree.map(arithmetic.cast, params))
    interpreted = emulate(lambda p: encode_batch(p, IDS, VALID, config, Exact()), arithmetic)(params)
    np.testing.assert_array_equal(np.asarray(direct, np.float64), np.asarray(interpreted, np.float64))
    assert np.all(np.isfinite(np.asarray(direct)))


def test_float64_emulation_equals_exact_recursive_arithmetic_bit_for_bit():
    config = TINY
    params = random_params(config)
    # compiled, as users run it (and as XLA could fuse or contract what the emulation keeps apart)
    def run(arithmetic):
        return jax.jit(lambda p, i, v: encode_batch(p, i, v, config, arithmetic))(params, IDS, VALID)

    np.testing.assert_array_equal(np.asarray(run(Exact(accumulation="recursive"))),
                                  np.asarray(run(Emulated("fp64", unroll=0))))


def test_mixed_ends_equal_plain_emulation_and_masks_equal_static_choices():
    config = TINY
    params = random_params(config)
    f = lambda p, i, v: encode_batch(p, i, v, config, Exact())  # noqa: E731
    low, high = Emulated("bf16", unroll=0), Emulated("fp32", unroll=0)
    low_run = np.asarray(emulate(f, low)(params, IDS, VALID), np.float64)
    high_run = np.asarray(emulate(f, high)(params, IDS, VALID), np.float64)
    count = len(sites(f, Exact(), params, IDS, VALID))
    mask = np.random.default_rng(1).random(count) < 0.3
    static = mixed(f, low, high, Choice(indices=frozenset(np.flatnonzero(mask))))(params, IDS, VALID)
    by_mask = mixed_by_mask(f, low, high)
    np.testing.assert_array_equal(np.asarray(by_mask(mask, params, IDS, VALID)), np.asarray(static))
    np.testing.assert_array_equal(np.asarray(by_mask(np.zeros(count, bool), params, IDS, VALID)), low_run)
    np.testing.assert_array_equal(np.asarray(by_mask(np.ones(count, bool), params, IDS, VALID)), high_run)
    assert not np.array_equal(np.asarray(static), low_run) and not np.array_equal(np.asarray(static), high_run)
    # recomputing everything in fp32 is closer to the exact result than all-bf16
    exact = np.asarray(f(params, IDS, VALID))
    assert np.linalg.norm(high_run - exact) < np.linalg.norm(low_run - exact) / 100


def test_gemms_only_choice_rounds_the_products_in_the_low_format_and_the_rest_in_the_high():
    config = TINY
    params = random_params(config)
    f = lambda p, i, v: encode_batch(p, i, v, config, Exact())  # noqa: E731
    listed = sites(f, Exact(), params, IDS, VALID)
    gemms = Choice(primitives=frozenset({"dot_general"}), invert=True)
    assert {s.primitive for s in listed if not gemms(s)} == {"dot_general"}
    same = Choice(indices=frozenset(s.index for s in listed if s.primitive != "dot_general"))
    low, high = Emulated("bf16", unroll=0), Emulated("fp32", unroll=0)
    np.testing.assert_array_equal(np.asarray(mixed(f, low, high, gemms)(params, IDS, VALID)),
                                  np.asarray(mixed(f, low, high, same)(params, IDS, VALID)))



def test_site_operations_count_products_and_additions():
    listed = sites(lambda a, b: a @ b + 1.0, Exact(), jnp.ones((3, 5)), jnp.ones((5, 4)))
    assert [(s.primitive, s.operations) for s in listed] == [("dot_general", 2 * 3 * 4 * 5), ("add", 12)]


@pytest.mark.fast_compile
@pytest.mark.parametrize("fmt", ["t12"])
def test_lumped_first_order_bound_dominates_the_detailed_one_and_the_measured_error(fmt):
    config = TINY
    params = random_params(config)
    f = lambda p: encode_batch(p, IDS, VALID, config, Exact())  # noqa: E731
    arithmetic = Emulated(fmt, unroll=0)  # loops: fast to compile, the same bits
    detailed = first_order(f, arithmetic)(params)
    lumped = first_order(f, arithmetic, lumped=True)(params)
    # the same exact value (lumped dot products are summed by XLA, not in the recursive order)
    value = np.asarray(detailed.value)
    np.testing.assert_allclose(value, np.asarray(lumped.value), rtol=0,
                               atol=relative_tolerance("fp64", 2**8) * np.max(np.abs(value)))
    assert np.all(np.asarray(lumped.bound) >= np.asarray(detailed.bound))
    measured = np.abs(np.asarray(emulate(f, arithmetic)(params), np.float64) - np.asarray(lumped.value))
    assert np.all(measured <= np.asarray(detailed.bound))
    assert [s.index for s in lumped.sites] == [s.index for s in detailed.sites]


def test_encoder_is_differentiable_vmappable_and_traced_once():
    config = TWO
    params = random_params(config)
    grad = jax.jit(jax.grad(lambda p: jnp.sum(encode_batch(p, IDS, VALID, config) ** 2)))(params)
    assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves(grad))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def run(p, ids, valid):
        return encode_batch(p, ids, valid, config)

    for shift in range(3):
        run(params, (IDS + shift) * VALID, VALID)


def test_bad_configs_and_params_are_refused_with_the_name():
    with pytest.raises(ValueError, match="multiple of heads"):
        EncoderConfig(d=10, heads=3, ffn=4, layers=1)
    with pytest.raises(ValueError, match="norm must be one of"):
        EncoderConfig(d=8, heads=2, ffn=4, layers=1, norm="sandwich")
    with pytest.raises(ValueError, match="activation"):
        EncoderConfig(d=8, heads=2, ffn=4, layers=1, activation="swish")
    config = CONFIGS[0]
    params = random_params(config)
    check_params(params, config)
    bad = params | {"layers": params["layers"] | {"W1": params["layers"]["W1"][:, :3]}}
    with pytest.raises(ValueError, match="'W1'.*expected"):
        check_params(bad, config)
    with pytest.raises(ValueError, match="lacks 'bq'"):
        check_params(params | {"layers": {k: v for k, v in params["layers"].items() if k != "bq"}}, config)
