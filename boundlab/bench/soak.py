"""Many calls in one process: memory and compilations stay flat (no retracing, no leaks)."""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from boundlab.bench.timing import Timing


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
    """Resident memory and retracing over long runs in one process: ``analyze``
    called ``calls`` times on fresh random cases of one shape, and ``loop_steps`` training steps
    with the diagnostics inside one ``nnx.jit`` step.  ``ratio`` is the resident memory at the
    end over that after ``warm_up`` calls (goal: within 10 %); the note counts the traces and
    backend compilations after the warm-up (goal: none).  ``every_column``: analyze with its
    condition numbers and first-order bounds (the default, as a user calls it); ``shape``: (d, n,
    D, L) of the cases."""
    import optax
    from flax import nnx

    from boundlab.analysis import analyze
    from boundlab.experiments.training_study import load_digits_tokens
    from boundlab.models import SequenceClassifier
    from boundlab.analysis.monitoring import diagnostics
    from boundlab.models.paper import init

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
