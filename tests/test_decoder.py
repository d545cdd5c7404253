"""The decoder family (boundlab.models.decoder) on small random Llama-architecture models: the exact
forward against Hugging Face's formulas in NumPy (tests/llama_reference.py), the emulated forward
bit for bit ``emulate`` of the plain program, the layers under ``lax.scan`` bit for bit the
unrolled ones, the NNX module bit for bit the pure function, the KV cache bit for bit the whole
forward, greedy generation equal to recomputing the argmax, the cache's storage formats within
their unit roundoff, and bad configurations refused."""

import os
import subprocess
import sys
import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from llama_reference import hf_decoder
from tolerances import relative_tolerance

from boundlab import Emulated, Exact, emulate, first_order, get_format, round_to
from boundlab.arithmetic import Native
from boundlab.models import decoder as dec

CONFIG = dec.DecoderConfig(d=12, heads=3, kv_heads=1, ffn=20, layers=2, vocab=17, rope_base=100.0, eps=1e-5)
PARAMS = jax.tree.map(lambda a: a * 20 if a.ndim > 1 else a, dec.init_params(CONFIG, jax.random.key(0)))
IDS = jnp.array([1, 5, 7, 3, 2, 9, 4, 11, 0, 6, 13, 8, 15, 10, 12, 14], jnp.int32)  # rotary angles of
# positions >= 12 differ in bf16 when computed in the program rather than as host constants
BF16 = Emulated("bf16")
PARAMS_BF16 = dec.cast_params(PARAMS, BF16)


def test_the_exact_forward_is_hugging_faces_llama():
    logits = dec.forward(PARAMS, IDS, CONFIG)
    reference = hf_decoder(jax.tree.map(np.asarray, PARAMS), np.asarray(IDS), CONFIG.heads, CONFIG.kv_heads,
                           CONFIG.rope_base, CONFIG.eps)
    np.testing.assert_allclose(logits, reference, rtol=0, atol=relative_tolerance() * np.max(np.abs(reference)))


def test_emulated_forward_is_emulate_of_the_plain_program_and_the_scan_is_the_unrolled_loop():
    emulated = dec.forward(PARAMS_BF16, IDS, CONFIG, BF16)
    plain = emulate(lambda p, i: dec.forward(p, i, CONFIG, Native()), BF16)(PARAMS_BF16, IDS)
    assert jnp.array_equal(emulated, plain)
    exact = dec.forward(PARAMS, IDS, CONFIG)
    unrolled = dec.forward(PARAMS, IDS, CONFIG, unroll_layers=True)  # XLA fuses float64 differently
    np.testing.assert_allclose(unrolled, exact, rtol=0, atol=relative_tolerance() * float(jnp.max(jnp.abs(exact))))
    assert not jnp.array_equal(emulated, exact)  # bf16 changed something, and not much
    assert float(jnp.max(jnp.abs(emulated - exact)) / jnp.max(jnp.abs(exact))) < 0.5  # moved, not scrambled


def test_the_module_is_the_pure_function_bit_for_bit():
    model = dec.Decoder(CONFIG, PARAMS_BF16)
    batch = jnp.stack([IDS, IDS[::-1]])
    for arithmetic in (Exact(), BF16):
        out = model(batch, arithmetic=arithmetic)
        assert out.shape == (2, CONFIG.vocab, IDS.shape[0])
        assert jnp.array_equal(out[1], dec.forward(PARAMS_BF16, IDS[::-1], CONFIG, arithmetic))
    tokens, logits = model.generate(IDS, 4, return_logits=True)
    expected_tokens, expected_logits = dec.generate(model.params(), IDS, 4, CONFIG, return_logits=True)
    assert tokens.tolist() == expected_tokens.tolist() and jnp.array_equal(logits, expected_logits)


def test_native_float32_stays_float32():
    params32 = jax.tree.map(lambda a: a.astype(jnp.float32), PARAMS)
    logits = dec.forward(params32, IDS, CONFIG, Native())
    assert logits.dtype == jnp.float32
    exact = dec.forward(PARAMS, IDS, CONFIG)
    error = jnp.max(jnp.abs(logits.astype(jnp.float64) - exact)) / jnp.max(jnp.abs(exact))
    assert float(error) < 2**10 * get_format("fp32").unit_roundoff


