"""Test configuration: float64 on, strict dtype promotion, hypothesis profiles, one persistent
XLA compilation cache shared by every process of a test run, and less XLA optimisation work in
the modules whose claims do not depend on it."""

import os
import shutil
import tempfile

# One persistent compilation cache for the whole run: the xdist workers and every subprocess the
# tests start (CLI runs, README blocks, notebooks, the 4-device sweep) inherit this environment,
# so a program compiled once is loaded, not compiled again, by the next process that builds the
# same HLO with the same options and XLA flags (JAX's cache key covers all three). Set before
# JAX is imported, since JAX reads these variables when it defines its flags. A cache the user
# points at (JAX_COMPILATION_CACHE_DIR already set) is used as it is and left in place.
if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="boundlab-test-xla-cache-")
    os.environ["BOUNDLAB_TEST_CACHE_OWNER"] = str(os.getpid())
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import jax  # noqa: E402
import pytest
from hypothesis import settings

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")

settings.register_profile("ci", deadline=None, max_examples=50, derandomize=True)
settings.register_profile("thorough", deadline=None, max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# Compilation is most of the suite's time (about 60 % of it is XLA's backend compile of programs
# run once). Modules and tests marked ``fast_compile`` (``pytestmark`` at a module's top) check
# inequalities, tolerances from u, files and tables, never the bits of a plain float64 program, so
# they compile with jax_disable_most_optimizations (LLVM backend level 0: about 30 % less time).
# Everything else -- rounding against MPFR, emulation bit for bit, t = 53 equal to float64, the
# kernels, finite differences -- runs with XLA's default optimisation, which is what users get: at
# level 0 XLA:CPU contracts products into FMAs in other places, so a plain float64 program can
# differ in its last bits (tests/test_emulation.py's t53 check and the double-word exp's MPFR
# check then fail, as they should). The in-memory caches are cleared when a worker moves between
# the two kinds, so no test runs a program compiled for the other kind; the persistent cache keys
# each program by its options, so both kinds stay cached. A marked test in a bit-for-bit module
# uses no module-scoped fixture, which would then be computed with its effort.
@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Set the test's compilation effort before any of its fixtures (module-scoped ones included)."""
    fast = item.get_closest_marker("fast_compile") is not None
    if jax.config.read("jax_disable_most_optimizations") != fast:
        jax.clear_caches()
        jax.config.update("jax_disable_most_optimizations", fast)


def pytest_collection_modifyitems(config, items):
    """The tests marked ``long`` (a minute or two each: the CLI studies, the notebooks, the README)
    run first: xdist's work stealing hands each worker a contiguous half of the run in this order
    and lets an idle worker take the tail of the other's queue, which evens out short tests, never a
    long one that starts last. Then the ``fast_compile`` tests, then the others: a worker that moves
    between the two kinds clears JAX's in-memory caches (``pytest_runtest_setup``), so each kind is
    kept together and shared programs are traced and compiled once per worker and kind rather than
    once per module boundary. The order is otherwise the collection order (stable), so a module's
    tests of one kind stay together (a marked test in an unmarked module uses no module-scoped
    fixture, see above)."""
    items[:] = sorted(items, key=lambda item: (item.get_closest_marker("long") is None,
                                               item.get_closest_marker("fast_compile") is None))


def pytest_unconfigure(config):
    """Remove the run's compilation cache in the process that made it."""
    if os.environ.get("BOUNDLAB_TEST_CACHE_OWNER") == str(os.getpid()):
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


@pytest.fixture
def x64_off():
    """Run a test with jax_enable_x64 switched off, restoring it afterwards."""
    jax.config.update("jax_enable_x64", False)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", True)


# Where a test's time goes: BOUNDLAB_TEST_COMPILE_PROFILE=FILE appends one JSON line per test with
# its wall time, JAX's tracing, lowering and XLA compile time, and its slowest compilations.
_PROFILE = os.environ.get("BOUNDLAB_TEST_COMPILE_PROFILE")
if _PROFILE:
    import json
    import time
    from collections import Counter

    from jax._src import compiler as _compiler
    from jax._src.lib.mlir import ir as _ir

    _spent, _programs = Counter(), []
    _original_compile = _compiler.compile_or_get_cached

    def _listener(event, duration, **kwargs):
        _spent[event.rsplit("/", 1)[-1]] += duration

    def _timed_compile(backend, computation, *args, **kwargs):
        name = _ir.StringAttr(computation.operation.attributes["sym_name"]).value
        start = time.perf_counter()
        result = _original_compile(backend, computation, *args, **kwargs)
        _programs.append((name, round(time.perf_counter() - start, 3)))
        return result

    jax.monitoring.register_event_duration_secs_listener(_listener)
    _compiler.compile_or_get_cached = _timed_compile  # looked up on the module at every compile

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(item):
        _spent.clear()
        _programs.clear()
        start = time.perf_counter()
        yield
        record = {"test": item.nodeid, "total": time.perf_counter() - start, **_spent,
                  "programs": sorted(_programs, key=lambda p: -p[1])[:8], "n_programs": len(_programs)}
        with open(_PROFILE, "a") as handle:
            handle.write(json.dumps(record) + "\n")
