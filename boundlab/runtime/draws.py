"""Random draws that compile once per size class, not once per shape.

``jax.random.normal(key, shape)`` called outside ``jit`` compiles a program per shape (about a
quarter of a second on a CPU core: threefry's rounds and the inverse error function), so
initialising networks of many sizes spends most of its time compiling.  With
``jax_threefry_partitionable`` (JAX's default since 0.5) an entry's bits depend only on the key
and the entry's flat index, so the first ``prod(shape)`` entries of a flat draw of any larger
length, reshaped, are the values of the draw at ``shape``, bit for bit
(``tests/test_random.py`` checks it for every dtype it is used with).  ``normal`` and
``uniform`` draw eagerly at the next power of two (at least 64) and cut on the host; inside a
trace (``jit``, ``vmap``, ``grad``), for large or empty shapes, other dtypes, or the
non-partitionable generator they are ``jax.random``'s own calls.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

_LARGEST = 1 << 20  # beyond this a draw's compilation is small beside its run: drawn at its shape
_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.float64))


def _bucket(key, shape, dtype):
    """The flat length to draw at, or None where the draw must be made at ``shape`` itself."""
    size = math.prod(shape)
    if (isinstance(key, jax.core.Tracer) or not 0 < size <= _LARGEST or jnp.dtype(dtype) not in _DTYPES
            or not jax.config.jax_threefry_partitionable):
        return None
    return max(64, 1 << (size - 1).bit_length())


def _cut(flat, shape):
    """The first prod(shape) entries of the eager array ``flat``, reshaped, placed as ``flat``
    is: committed to its device if it is, else uncommitted on the default device (as an eager
    draw is; a committed array would give a jitted function that mixes it with uncommitted ones
    a second compilation once its outputs, committed, come back)."""
    part = np.asarray(flat)[:math.prod(shape)].reshape(shape)
    return jax.device_put(part, flat.sharding) if flat.committed else jax.device_put(part)


def _draw(sample, key, shape, dtype, bucketable: bool = True):
    """``sample(key, shape, dtype)`` (a draw of jax.random), bucketed where it can be."""
    shape = tuple(shape)
    dtype = jax.dtypes.canonicalize_dtype(dtype if dtype is not None else float)
    length = _bucket(key, shape, dtype) if bucketable else None
    if length is None:
        return sample(key, shape, dtype)
    return _cut(sample(key, (length,), dtype), shape)


def normal(key, shape, dtype=None):
    """``jax.random.normal(key, shape, dtype)``, bit for bit (see the module docstring)."""
    return _draw(jax.random.normal, key, shape, dtype)


def uniform(key, shape, dtype=None, minval=0.0, maxval=1.0):
    """``jax.random.uniform(key, shape, dtype, minval, maxval)``, bit for bit (see the module
    docstring); bucketed for Python-number bounds only."""
    return _draw(lambda k, s, d: jax.random.uniform(k, s, d, minval, maxval), key, shape, dtype,
                 bucketable=all(isinstance(v, (int, float)) for v in (minval, maxval)))