def test_the_cache_is_the_whole_forward_bit_for_bit_and_generation_is_the_recomputed_argmax():
    # emulated (a fixed summation order): the prompt, then one token at a time, bit for bit the whole forward
    whole = dec.forward(PARAMS_BF16, IDS, CONFIG, BF16)
    cache = dec.empty_cache(CONFIG, 9, BF16.dtype)
    first, cache = dec.forward_cached(PARAMS_BF16, IDS[:4], cache, 0, CONFIG, BF16)
    assert jnp.array_equal(first, whole[:, :4])
    for position in (4, 5):
        step, cache = dec.forward_cached(PARAMS_BF16, IDS[position:position + 1], cache, position, CONFIG, BF16)
        assert jnp.array_equal(step[:, 0], whole[:, position])
    assert cache["positions"].tolist() == [0, 1, 2, 3, 4, 5, -1, -1, -1]

    # greedy generation (exact arithmetic): each step's logits are the recomputed forward's last column
    tokens, logits = dec.generate(PARAMS, IDS, 4, CONFIG, return_logits=True)
    sequence = jnp.concatenate([IDS, tokens])
    recomputed = dec.forward(PARAMS, sequence, CONFIG)[:, IDS.shape[0] - 1:-1].T
    np.testing.assert_allclose(logits, recomputed, rtol=0, atol=relative_tolerance() * float(jnp.max(jnp.abs(recomputed))))
    assert tokens.tolist() == jnp.argmax(recomputed, axis=1).tolist()


def test_sampling_is_reproducible_and_follows_the_key():
    draw = lambda k: dec.generate(PARAMS, IDS, 6, CONFIG, temperature=1.0, sample_key=jax.random.key(k))  # noqa: E731
    first = draw(1)
    assert first.tolist() == draw(1).tolist()
    assert any(draw(k).tolist() != first.tolist() for k in range(2, 6))
    assert bool(jnp.all((first >= 0) & (first < CONFIG.vocab)))
    with pytest.raises(ValueError, match="sample_key"):
        dec.generate(PARAMS, IDS, 2, CONFIG, temperature=0.5)


@pytest.mark.parametrize("cache_format", [dec.CacheFormat("bf16"), dec.CacheFormat("fp8_e4m3", scaled=True)],
                         ids=str)
def test_a_cache_in_a_storage_format_holds_its_numbers_within_their_unit_roundoff(cache_format):
    fmt = get_format(cache_format.fmt)
    exact_cache = dec.empty_cache(CONFIG, IDS.shape[0], jnp.float64)
    _, exact_cache = dec.forward_cached(PARAMS, IDS, exact_cache, 0, CONFIG)
    cache = dec.empty_cache(CONFIG, IDS.shape[0], jnp.float64)
    logits, cache = dec.forward_cached(PARAMS, IDS, cache, 0, CONFIG, cache_format=cache_format, calibrate=True)
    for name in ("K", "V"):  # layer 1's keys and values (later layers' inputs carry the cache's rounding)
        scale = cache[f"scale_{name}"][0, :, None, None]
        stored, exact = cache[name][0], exact_cache[name][0]
        if cache_format.scaled:  # the prompt's largest entry of each head is the format's largest number
            assert np.allclose(np.max(np.abs(exact), axis=(1, 2)) / cache[f"scale_{name}"][0], fmt.max_finite)
        else:
            assert bool(jnp.all(scale == 1))
        # stored entries are format numbers; the error is u relative, or half the smallest subnormal absolute
        np.testing.assert_array_equal(stored, np.asarray(jax.jit(lambda x: round_to(x, fmt))(stored)))
        error = jnp.abs(stored * scale - exact)
        assert bool(jnp.all(error <= fmt.unit_roundoff * jnp.abs(exact) + scale * fmt.min_subnormal / 2))
    whole = dec.forward(PARAMS, IDS, CONFIG)
    assert not jnp.array_equal(logits, whole)  # the cache's rounding reached the logits
    tokens = dec.generate(PARAMS, IDS, 3, CONFIG, cache_format=cache_format)
    assert tokens.shape == (3,)


