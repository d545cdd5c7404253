"""Test configuration: float64 on, strict dtype promotion, hypothesis profiles, and one
persistent XLA compilation cache shared by every process of a test run."""

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
