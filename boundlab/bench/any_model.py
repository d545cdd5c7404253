"""Models of the user's own: the in-loop diagnostics, ``emulate`` and ``first_order`` of any model,
and the real MiniLM model."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from boundlab.formats import get_format
from boundlab.bench.timing import Timing, time_call


def diagnostics_benchmark(d: int = 16, L: int = 2, batch: int = 64, samples: int = 64, repeats: int = 3,
                          formats=("bf16", "fp16"), seed: int = 0) -> list[Timing]:
    """The in-loop diagnostics (``boundlab.analysis.monitoring``) beside one training step of the
    ``boundlab train`` classifier (adamw; plain and with the bound penalty) on the same model:
    the steps on ``batch`` training inputs, the diagnostics on ``samples`` inputs (the same
    number by default: the issue's "at most 10x one training step on the same batch")."""
    import optax
    from flax import nnx

    from boundlab.experiments.training_study import load_digits_tokens, make_train_step
    from boundlab.models import SequenceClassifier
    from boundlab.analysis.monitoring import diagnostics

    (train_x, train_y), (test_x, _) = load_digits_tokens(seed)
    model = SequenceClassifier(8, 8, 10, d, 2 * d, L, rngs=nnx.Rngs(seed))
    optimizer = nnx.Optimizer(model, optax.adamw(1e-3), wrt=nnx.Param)
    images, labels = jnp.asarray(train_x[:batch]), jnp.asarray(train_y[:batch])
    u = max(get_format(name).unit_roundoff for name in formats)
    note = f"d = {d}, D = {2 * d}, L = {L}, n = 8; steps on {batch} inputs, diagnostics on {samples}"
    plain = make_train_step(u=u, kind="theorem", penalty_samples=8, penalised=False)
    base, base_first = time_call(lambda: plain(model, optimizer, images, labels, jnp.asarray(0.0)), repeats)
    rows = [Timing("training step (adamw)", base, base_first, 1.0, note=note)]
    penalised = make_train_step(u=u, kind="theorem", penalty_samples=8, penalised=True)
    best, first = time_call(lambda: penalised(model, optimizer, images, labels, jnp.asarray(1e-3)), repeats)
    rows.append(Timing("training step + bound penalty (8 inputs)", best, first, best / base, note=note))
    held_out = jnp.asarray(test_x[:samples])

    def diagnose():
        return diagnostics(model.transformer, model.tokens(held_out), formats=tuple(formats))

    best, first = time_call(diagnose, repeats)
    rows.append(Timing(f"diagnostics ({', '.join(formats)} emulated, bounds, Baek)", best, first, best / base, note=note,
                       goal_ratio=3.0))
    return rows


def emulate_benchmark(batch: int = 1000, d: int = 20, L: int = 40, fmt: str = "t10", repeats: int = 2,
                      seed: int = 0) -> list[Timing]:
    """``boundlab.emulate`` of the paper's network written in plain jnp (``plain_forward``) beside
    the hand-written ``forward(..., Emulated(fmt))`` (the baseline, bit-identical results), on
    ``batch`` figure1 initialisations (vmapped); and ``boundlab.first_order`` of one network of
    the same shape (one VJP per output entry; the first call includes tracing and compilation)."""
    from boundlab.arithmetic import Emulated
    from boundlab.emulation import emulate
    from boundlab.sensitivity import first_order
    from boundlab.models.paper import forward, init
    from boundlab.models.paper.plain import plain_forward

    keys = jax.random.split(jax.random.key(seed), batch)
    params, X = jax.jit(jax.vmap(lambda k: init(k, "figure1", d=d, n=d, D=d, L=L)))(keys)
    arithmetic = Emulated(fmt)
    note = f"{batch} inits, d = n = D = {d}, L = {L}, {fmt}, recursive; first call includes compilation"
    hand = jax.jit(jax.vmap(lambda p, x: forward(p, x, arithmetic)))
    base, base_first = time_call(lambda: hand(params, X), repeats)
    rows = [Timing(f"forward(..., Emulated({fmt}))", base, base_first, 1.0, note=note)]
    interpreted = jax.jit(jax.vmap(emulate(lambda p, x: plain_forward(tuple(p), x), arithmetic)))
    best, first = time_call(lambda: interpreted(params, X), repeats)
    rows.append(Timing(f"emulate(plain_forward, Emulated({fmt}))", best, first, best / base, note=note))
    one = jax.tree.map(lambda a: a[0], (params, X))
    bounded = first_order(plain_forward, arithmetic)
    best, first = time_call(lambda: bounded(tuple(one[0]), one[1]).bound, repeats)
    rows.append(Timing(f"first_order(plain_forward), one network", best, first, None,
                       note=f"d = n = D = {d}, L = {L}: {d * d} VJPs; first call {first:.1f} s (tracing, compilation)"))
    return rows + user_model_rows(repeats=repeats, seed=seed)


def two_block_model(d: int = 16, seed: int = 0):
    """A user's own two-block pre-norm NNX model (nnx.LayerNorm, nnx.MultiHeadAttention with 2
    heads, nnx.Linear + GELU), the model of the compile-time goal."""
    from flax import nnx

    class Block(nnx.Module):
        def __init__(self, rngs):
            self.ln1, self.ln2 = nnx.LayerNorm(d, rngs=rngs), nnx.LayerNorm(d, rngs=rngs)
            self.attn = nnx.MultiHeadAttention(num_heads=2, in_features=d, decode=False, rngs=rngs)
            self.fc1, self.fc2 = nnx.Linear(d, 4 * d, rngs=rngs), nnx.Linear(4 * d, d, rngs=rngs)

        def __call__(self, x):
            x = x + self.attn(self.ln1(x))
            return x + self.fc2(jax.nn.gelu(self.fc1(self.ln2(x))))

    class TwoBlocks(nnx.Module):
        def __init__(self, rngs):
            self.blocks = nnx.List([Block(rngs) for _ in range(2)])

        def __call__(self, x):
            for block in self.blocks:
                x = block(x)
            return x

    return TwoBlocks(nnx.Rngs(seed))


def user_model_rows(d: int = 16, n: int = 8, fmt: str = "bf16", repeats: int = 2, seed: int = 0) -> list[Timing]:
    """``emulate``, ``first_order`` (detailed and lumped) and ``model_diagnostics`` of a user's
    two-block NNX model on n tokens: first call (tracing and compilation; the goal: under
    5 s for emulate and first_order) and steady state; ratios to the model's own float32 call."""
    from boundlab.arithmetic import Emulated
    from boundlab.emulation import emulate
    from boundlab.analysis import model_diagnostics
    from boundlab.sensitivity import first_order

    model = two_block_model(d, seed)
    x = jax.random.normal(jax.random.key(seed + 1), (n, d), jnp.float32)
    note = f"two pre-norm blocks, d = {d}, 2 heads, n = {n}, {fmt}; first call includes compilation"
    plain = jax.jit(lambda v: model(v))
    base, base_first = time_call(lambda: plain(x), repeats)
    rows = [Timing("user model, plain float32 call", base, base_first, 1.0, note=note)]
    arithmetic = Emulated(fmt)
    best, first = time_call(lambda: emulate(model, arithmetic)(x), repeats)
    rows.append(Timing(f"emulate(user model, {fmt})", best, first, best / base, note=note, goal_seconds=5.0))
    best, first = time_call(lambda: first_order(model, arithmetic)(x).bound, repeats)
    rows.append(Timing(f"first_order(user model, {fmt})", best, first, best / base, note=note, goal_seconds=5.0))
    best, first = time_call(lambda: first_order(model, arithmetic, lumped=True)(x).bound, repeats)
    rows.append(Timing(f"first_order(user model, {fmt}, lumped)", best, first, best / base, note=note))
    best, first = time_call(lambda: model_diagnostics(model, x[None], formats=(fmt,)).output, repeats)
    rows.append(Timing(f"model_diagnostics(user model, {fmt})", best, first, best / base, note=note))
    return rows


def model_benchmark(sentences: int = 32, length: int = 32, fmt: str = "bf16", repeats: int = 2) -> list[Timing]:
    """MiniLM-L6 (the ``models`` extra) on ``sentences`` shipped sentences padded to ``length``
    tokens: the exact float64 forward (the baseline) beside the every-operation emulation in
    ``fmt`` (Model 4.1, recursive accumulation in the format; layers scanned) and the GEMMs-only
    variant with a float32 accumulator; peak memory of the process is in the note."""
    import resource

    from boundlab.arithmetic import Exact
    from boundlab.experiments.real_model import layers_fn, run_variant
    from boundlab.models import load, sentences as shipped, tokenize
    from boundlab.models.encoder.network import encode_batch

    model = load("minilm")
    texts = (shipped() * (1 + sentences // len(shipped())))[:sentences]
    ids, valid = tokenize(model, texts, length=length)
    config = model.config
    params64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), model.params)
    exact = jax.jit(lambda p: encode_batch(p, ids, valid, config, Exact(), unroll_layers=False))
    base, base_first = time_call(lambda: exact(params64), repeats)
    note = f"{sentences} sentences x {length} tokens, d = 384, L = 6; first call includes compilation"
    rows = [Timing("MiniLM exact float64 forward", base, base_first, 1.0, note=note)]
    f = layers_fn(config, unroll=False)
    for variant, goal in (("all", 15.0), ("gemms-fp32acc", 5.0)):
        best, first = time_call(lambda v=variant: run_variant(f, params64, ids, valid, fmt, v)[0], repeats)
        rows.append(Timing(f"MiniLM {fmt} {variant}", best, first, best / base, note=note, goal_ratio=goal))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    rows[-1] = dataclasses.replace(rows[-1], note=f"{note}; peak resident memory {peak:.1f} GiB")
    return rows