def test_generation_compiles_once_and_maps_over_prompts():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def batch(prompts):
        return jax.vmap(lambda p: dec.generate(PARAMS, p, 3, CONFIG))(prompts)

    prompts = jnp.stack([IDS, IDS[::-1], (IDS + 1) % CONFIG.vocab])
    out = batch(prompts)
    batch(prompts + 0)
    assert out.shape == (3, 3)
    assert out[1].tolist() == dec.generate(PARAMS, IDS[::-1], 3, CONFIG).tolist()


SHARDED = """
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
from boundlab import Emulated
from boundlab.models import decoder as dec
CONFIG = dec.DecoderConfig(d=12, heads=3, kv_heads=1, ffn=20, layers=2, vocab=17, rope_base=100.0, eps=1e-5)
PARAMS = jax.tree.map(lambda a: a * 20 if a.ndim > 1 else a, dec.init_params(CONFIG, jax.random.key(0)))
IDS = jnp.array([1, 5, 7, 3, 2, 9, 4, 11, 0, 6, 13, 8, 15, 10, 12, 14], jnp.int32)
PROMPTS, LENGTHS = dec.pad_prompts([IDS[:3], IDS[2:9], IDS[5:6], IDS[4:8], IDS[1:3]])
BF16 = Emulated("bf16")  # a fixed summation order: the same bits whatever the batch per device
CACHE = dec.CacheFormat("fp8_e4m3", scaled=True)
batch = jax.jit(lambda p, q, n: dec.generate_batch(p, q, n, 3, CONFIG, BF16, cache_format=CACHE, return_logits=True))
def run(prompts=PROMPTS):
    prompts, lengths = dec.shard_prompts(prompts, LENGTHS)
    tokens, logits = batch(dec.cast_params(PARAMS, BF16), prompts, lengths)
    return np.asarray(tokens)[:5], np.asarray(logits)[:5], len(tokens.sharding.device_set)
"""


def test_ragged_prompts_in_one_batch_are_each_prompt_alone_and_four_devices_give_the_same_bits(tmp_path):
    # padding is invisible: with sums in index order (recursive) its exact zeros change no partial
    # sum, and a scaled cache's scales ignore it; one compiled program for the ragged batch, the
    # same bits when the batch is sharded over 4 host devices
    namespace = {}
    exec(SHARDED, namespace)
    tokens, logits, devices = namespace["run"]()
    assert devices == 1 and tokens.shape == (5, 3) and namespace["PROMPTS"].shape == (5, 7)
    assert namespace["LENGTHS"].tolist() == [3, 7, 1, 4, 2]
    for row, prompt in ((1, IDS[2:9]), (2, IDS[5:6])):
        alone, alone_logits = dec.generate(PARAMS_BF16, prompt, 3, CONFIG, BF16, cache_format=namespace["CACHE"],
                                           return_logits=True)
        assert tokens[row].tolist() == alone.tolist()
        np.testing.assert_array_equal(logits[row], alone_logits)
    other, _ = dec.pad_prompts([IDS[:3], IDS[2:9], IDS[5:6], IDS[4:8], IDS[1:3]], pad=0)  # never seen
    np.testing.assert_array_equal(namespace["run"](other)[0], tokens)
    with pytest.raises(ValueError, match="non-empty prompts"):
        dec.pad_prompts([IDS[:2], IDS[:0]])
    script = tmp_path / "four.py"
    script.write_text(SHARDED + textwrap.dedent(f"""
        assert len(jax.devices()) == 4, jax.devices()
        tokens, logits, devices = run()
        assert devices == 4, devices
        np.savez({str(tmp_path / 'four.npz')!r}, tokens=tokens, logits=logits)
    """))
    effort = str(int(jax.config.read("jax_disable_most_optimizations")))  # the same effort (tests/conftest.py)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu",
           "JAX_DISABLE_MOST_OPTIMIZATIONS": effort}
    subprocess.run([sys.executable, str(script)], check=True, env=env, timeout=600)
    four = np.load(tmp_path / "four.npz")
    np.testing.assert_array_equal(four["tokens"], tokens)
    np.testing.assert_array_equal(four["logits"], logits)


