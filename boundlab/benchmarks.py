"""Benchmarks behind ``boundlab bench``: times and ratios measured in one process.

Speed is never asserted in tests (the machine is shared and noisy); it is measured here and
reported as ratios to a baseline timed in the same run.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from boundlab.formats import get_format
from boundlab.rounding import round_to


@dataclasses.dataclass(frozen=True)
class Timing:
    """Best-of-``repeats`` wall time of a call, after one warm-up call (compilation).

    ``goal_ratio`` / ``goal_seconds``: the target this row is held to (issue 22: a ratio to the
    section's baseline, or a wall time including compilation); ``met`` says whether it is reached.
    """

    name: str
    seconds: float
    first_call_seconds: float
    ratio: float | None = None  # seconds / baseline seconds, same process
    note: str = ""
    goal_ratio: float | None = None
    goal_seconds: float | None = None
    goal_steady: bool = False  # goal_seconds holds for the best (compiled) call, not the first

    @property
    def goal(self) -> str:
        if self.goal_ratio is not None:
            return f"<= {self.goal_ratio:g}x"
        if self.goal_seconds is not None:
            return f"<= {self.goal_seconds:g} s" + (" (compiled)" if self.goal_steady else "")
        return ""

    @property
    def met(self) -> bool | None:
        """Whether the goal is reached (None without a goal)."""
        if self.goal_ratio is not None:
            return self.ratio is not None and self.ratio <= self.goal_ratio
        if self.goal_seconds is not None:
            return (self.seconds if self.goal_steady else self.first_call_seconds) <= self.goal_seconds
        return None

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "goal": self.goal, "met": self.met}


def time_call(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(best time, first-call time) of ``fn``, blocking on JAX results."""
    start = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - start
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - start)
    return best, first


def _peer_timings(x: np.ndarray, fmt, reference: np.ndarray, repeats: int) -> list[Timing]:
    """pychop and gfloat on the same array, with their mismatch count against boundlab."""
    timings = []
    try:
        import pychop

        exp_bits = (fmt.emax - fmt.emin + 2).bit_length()
        chop = pychop.Chop(exp_bits=exp_bits, sig_bits=fmt.precision - 1, rmode=1)  # numpy input: numpy backend
        best, first = time_call(lambda: np.asarray(chop(x)), repeats)
        wrong = _mismatches(np.asarray(chop(x), dtype=x.dtype), reference)
        timings.append(Timing("pychop.Chop (numpy)", best, first, note=f"{wrong} results differ from MPFR-exact rounding"))
    except ImportError:
        pass
    try:
        import gfloat
        from gfloat import formats as gformats

        info = getattr(gformats, f"format_info_{_GFLOAT_NAMES.get(fmt.name, '')}", None)
        if info is not None:
            best, first = time_call(lambda: gfloat.round_ndarray(info, x), repeats)
            wrong = _mismatches(np.asarray(gfloat.round_ndarray(info, x), dtype=x.dtype), reference)
            timings.append(Timing("gfloat.round_ndarray", best, first, note=f"{wrong} results differ from MPFR-exact rounding"))
    except ImportError:
        pass
    return timings


_GFLOAT_NAMES = {"fp16": "binary16", "bf16": "bfloat16", "fp32": "binary32", "tf32": "tf32",
                 "fp8_e5m2": "ocp_e5m2", "fp8_e4m3": "ocp_e4m3"}


def _mismatches(got: np.ndarray, want: np.ndarray) -> int:
    same = (got == want) & (np.signbit(got) == np.signbit(want)) | (np.isnan(got) & np.isnan(want))
    return int((~same).sum())


