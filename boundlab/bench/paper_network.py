"""The paper's network: emulated forwards, stochastic rounding, Theorem 4.30, Figure 1's sweep and
``analyze``, each against the plain float64 forward of the same run."""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp

from boundlab.formats import get_format
from boundlab.bench.timing import Timing, time_call


def forward_benchmark(batch: int = 5000, d: int = 20, n: int = 20, D: int = 20, L: int = 40, fmt: str = "t10",
                      repeats: int = 2, seed: int = 0) -> list[Timing]:
    """A jitted, vmapped forward of ``batch`` figure1 initialisations under Exact and Emulated.

    The rows are Exact() (XLA's float64 dot products), Emulated(fmt) with recursive
    accumulation (every product and every partial sum rounded, the paper's Model 4.1 and
    Lemma 4.3) and Emulated(fmt) with blocked accumulation; ratios are to the exact forward.
    """
    from boundlab.arithmetic import Emulated, Exact
    from boundlab.models.paper import forward, init

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
    from boundlab.models.paper import forward, init

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
    from boundlab.models.paper import forward, init

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
    from boundlab.models.paper import forward, init

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
    goal = 30.0 if (inits, L, len(precisions)) == (5000, 40, 4) else None  # the speed goal, at full size
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
    from boundlab.models.paper import forward, init

    params, X = init(jax.random.key(seed), "figure1", d=d, n=d, D=d, L=L)
    emulated = jax.jit(lambda p, x: forward(p, x, Emulated(fmt, unroll=0)))
    base, base_first = time_call(lambda: emulated(params, X), repeats)
    note = f"d = n = D = {d}, L = {L}, {fmt}; first call includes compilation"
    rows = [Timing(f"emulated forward ({fmt})", base, base_first, 1.0, note=note)]
    best, first = time_call(lambda: analyze(params, X, fmt, conditions=conditions).raw, repeats)
    name = "analyze" + (" (with condition numbers)" if conditions else " (bounds and errors)")
    rows.append(Timing(name, best, first, best / base, note=note))
    return rows