def test_the_loss_is_differentiable():
    grads = jax.grad(lambda p: dec.next_token_loss(dec.forward(p, IDS, CONFIG), IDS))(PARAMS)
    leaves = jax.tree.leaves(grads)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert all(float(jnp.max(jnp.abs(g))) > 0 for g in leaves)


def test_bad_configurations_and_parameters_are_refused():
    with pytest.raises(ValueError, match="kv_heads = 2 must divide heads = 3"):
        dec.DecoderConfig(d=12, heads=3, kv_heads=2, ffn=4, layers=1, vocab=5)
    with pytest.raises(ValueError, match="even head size"):
        dec.DecoderConfig(d=9, heads=3, kv_heads=1, ffn=4, layers=1, vocab=5)
    with pytest.raises(ValueError, match="eps must be > 0"):
        dec.DecoderConfig(d=12, heads=3, kv_heads=1, ffn=4, layers=1, vocab=5, eps=0.0)
    wrong = {**PARAMS, "layers": {**PARAMS["layers"], "Wk": PARAMS["layers"]["Wq"]}}
    with pytest.raises(ValueError, match=r"params\['layers'\]\['Wk'\] has shape \(2, 12, 12\), expected \(2, 4, 12\)"):
        dec.Decoder(CONFIG, wrong)
    with pytest.raises(ValueError, match=r"CacheFormat\(scaled=True\) needs a storage format"):
        dec.CacheFormat(scaled=True)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        dec.generate(PARAMS, IDS, 0, CONFIG)


@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
def test_the_first_order_bound_is_finite_and_never_below_the_measured_error(fmt):
    # masked scores are exact zeros here (blocks.softmax); the masks that overflow (finfo.min) are
    # tests/test_sensitivity.py's; weights x 4 (not x 20): nothing that matters overflows in fp16
    arithmetic = Emulated(fmt)
    plain = lambda p, i: dec.forward(p, i, CONFIG, Native())  # noqa: E731
    params = dec.cast_params(jax.tree.map(lambda a: a / 5 if a.ndim > 1 else a, PARAMS), arithmetic)
    record = first_order(plain, arithmetic, lumped=True)(params, IDS)
    # Emulated(fmt) is emulate of the plain program bit for bit (the test above)
    measured = jnp.abs(dec.forward(params, IDS, CONFIG, arithmetic).astype(jnp.float64) - record.value)
    assert record.verdict() is None
    assert bool(jnp.all(measured <= record.bound)), float(jnp.max(measured / record.bound))
    assert float(jnp.max(measured / record.bound)) > 1e-3  # and not vacuous


@pytest.mark.fast_compile
def test_model_diagnostics_finds_every_layers_parts_in_the_unrolled_module():
    # the NNX decoder with its layers unrolled: each layer's attention, norms and gated perceptron
    # found as parts of their own, their values recorded, the bf16 bound finite and not below the
    # measured normwise error of the output
    from boundlab.analysis import model_diagnostics

    config = dec.DecoderConfig(d=12, heads=3, kv_heads=1, ffn=20, layers=2, vocab=17, rope_base=100.0, eps=1e-5)
    model = dec.Decoder(config, PARAMS, unroll_layers=True)
    result = model_diagnostics(model, IDS[None, :6], formats=("bf16",), condition=False)
    kinds = {}
    for name in result.parts:  # "<scope>:<kind>[#k]", e.g. "vmap(layer1)/attention:attention"
        scope, kind = name.rsplit(":", 1)
        layer = next((part for part in scope.split("/") if "layer" in part), "model")
        kinds.setdefault(layer, set()).add(kind.split("#")[0])
    assert kinds["vmap(layer1)"] >= {"attention", "perceptron", "rms_norm"} and kinds["vmap(layer2)"] == kinds["vmap(layer1)"]
    assert all(bool(value) for value in result.flags.values()), result.flags
    # the norms' epsilon, passed into the jitted block as an operand, is found (it was reported 0)
    assert result.structure.summary().count("eps=1e-05") == 2 * config.layers + 1
    output = result.at_output("bf16")
    assert float(output.bound_normwise) >= float(output.error_normwise) > 0
