"""Test configuration: float64 on, strict dtype promotion, hypothesis profiles."""

import atexit
import os
import shutil
import tempfile

import jax
import pytest
from hypothesis import settings

# One persistent compilation cache for the whole run: the first process that loads this file (the
# xdist controller, or the only process) makes it, and the workers, the CLI runs, the README
# examples and the notebooks it starts inherit it through the environment, so a program that
# several of them compile (analyze on the README case, a quick figure) is compiled once.  Keyed by
# the program, the XLA flags and the jaxlib version, so it cannot change a result.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="boundlab-test-jax-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.3")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs",
                  float(os.environ.get("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.3")))
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")

settings.register_profile("ci", deadline=None, max_examples=50, derandomize=True)
settings.register_profile("thorough", deadline=None, max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def x64_off():
    """Run a test with jax_enable_x64 switched off, restoring it afterwards."""
    jax.config.update("jax_enable_x64", False)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", True)