def rounding_benchmark(size: int = 10**7, fmt: str = "fp16", repeats: int = 5, seed: int = 0,
                       peers: bool = True) -> list[Timing]:
    """Throughput of ``round_to`` against a jitted ``x * 1.0`` on the same float64 array.

    ``x * 1.0`` is what XLA reduces to a copy: one read and one write of the array, the floor
    for any elementwise pass.  The float32 container and stochastic rounding are timed too.
    """
    fmt = get_format(fmt)
    rng = np.random.default_rng(seed)
    host = rng.standard_normal(size) * np.exp2(rng.integers(-20, 20, size))
    x64 = jnp.asarray(host, dtype=jnp.float64)
    baseline = jax.jit(lambda v: v * 1.0)
    nearest = jax.jit(lambda v: round_to(v, fmt))
    results = []
    base_best, base_first = time_call(lambda: baseline(x64), repeats)
    results.append(Timing("jit(x * 1.0) float64", base_best, base_first, 1.0))

    def add(name, fn, base=base_best, note=""):
        best, first = time_call(fn, repeats)
        results.append(Timing(name, best, first, best / base, note))

    add(f"round_to {fmt} nearest, float64", lambda: nearest(x64))
    toward_zero = jax.jit(lambda v: round_to(v, fmt, "zero"))
    add(f"round_to {fmt} toward zero, float64", lambda: toward_zero(x64))
    key = jax.random.key(seed)
    stochastic = jax.jit(lambda v, k: round_to(v, fmt, "stochastic", key=k))
    add(f"round_to {fmt} stochastic, float64", lambda: stochastic(x64, key), note="includes drawing 64 random bits per element")
    if fmt.fits_float32:
        x32 = x64.astype(jnp.float32)
        base32, first32 = time_call(lambda: baseline(x32), repeats)
        results.append(Timing("jit(x * 1.0) float32", base32, first32, base32 / base_best))
        add(f"round_to {fmt} nearest, float32", lambda: nearest(x32), base=base32, note="ratio to the float32 copy")
    if peers:
        reference = np.asarray(nearest(x64))
        for timing in _peer_timings(host, fmt, reference, max(1, repeats // 2)):
            results.append(dataclasses.replace(timing, ratio=timing.seconds / base_best))
    return results


def forward_benchmark(batch: int = 5000, d: int = 20, n: int = 20, D: int = 20, L: int = 40, fmt: str = "t10",
                      repeats: int = 2, seed: int = 0) -> list[Timing]:
    """A jitted, vmapped forward of ``batch`` figure1 initialisations under Exact and Emulated.

    The rows are Exact() (XLA's float64 dot products), Emulated(fmt) with recursive
    accumulation (every product and every partial sum rounded, the paper's Model 4.1 and
    Lemma 4.3) and Emulated(fmt) with blocked accumulation; ratios are to the exact forward.
    """
    from boundlab.arithmetic import Emulated, Exact
    from boundlab.transformer import forward, init

    keys = jax.random.split(jax.random.key(seed), batch)
    params, X = jax.jit(jax.vmap(lambda k: init(k, "figure1", d=d, n=n, D=D, L=L)))(keys)
    policies = [("Exact()", Exact()),
                (f"Emulated({fmt}, recursive)", Emulated(fmt)),
                (f"Emulated({fmt}, blocked(32))", Emulated(fmt, accumulation="blocked", block_size=32))]
    results = []
    base = None
    for name, arithmetic in policies:
        run = jax.jit(jax.vmap(lambda p, x, arithmetic=arithmetic: forward(p, x, arithmetic)))
        best, first = time_call(lambda run=run: run(params, X), repeats)
        base = best if base is None else base
        results.append(Timing(f"forward {name}", best, first, best / base,
                              note=f"{batch} inits, d=n=D={d}, L={L}; first call includes compilation"))
    return results


def stochastic_benchmark(batch: int = 1000, d: int = 20, L: int = 40, fmt: str = "t10", repeats: int = 2,
                         seed: int = 0) -> list[Timing]:
    """The jitted, vmapped forward of ``batch`` figure1 initialisations with stochastic rounding
    (a random word per rounding from ``rounding.random_bits_for``'s counter hash) beside the same
    forward rounding to nearest (the baseline); goal: at most 1.5x."""
    from boundlab.arithmetic import Emulated
    from boundlab.transformer import forward, init

    keys = jax.random.split(jax.random.key(seed), batch)
    params, X = jax.jit(jax.vmap(lambda k: init(k, "figure1", d=d, n=d, D=d, L=L)))(keys)
    note = f"{batch} inits, d = n = D = {d}, L = {L}, {fmt}, recursive; first call includes compilation"
    nearest = jax.jit(jax.vmap(lambda p, x: forward(p, x, Emulated(fmt))))
    base, base_first = time_call(lambda: nearest(params, X), repeats)
    rows = [Timing(f"forward, Emulated({fmt}) nearest", base, base_first, 1.0, note=note)]
    stochastic = jax.jit(jax.vmap(lambda p, x, k: forward(p, x, Emulated(fmt, mode="stochastic"), key=k)))
    best, first = time_call(lambda: stochastic(params, X, keys), repeats)
    rows.append(Timing(f"forward, Emulated({fmt}, stochastic)", best, first, best / base, note=note, goal_ratio=1.5))
    return rows


def theorem_benchmark(inits: int = 64, d: int = 20, L: int = 40, fmt: str = "t24", repeats: int = 3,
                      seed: int = 0) -> list[Timing]:
    """Theorem 4.30 (both variants, with its own exact forward and intermediates) on ``inits``
    figure1 networks, jitted and vmapped, beside the exact float64 forward of the same networks
    (the baseline); goal: at most 3 exact forwards in steady state."""
    from boundlab import bounds
    from boundlab.arithmetic import Exact
    from boundlab.transformer import forward, init

    keys = jax.random.split(jax.random.key(seed), inits)
    params, X = jax.jit(jax.vmap(lambda k: init(k, "figure1", d=d, n=d, D=d, L=L)))(keys)
    u = get_format(fmt).unit_roundoff
    note = f"{inits} inits, d = n = D = {d}, L = {L}; first call includes compilation"
    exact = jax.jit(jax.vmap(lambda p, x: forward(p, x, Exact(), cast=False)))
    base, base_first = time_call(lambda: exact(params, X), repeats)
    rows = [Timing("exact float64 forward", base, base_first, 1.0, note=note)]

    def both(p, x):  # one exact pass and one set of factors for both variants
        factors = bounds.network_factors(p, x, u=u)
        printed = bounds.theorem_4_30(p, x, u=u, factors=factors)
        free = bounds.theorem_4_30(p, x, u=u, sigma_min_free=True, factors=factors)
        return printed.coefficient, free.coefficient, printed.valid

    theorem = jax.jit(jax.vmap(both))
    best, first = time_call(lambda: theorem(params, X), repeats)
    rows.append(Timing("Theorem 4.30, both variants (exact pass included)", best, first, best / base, note=note,
                       goal_ratio=3.0))

    def free_only(p, x):  # the valid variant needs no singular values: XLA drops both SVDs per layer
        free = bounds.theorem_4_30(p, x, u=u, sigma_min_free=True)
        return free.coefficient, free.valid

    theorem_free = jax.jit(jax.vmap(free_only))
    best, first = time_call(lambda: theorem_free(params, X), repeats)
    rows.append(Timing("Theorem 4.30, sigma_min-free variant alone (exact pass included)", best, first, best / base,
                       note=note + "; no SVD", goal_ratio=3.0))
    from boundlab.bounds.terms import spectral

    svd = jax.jit(jax.vmap(jax.vmap(lambda layer: spectral(layer.Wq, layer.Wk))))
    best, first = time_call(lambda: svd(params), repeats)
    rows.append(Timing("  of which: the printed G's two SVDs per layer alone", best, first, best / base,
                       note="sigma_max(|W_k|^T|W_q|) and the singular values of W_k^T W_q (LAPACK, 20 x 20)"))
    return rows


def figure1_benchmark(inits: int = 5000, L: int = 40, d: int = 20, precisions=(12, 16, 20, 24),
                      accumulation: str = "recursive", chunk: int = 128, bound_samples: int = 200,
                      first_order_samples: int = 10) -> list[Timing]:
    """Wall time of the Figure 1 sweep (``inits`` initialisations, every precision, every product
    and partial sum rounded), compilation included, beside the same sweep in float64 only.

    The ratio is to a float64 sweep of the same initialisations (init + exact forward), timed in
    the same process.  The Theorem 4.30 samples of ``boundlab figure 1`` are timed
    separately (``bound_samples`` row).
    """
    import dataclasses as dc

    from boundlab.arithmetic import Exact
    from boundlab.experiments import Figure1, figure1
    from boundlab.experiments.sweeps import sweep
    from boundlab.transformer import forward, init

    config = Figure1(d=d, n=d, D=d, L=L, inits=inits, precisions=tuple(precisions), accumulation=accumulation,
                     chunk=chunk, bound_samples=0, first_order_samples=0)

    def exact_only(key, index):
        params, X = config.narrow(init(key, "figure1", d=d, n=d, D=d, L=L))
        out = forward(params, X, Exact(), config.norm, cast=False)
        return jnp.sum(out * out)  # used, so that XLA keeps the whole forward

    start = time.perf_counter()
    sweep(exact_only, jax.random.key(0), inits, chunk, progress=False)
    base = time.perf_counter() - start
    start = time.perf_counter()
    figure1(config, progress=False)
    seconds = time.perf_counter() - start
    note = f"{inits} inits, L = {L}, d = n = D = {d}, t = {','.join(map(str, precisions))}, {accumulation}; compilation included"
    goal = 30.0 if (inits, L, len(precisions)) == (5000, 40, 4) else None  # issue 22's goal, full size
    rows = [Timing("float64 forward of the same inits", base, base, 1.0, note=note),
            Timing("Figure 1 sweep, all precisions", seconds, seconds, seconds / base, note=note, goal_seconds=goal)]
    if bound_samples:
        start = time.perf_counter()
        figure1(dc.replace(config, inits=bound_samples, bound_samples=bound_samples), progress=False)
        with_bounds = time.perf_counter() - start
        rows.append(Timing(f"Theorem 4.30 on {bound_samples} inits (+ their sweep)", with_bounds, with_bounds,
                           with_bounds / base, note="what boundlab figure 1 adds for its bound column"))
    if first_order_samples:
        # the three-way comparison's autodiff column: one first_order per sample and precision,
        # timed apart (it was hidden in the row above, 337 s of it at 200 samples)
        name = f"autodiff first-order bound on {first_order_samples} inits (+ Theorem 4.30, sweep)"
        start = time.perf_counter()
        try:
            figure1(dc.replace(config, inits=first_order_samples, bound_samples=first_order_samples,
                               first_order_samples=first_order_samples), progress=False)
        except NotImplementedError as error:  # emulate cannot run here (jax 0.11's scan): keep the rows above
            rows.append(Timing(name, math.nan, math.nan, None, note=f"not run: {error}"))
            return rows
        with_first = time.perf_counter() - start
        rows.append(Timing(name, with_first, with_first, with_first / base,
                           note=f"boundlab figure 1's three-way column; its default is {Figure1().first_order_samples} "
                                f"samples, each {len(precisions)} first_order calls of one network"))
    return rows


def analyze_benchmark(d: int = 20, L: int = 40, fmt: str = "t24", repeats: int = 1, conditions: bool = True,
                      seed: int = 0) -> list[Timing]:
    """``analyze`` on one figure1 case (d = n = D, L layers) as a user calls it: every Section 4
    statement, Theorem 4.30 in both variants and (with ``conditions``) the condition numbers of
    every layer; the first call compiles.  Beside one emulated forward of the same case (the
    baseline: what measuring the error alone costs)."""
    from boundlab.analysis import analyze
    from boundlab.arithmetic import Emulated
    from boundlab.transformer import forward, init

    params, X = init(jax.random.key(seed), "figure1", d=d, n=d, D=d, L=L)
    emulated = jax.jit(lambda p, x: forward(p, x, Emulated(fmt, unroll=0)))
    base, base_first = time_call(lambda: emulated(params, X), repeats)
    note = f"d = n = D = {d}, L = {L}, {fmt}; first call includes compilation"
    rows = [Timing(f"emulated forward ({fmt})", base, base_first, 1.0, note=note)]
    best, first = time_call(lambda: analyze(params, X, fmt, conditions=conditions).raw, repeats)
    name = "analyze" + (" (with condition numbers)" if conditions else " (bounds and errors)")
    rows.append(Timing(name, best, first, best / base, note=note))
    return rows


def diagnostics_benchmark(d: int = 16, L: int = 2, batch: int = 64, samples: int = 64, repeats: int = 3,
                          formats=("bf16", "fp16"), seed: int = 0) -> list[Timing]:
    """The in-loop diagnostics (``boundlab.nn.monitoring``) beside one training step of the
    ``boundlab train`` classifier (adamw; plain and with the bound penalty) on the same model:
    the steps on ``batch`` training inputs, the diagnostics on ``samples`` inputs (the same
    number by default: the issue's "at most 10x one training step on the same batch")."""
    import optax
    from flax import nnx

    from boundlab.experiments.training import load_digits_tokens, make_train_step
    from boundlab.nn import SequenceClassifier
    from boundlab.nn.monitoring import diagnostics

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
    from boundlab.transformer import forward, init
    from boundlab.transformer.plain import plain_forward

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
    heads, nnx.Linear + GELU), the model of issue 23's compile-time goal."""
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
    two-block NNX model on n tokens: first call (tracing and compilation; issue 23's goal: under
    5 s for emulate and first_order) and steady state; ratios to the model's own float32 call."""
    from boundlab.arithmetic import Emulated
    from boundlab.emulation import emulate
    from boundlab.nn import model_diagnostics
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


def kernels_benchmark(size: int = 256, fmt: str = "fp16", repeats: int = 3, seed: int = 0,
                      wide: tuple[int, int, int] | None = None,
                      layer: tuple[int, int, int] | None = None) -> list[Timing]:
    """The rounded matmul (every product and partial sum rounded, recursive) of two size x size
    matrices: the XLA path (the baseline) beside the Pallas kernel (``kernel="pallas"``; on the CPU
    Pallas only interprets, so there the row measures the interpreter, not the kernel), and the
    kernel's hardware mode (an MMA per k-block of 32).

    ``wide = (m, K, n)``: the same comparison at a long K (issue 22's goal on a GPU: the recursive
    kernel >= 5x the XLA path at K = 768, i.e. a ratio <= 0.2).  ``layer = (d, n, D)``: one block
    of the paper's transformer (eq. 6) with every product and partial sum rounded in ``fmt``
    through the kernel, beside the XLA path and the exact float64 block (the goal on a GPU: a
    GPT-2-sized layer, d = 768, n = 1024, D = 3072, in < 0.1 s once compiled)."""
    from boundlab.arithmetic import Emulated
    from boundlab.kernels.rounded_matmul import product

    arithmetic = Emulated(fmt, unroll=0, kernel="xla")
    backend = jax.default_backend()
    where = f"{fmt}, on {backend}" + (" (Pallas interprets on the CPU)" if backend == "cpu" else "")

    def compare(m, k, n, key, goal=None, hardware=True):
        keys = jax.random.split(key, 2)
        a = arithmetic.cast(jax.random.normal(keys[0], (m, k)))
        b = arithmetic.cast(jax.random.normal(keys[1], (k, n)))
        note = f"{m} x {k} x {n}, {where}"
        xla = jax.jit(lambda x, y: arithmetic._product(x, y, None))
        base, base_first = time_call(lambda: xla(a, b), repeats)
        pallas = jax.jit(lambda x, y: product(x, y, arithmetic))
        best, first = time_call(lambda: pallas(a, b), repeats)  # the first call compiles
        same = _mismatches(np.asarray(pallas(a, b)), np.asarray(xla(a, b))) == 0  # signed zeros too
        rows = [Timing(f"XLA path (Emulated._product), K = {k}", base, base_first, 1.0, note=note),
                Timing(f"Pallas kernel, recursive, K = {k}", best, first, best / base, goal_ratio=goal,
                       note=note + ("; bit for bit the XLA path's" if same else "; NOT bit for bit the XLA path's"))]
        if hardware:
            blocked = dataclasses.replace(arithmetic, accumulation="blocked", block_size=32)
            mma = jax.jit(lambda x, y: product(x, y, blocked, hardware=True))
            best, first = time_call(lambda: mma(a, b), repeats)
            rows.append(Timing(f"Pallas kernel, hardware (MMA per k-block of 32), K = {k}", best, first,
                               best / base, note=note))
        return rows

    keys = jax.random.split(jax.random.key(seed), 3)
    rows = compare(size, size, size, keys[0])
    if wide is not None:
        rows += compare(*wide, keys[1], goal=0.2, hardware=False)
    if layer is not None:
        rows += _layer_rows(*layer, fmt, keys[2], repeats)
    return rows


def _layer_rows(d: int, n: int, D: int, fmt: str, key, repeats: int) -> list[Timing]:
    """One block of the paper's transformer (d x n tokens, perceptron width D): exact float64, the
    XLA emulation and the Pallas kernel (the format's every product and partial sum rounded)."""
    from boundlab.arithmetic import Emulated, Exact
    from boundlab.transformer import forward, init

    params, X = init(key, "figure1", d=d, n=n, D=D, L=1)
    note = f"d = {d}, n = {n}, D = {D}, L = 1, {fmt}, on {jax.default_backend()}"
    exact = jax.jit(lambda p, x: forward(p, x, Exact()))
    base, base_first = time_call(lambda: exact(params, X), repeats)
    rows = [Timing("one block, exact float64", base, base_first, None, note=note)]
    for kernel in ("xla", "pallas"):
        emulated = Emulated(fmt, kernel=kernel)
        f = jax.jit(lambda p, x, e=emulated: forward(p, x, e))
        best, first = time_call(lambda: f(params, X), repeats)
        rows.append(Timing(f"one block, every partial sum rounded ({kernel})", best, first, None, note=note,
                           goal_seconds=0.1 if kernel == "pallas" else None, goal_steady=True))
    return rows


def _mmasim_wgmma_fp8():
    """MMA-Sim's Hopper wgmma FP8 e4m3 model and torch, or None when they are not installed (its
    float64 FMA model, which builds a C++ extension at import, is stubbed out: never used here)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return None
    import importlib.util
    import sys
    import types

    if importlib.util.find_spec("mmasim") is None:
        return None
    sys.modules.setdefault("mmasim.arithmetic.fma", types.SimpleNamespace(MMA_FMA=None))
    from mmasim.nv_ptx import WGMMA

    return WGMMA("Hopper", "m64n8k32.f32.e4m3.e4m3")


def hardware_benchmark(m: int = 256, n: int = 256, K: int = 4096, repeats: int = 1, seed: int = 0) -> list[Timing]:
    """C = A B (m x K times K x n, e4m3 operands) on Hopper's wgmma FP8 model
    (``boundlab.matrix_units``, the baseline), with promotion every 128, beside MMA-Sim's PyTorch
    model of the same unit (when torch and mmasim are installed; its bit mismatches in the note),
    the recursive Model 4.1 emulation of e4m3 (every product and partial sum rounded) and a plain
    float32 matmul."""
    from boundlab.arithmetic import Emulated
    from boundlab.matrix_units import get_unit, matmul_jit

    unit = get_unit("hopper-wgmma-fp8_e4m3-fp32")
    keys = jax.random.split(jax.random.key(seed), 2)
    A = np.asarray(round_to(jax.random.normal(keys[0], (m, K), jnp.float64) * 8, "fp8_e4m3"))
    B = np.asarray(round_to(jax.random.normal(keys[1], (K, n), jnp.float64) * 8, "fp8_e4m3"))
    note = f"{m} x {K} x {n}, e4m3 operands, on {jax.default_backend()}"
    base, base_first = time_call(lambda: matmul_jit(unit, A, B), repeats)
    D = np.asarray(matmul_jit(unit, A, B))
    rows = [Timing("boundlab hopper-wgmma-fp8_e4m3-fp32", base, base_first, 1.0, note=note)]
    promoted = unit.recipe(promote_every=128)
    best, first = time_call(lambda: matmul_jit(promoted, A, B), repeats)
    rows.append(Timing("boundlab, promotion every 128", best, first, best / base, note=note))
    reference = _mmasim_wgmma_fp8()
    if reference is not None:
        import torch

        At, Bt = torch.tensor(A).to(torch.float8_e4m3fn), torch.tensor(B).to(torch.float8_e4m3fn)
        Ct = torch.zeros((m, n), dtype=torch.float32)
        best, first = time_call(lambda: reference(At, Bt, Ct), repeats)
        mismatches = _mismatches(D, reference(At, Bt, Ct).double().numpy())
        rows.append(Timing("MMA-Sim (PyTorch, CPU), the same unit", best, first, best / base,
                           note=f"{mismatches} of {m * n} entries differ from boundlab's"))
    else:
        rows.append(Timing("MMA-Sim (PyTorch, CPU), the same unit", float("nan"), float("nan"), None,
                           note="not installed: pip install torch mmasim"))
    model41 = Emulated("fp8_e4m3", unroll=0, kernel="xla")
    product = jax.jit(lambda x, y: model41._product(x, y, None))
    a32, b32 = model41.cast(A), model41.cast(B)
    best, first = time_call(lambda: product(a32, b32), repeats)
    rows.append(Timing("Model 4.1 e4m3, recursive (every product and partial sum rounded)", best, first,
                       best / base, note=note))
    plain = jax.jit(lambda x, y: jnp.matmul(x, y, precision=jax.lax.Precision.HIGHEST))
    a, b = jnp.asarray(A, jnp.float32), jnp.asarray(B, jnp.float32)
    best, first = time_call(lambda: plain(a, b), repeats)
    rows.append(Timing("plain float32 matmul (XLA)", best, first, best / base, note=note))
    return rows


def training_benchmark(recipes=("float64", "float32", "bf16-mixed", "bf16-autocast", "bf16-pure", "bf16-pure-kahan",
                                "fp16-mixed-scaled",
                                "fp8-gemms"), width: int = 16, layers: int = 2, batch: int = 64,
                       repeats: int = 3) -> list[Timing]:
    """One training step of ``boundlab train --recipes``'s classifier (Adam, a batch of digits)
    under each recipe (``boundlab.training.make_step``: forward, backward and update emulated),
    against the native float32 step (``jax.grad`` and optax's update, jitted) in the same process."""
    import optax

    from flax import nnx

    from boundlab.experiments.recipes import _programs, classifier_loss
    from boundlab.nn import SequenceClassifier
    from boundlab.training import get_recipe, init_state

    graphdef, params = nnx.split(SequenceClassifier(8, 8, 10, width, 2 * width, layers, rngs=nnx.Rngs(0)), nnx.Param)
    loss64 = classifier_loss(graphdef)
    optimizer = optax.adam(1e-3)
    rng = np.random.default_rng(0)
    batch_data = (jnp.asarray(rng.uniform(0, 1, (batch, 8, 8))), jnp.asarray(rng.integers(0, 10, batch), jnp.int32))
    model32 = SequenceClassifier(8, 8, 10, width, 2 * width, layers, rngs=nnx.Rngs(0), dtype=jnp.float32)
    graphdef32, params32 = nnx.split(model32, nnx.Param)
    loss_fn = classifier_loss(graphdef32)

    @jax.jit
    def native(params, opt_state, batch):
        grads = jax.grad(loss_fn)(params, batch)
        with jax.numpy_dtype_promotion("standard"):
            updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    images32 = (batch_data[0].astype(jnp.float32), batch_data[1])
    with jax.numpy_dtype_promotion("standard"):
        opt32 = optimizer.init(params32)
    base, base_first = time_call(lambda: native(params32, opt32, images32), repeats)
    note = f"d = {width}, L = {layers}, batch {batch}, Adam, on {jax.default_backend()}"
    rows = [Timing("native float32 step (jax.grad + optax, jit)", base, base_first, 1.0, note=note)]
    for name in recipes:
        step = _programs(graphdef, loss64, name, optimizer)[0]
        state = init_state(params, optimizer, name)
        key = jax.random.key(0) if get_recipe(name).update == "stochastic" else None
        best, first = time_call(lambda: step(state, batch_data, key=key)[1].loss, repeats)
        rows.append(Timing(f"recipe {name}", best, first, best / base, note=note))
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
    from boundlab.nn.encoder import encode_batch

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


def resident_bytes() -> int | None:
    """This process's resident memory now (Linux /proc; psutil elsewhere when installed)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        try:
            import psutil
        except ImportError:
            return None
        return psutil.Process().memory_info().rss


class _CompileCounter:
    """Counts JAX's tracing and backend-compile events (jax.monitoring) while active."""

    def __init__(self):
        self.traces = self.compiles = 0
        self.active = False
        jax.monitoring.register_event_duration_secs_listener(self._listen)

    def _listen(self, event, duration, **kwargs):
        if self.active:
            self.traces += event.endswith("jaxpr_trace_duration")
            self.compiles += event.endswith("backend_compile_duration")


def soak_benchmark(calls: int = 200, warm_up: int = 20, loop_steps: int = 20, seed: int = 0, every_column: bool = True,
                   formats=("bf16", "fp16"), shape=(4, 4, 4, 2)) -> list[Timing]:
    """Resident memory and retracing over long runs in one process (issue 26): ``analyze``
    called ``calls`` times on fresh random cases of one shape, and ``loop_steps`` training steps
    with the diagnostics inside one ``nnx.jit`` step.  ``ratio`` is the resident memory at the
    end over that after ``warm_up`` calls (goal: within 10 %); the note counts the traces and
    backend compilations after the warm-up (goal: none).  ``every_column``: analyze with its
    condition numbers and first-order bounds (the default, as a user calls it); ``shape``: (d, n,
    D, L) of the cases."""
    import optax
    from flax import nnx

    from boundlab.analysis import analyze
    from boundlab.experiments.training import load_digits_tokens
    from boundlab.nn import SequenceClassifier
    from boundlab.nn.monitoring import diagnostics
    from boundlab.transformer import init

    counter = _CompileCounter()
    rows = []
    start_all = time.perf_counter()

    def call(i):
        params, X = init(jax.random.key(seed + i), "figure4", **dict(zip("dnDL", shape)))
        return lambda: analyze(params, X, "fp16", "layer", conditions=every_column, first_order=every_column).to_json()

    times, warm, end = _soak(call, calls, warm_up, counter)
    note = (f"{calls} calls, (d, n, D, L) = {shape}, fp16{', every column' if every_column else ''}; resident {_mib(warm)} after {warm_up}, "
            f"{_mib(end)} at the end; after the warm-up {counter.traces} traces, {counter.compiles} compiles; "
            f"{time.perf_counter() - start_all:.0f} s in all")
    rows.append(Timing(f"analyze x {calls}, fresh cases", float(np.median(times[warm_up:])), times[0],
                       None if not warm or end is None else end / warm, note=note, goal_ratio=1.1))

    (train_x, train_y), (test_x, _) = load_digits_tokens(seed)
    model = SequenceClassifier(8, 8, 10, 16, 32, 2, rngs=nnx.Rngs(seed))
    optimizer = nnx.Optimizer(model, optax.sgd(1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, images, labels, held_out):
        def loss(m):
            return optax.softmax_cross_entropy_with_integer_labels(m(images), labels).mean()

        value, grads = nnx.value_and_grad(loss)(model)
        optimizer.update(model, grads)
        return value, diagnostics(model.transformer, model.tokens(held_out), formats=tuple(formats))

    held_out = jnp.asarray(test_x[:16])

    def train_step(i):
        images = jnp.asarray(train_x[(32 * i) % 1024:(32 * i) % 1024 + 32])
        labels = jnp.asarray(train_y[(32 * i) % 1024:(32 * i) % 1024 + 32])
        return lambda: step(model, optimizer, images, labels, held_out)

    times, warm, end = _soak(train_step, loop_steps, 2, counter)
    note = (f"{loop_steps} steps of an nnx.jit step (sgd + diagnostics in {', '.join(formats)}, 16 held-out inputs); "
            f"resident {_mib(warm)} after 2 steps, {_mib(end)} at the end; after them {counter.traces} traces, "
            f"{counter.compiles} compiles")
    rows.append(Timing(f"nnx.jit step with diagnostics x {loop_steps}", float(np.median(times[2:])), times[0],
                       None if not warm or end is None else end / warm, note=note, goal_ratio=1.1))
    return rows


def _soak(make_call, count: int, warm_up: int, counter: _CompileCounter):
    """Run ``make_call(i)()`` for i < count, timing each call (not its setup); returns the times
    and the resident memory after ``warm_up`` calls and at the end; ``counter`` counts the
    traces and compilations after the warm-up only."""
    times, warm = [], None
    counter.traces = counter.compiles = 0
    for i in range(count):
        call = make_call(i)
        start = time.perf_counter()
        jax.block_until_ready(call())
        times.append(time.perf_counter() - start)
        if i + 1 == warm_up:
            warm = resident_bytes()
            counter.active = True
    end = resident_bytes()
    counter.active = False
    return times, warm, end


def _mib(value) -> str:
    return "n/a" if value is None else f"{value / 2**20:.0f} MiB"

