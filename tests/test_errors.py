"""Relative errors with the paper's conventions (Section 3.1)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from boundlab.errors import relative_componentwise, relative_normwise


def test_componentwise_conventions():
    exact = jnp.array([2.0, 0.0, -4.0])
    assert float(relative_componentwise(jnp.array([2.0, 0.0, -4.0]), exact)) == 0.0
    assert float(relative_componentwise(jnp.array([3.0, 0.0, -4.0]), exact)) == 0.5
    assert float(relative_componentwise(jnp.array([2.0, 1e-300, -4.0]), exact)) == np.inf
    assert np.isnan(float(relative_componentwise(jnp.array([np.nan, 0.0, -4.0]), exact)))


def test_componentwise_axis_and_vmap():
    approx = jnp.array([[1.0, 2.0], [3.0, 4.5]])
    exact = jnp.array([[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_array_equal(np.asarray(relative_componentwise(approx, exact, axis=0)), [0.0, 0.125])
    batched = jax.vmap(relative_componentwise)(approx, exact)
    np.testing.assert_array_equal(np.asarray(batched), [0.0, 0.125])


def test_normwise():
    exact = jnp.array([3.0, 4.0])
    assert float(relative_normwise(jnp.array([3.0, 5.0]), exact)) == pytest.approx(0.2)
    assert float(relative_normwise(jnp.array([3.0, 5.0]), exact, ord=jnp.inf)) == 0.25
    assert float(relative_normwise(jnp.zeros(2), jnp.zeros(2))) == 0.0
    assert float(relative_normwise(jnp.ones(2), jnp.zeros(2))) == np.inf
    with pytest.raises(ValueError, match="shapes differ"):
        relative_normwise(jnp.ones(2), jnp.ones(3))


def test_nan_propagates_under_jit_even_when_every_entry_is_nan():
    """XLA:CPU's max reduction can drop NaN (an all-NaN layer once came out as -inf)."""
    exact = jnp.ones((4, 5))
    for approx in (jnp.full((4, 5), jnp.nan), exact.at[2, 3].set(jnp.nan)):
        assert np.isnan(float(jax.jit(relative_componentwise)(approx, exact)))
        assert np.isnan(float(jax.jit(relative_normwise)(approx, exact)))
    per_column = jax.jit(lambda a, e: relative_componentwise(a, e, axis=0))(exact.at[:, 1].set(jnp.nan), exact)
    assert np.isnan(np.asarray(per_column)[1]) and np.all(np.asarray(per_column)[[0, 2, 3, 4]] == 0)
