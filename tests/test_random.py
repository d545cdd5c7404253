"""boundlab.runtime.draws: draws cut from a bucketed flat draw are jax.random's draws, bit for bit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from boundlab.runtime import draws

SHAPES = [(1,), (4, 6), (3, 5, 7), (65,)]  # one entry, matrices, a stack, just past a bucket


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_normal_and_uniform_are_jax_randoms_draws_bit_for_bit(dtype):
    for i, shape in enumerate(SHAPES):
        key = jax.random.key(i)
        want = np.asarray(jax.random.normal(key, shape, dtype))
        got = draws.normal(key, shape, dtype)
        assert got.shape == shape and got.dtype == jnp.dtype(dtype)
        assert np.array_equal(np.asarray(got), want), shape
        want = np.asarray(jax.random.uniform(key, shape, dtype, 0.25, 4.0))
        assert np.array_equal(np.asarray(draws.uniform(key, shape, dtype, 0.25, 4.0)), want), shape
    # a legacy uint32 key, the default dtype
    legacy = jax.random.PRNGKey(7)
    assert np.array_equal(np.asarray(draws.normal(legacy, (3, 3))), np.asarray(jax.random.normal(legacy, (3, 3))))


def test_one_compiled_draw_serves_every_shape_of_a_bucket():
    jax_random = pytest.importorskip("jax._src.random.core", reason="jax.random's jitted draw moved")
    if not hasattr(jax_random, "_normal"):
        pytest.skip("jax.random's jitted draw moved")

    key = jax.random.key(0)
    draws.normal(key, (3, 4), jnp.float64)  # the bucket of 64
    before = jax_random._normal._cache_size()
    for shape in [(2, 5), (7, 9), (4, 4, 4)]:
        draws.normal(key, shape, jnp.float64)
    assert jax_random._normal._cache_size() == before
    jax.random.normal(key, (2, 5), jnp.float64)  # and jax.random's own call compiles per shape
    assert jax_random._normal._cache_size() == before + 1


def test_traced_large_and_other_draws_are_jax_randoms_own():
    key = jax.random.key(3)
    # inside jit and vmap the key is a tracer: jax.random's call, the same values
    traced = jax.jit(lambda k: draws.normal(k, (4, 5), jnp.float64))(key)
    assert np.array_equal(np.asarray(traced), np.asarray(jax.random.normal(key, (4, 5), jnp.float64)))
    keys = jax.random.split(key, 3)
    mapped = jax.vmap(lambda k: draws.uniform(k, (2, 3), jnp.float32, -1.0, 1.0))(keys)
    assert np.array_equal(np.asarray(mapped), np.asarray(jax.vmap(
        lambda k: jax.random.uniform(k, (2, 3), jnp.float32, -1.0, 1.0))(keys)))
    # no bucket: empty, bfloat16, array bounds
    assert draws.normal(key, (0, 3), jnp.float64).shape == (0, 3)
    assert np.array_equal(np.asarray(draws.normal(key, (3,), jnp.bfloat16), np.float32),
                          np.asarray(jax.random.normal(key, (3,), jnp.bfloat16), np.float32))
    low = jnp.asarray(0.5)
    assert np.array_equal(np.asarray(draws.uniform(key, (3,), jnp.float64, low, 2.0)),
                          np.asarray(jax.random.uniform(key, (3,), jnp.float64, low, 2.0)))


def test_the_non_partitionable_generator_draws_at_the_shape():
    # its bits depend on the whole shape, so a cut flat draw would differ: not bucketed
    key = jax.random.key(5)
    with jax.threefry_partitionable(False):
        assert draws._bucket(key, (4, 5), jnp.float64) is None
        assert np.array_equal(np.asarray(draws.normal(key, (4, 5), jnp.float64)),
                              np.asarray(jax.random.normal(key, (4, 5), jnp.float64)))
    assert draws._bucket(key, (4, 5), jnp.float64) == 64
    assert draws._bucket(key, (1 << 21,), jnp.float64) is None


def test_draws_are_placed_and_committed_as_jax_randoms_are():
    # an uncommitted draw stays uncommitted: a committed one would make a jitted training step
    # that mixes it with uncommitted arrays compile twice (once more when its outputs come back)
    key = jax.random.key(2)
    for k in (key, jax.device_put(key, jax.devices()[-1])):
        ours, theirs = draws.normal(k, (3, 4), jnp.float64), jax.random.normal(k, (3, 4), jnp.float64)
        assert ours.committed == theirs.committed and ours.sharding == theirs.sharding
