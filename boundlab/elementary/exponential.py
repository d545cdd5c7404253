"""exp correctly rounded in every mode.

Model 4.1 rounds the exact exp(x) once.  The container's ``jnp.exp`` has an error of about one
ulp of the container, so rounding its result to t bits is wrong whenever the exact value and
the container value lie on different sides of a rounding boundary (a midpoint for round to
nearest, a format number for the directed and stochastic modes).  ``exp`` therefore

1. evaluates exp in the widest float available: float64 when x64 is on (also for a float32
   container), else the container;
2. flags the elements whose value lies within ``boundary.MARGIN_ULPS`` ulps of a rounding
   boundary (rounding the two ends of that interval gives two different results);
3. recomputes the flagged ones in double-word arithmetic (``double_word.double_word_exp``: about
   2p - 6 bits, ~100 from float64, ~42 from float32), makes hi "round to odd" with the sign of lo
   as the sticky bit, and rounds that: correct whenever the exact value is farther from the
   boundary than the double-word error.

exp(x) is transcendental for every nonzero floating-point x (Lindemann), so it never equals a
boundary; for inputs that are t-bit format numbers its distance to one is about 2^-(2t + 11)
relative in the worst case, far above the double-word error for every format boundlab emulates
(t <= 25 in float64; t <= 11 in float32, where the tests check every finite fp16, bf16 and fp8
argument against MPFR).  Without x64 a float32 container uses float-float pairs (~2^-42).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from boundlab.elementary import boundary
from boundlab.elementary.double_word import PRECISION, double_word_exp, nudge, sticky
from boundlab.formats import Format
from boundlab.rounding import round_bits
from boundlab.runtime.x64 import x64_enabled


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def exp(x, fmt: Format, mode: str, random_bits=None):
    """fl(exp(x)) correctly rounded to ``fmt`` in ``mode`` (see the module docstring), held in
    x's dtype.  ``random_bits`` as for ``round_bits`` (stochastic mode: drawn for x's dtype).
    A format as wide as the container (t > p - 2, float64 itself) gets the container's exp, the
    one ``Exact()`` uses.  Derivative exp(x) (straight-through, as ``round_to``).

    Under ``vmap`` the whole batch is one elementwise call, so the double-word path runs only when
    some element of the batch is near a boundary (a batched ``lax.cond`` would run it always)."""
    if random_bits is None:
        return _batched(fmt, mode, False)(x)
    return _batched(fmt, mode, True)(x, random_bits)


@functools.lru_cache(maxsize=None)
def _batched(fmt: Format, mode: str, with_bits: bool):
    """The elementwise exp as a ``custom_vmap`` whose batching rule is: the same function on the
    batched array."""

    @jax.custom_batching.custom_vmap
    def elementwise(*operands):
        return _exp(operands[0], fmt, mode, operands[1] if with_bits else None)

    @elementwise.def_vmap
    def batched(axis_size, in_batched, *operands):
        operands = [v if b else jnp.broadcast_to(v, (axis_size,) + v.shape) for v, b in zip(operands, in_batched)]
        return elementwise(*operands), True

    return elementwise


def _exp(x, fmt: Format, mode: str, random_bits):
    container = x.dtype
    wide = jnp.float64 if x64_enabled() else container
    if fmt.precision > PRECISION[np.dtype(wide)] - 2:
        return round_bits(jnp.exp(x), fmt, mode, random_bits)
    xw = x.astype(wide)
    y = jnp.exp(xw)
    tiny = fmt.min_subnormal / 4  # below half the smallest format number: no boundary nearby
    finfo = np.finfo(np.dtype(wide))
    if tiny >= float(finfo.tiny):  # exp underflowed: the exact value is positive, not zero
        y = jnp.where((y == 0) & jnp.isfinite(xw), jnp.asarray(tiny, wide), y)
    # exp overflowed the wide float: the exact value is finite (toward zero it rounds to the
    # largest format number); the largest float lies beyond every format's overflow threshold
    y = jnp.where(jnp.isinf(y) & jnp.isfinite(xw), jnp.asarray(finfo.max, wide), y)
    checkable = jnp.isfinite(y) & (y >= finfo.tiny) & (y < finfo.max / 2)
    probe = "zero" if mode == "stochastic" else mode  # boundaries of stochastic: format numbers
    safe_y = jnp.where(checkable, y, 1)
    near = checkable & (round_bits(nudge(safe_y, -boundary.MARGIN_ULPS), fmt, probe)
                        != round_bits(nudge(safe_y, boundary.MARGIN_ULPS), fmt, probe))

    def resolve(values):
        hi, lo = double_word_exp(jnp.where(near, xw, 0))
        return jnp.where(near, sticky(hi, lo), values)

    y = lax.cond(jnp.any(near), resolve, lambda values: values, y)
    return boundary.round_wide(y, fmt, mode, random_bits, container)


@exp.defjvp
def _exp_jvp(fmt, mode, primals, tangents):
    x, random_bits = primals
    x_dot, _ = tangents
    return exp(x, fmt, mode, random_bits), jnp.exp(x) * x_dot
