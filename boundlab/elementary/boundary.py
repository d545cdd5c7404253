"""Rounding an elementary function's wide value correctly: find the few values near a rounding
boundary, put them on the side of the boundary where the exact value lies, round.

Model 4.1 rounds the exact f(x) once.  The wide float (float64 with x64, else the container)
holds f(x) to a few ulps, so rounding it is the correct rounding except where the exact value and
the wide value lie on different sides of a boundary: a midpoint of two format numbers for round to
nearest, a format number for the directed modes and stochastic rounding (whose two candidates are
the format numbers around the exact value).  Such values are within ``MARGIN_ULPS`` wide ulps of
the boundary b, where rounding the two ends of the margin disagrees (``near_boundary``); for them
a function's rule (``boundlab.elementary.functions``) says on which side of b the exact value lies
(-1, 0 for exactly b, +1; NaN where the rule cannot tell), and ``place`` moves the wide value to
b itself or one wide ulp past it on that side, which every mode then rounds as it would round the
exact value.

Saturation is the common case, not the rare one: tanh(-30) is -1 + 2e-26, whose float64 value is
-1 exactly, a format number, so rounding it up gave -1, below the exact value.  Values that are
exactly a boundary (cos(0) = 1, exp2(3) = 8) are near too, and the rule says 0.

The margin test needs the boundaries to be far apart compared to the margin: formats of at most
p - 4 - log2(margin) bits (``refinable``: 46 in float64 and 17 in float32 at 8 ulps); wider formats
get the wide value rounded.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import lax

from boundlab.elementary.double_word import PRECISION, sticky
from boundlab.formats import Format
from boundlab.rounding import round_bits

MARGIN_ULPS = 8  # the wide function is trusted to this many ulps (XLA's float64 ones are within 1-4)


def refinable(fmt: Format, wide, margin_ulps: float | None = None) -> bool:
    """The boundaries of ``fmt`` (2^-t apart, relatively) are far apart compared with the margin
    (``margin_ulps`` 2^(1-p)): t <= p - 4 - log2(margin)."""
    margin = MARGIN_ULPS if margin_ulps is None else margin_ulps
    return fmt.precision <= PRECISION[np.dtype(wide)] - 4 - int(np.ceil(np.log2(margin)))


def near_boundary(y, fmt: Format, mode: str, margin_ulps: float | None = None):
    """(near, b): the wide values ``y`` within ``margin_ulps`` ulps of a rounding boundary b of
    ``fmt`` in ``mode`` (midpoints for "nearest"; format numbers otherwise), and that boundary.
    Zero is near (a boundary of the directed modes): an exact zero, or an underflow whose sign the
    rule gives.  Boundaries are symmetric in the sign, so the test runs on |y|."""
    margin = MARGIN_ULPS if margin_ulps is None else margin_ulps
    finfo = np.finfo(np.dtype(y.dtype))
    magnitude = jnp.abs(y)
    width = magnitude * (margin * float(finfo.eps))
    lo, hi = magnitude - width, magnitude + width
    if mode == "nearest":
        below = round_bits(lo, fmt, "down")  # the format number at or below the margin
        after = round_bits(jnp.nextafter(below, jnp.asarray(np.inf, y.dtype)), fmt, "up")
        top_ulp = 2.0 ** (fmt.emax - fmt.precision + 1)
        # past the largest finite number, the boundary is the overflow threshold max + ulp / 2
        b = jnp.where(jnp.isinf(after) & jnp.isfinite(below), below + top_ulp / 2, (below + after) / 2)
    else:
        b = round_bits(lo, fmt, "up")  # the format number at or above the margin's lower end
    checkable = jnp.isfinite(y) & ((magnitude >= finfo.tiny) | (y == 0))
    near = checkable & jnp.isfinite(b) & (lo <= b) & (b <= hi)
    return near, jnp.where(jnp.signbit(y), -b, b)


def place(y, near, b, side):
    """The wide value moved to the side ``side`` (-1, 0, +1) of the boundary ``b`` where ``near``
    and the rule could tell (NaN: it could not; the wide value stays)."""
    on = jnp.where(y == b, y, b)  # y == b keeps y's sign of zero
    past = jnp.nextafter(b, jnp.where(side > 0, jnp.asarray(np.inf, y.dtype), jnp.asarray(-np.inf, y.dtype)))
    moved = jnp.where(side == 0, on, past)
    return jnp.where(near & ~jnp.isnan(side), moved, y)


def round_wide(y, fmt: Format, mode: str, random_bits, container):
    """The wide value ``y`` (already on the exact value's side of every boundary) rounded to
    ``fmt`` and held in ``container``; stochastic rounding draws the container's random bits, so
    y is narrowed first keeping its side of every format number (round to odd)."""
    if y.dtype == container:
        return round_bits(y, fmt, mode, random_bits)
    if mode != "stochastic":  # rounded in the wide dtype; the format number fits the container
        return round_bits(y, fmt, mode).astype(container)
    narrow = y.astype(container)
    return round_bits(sticky(narrow, y - narrow.astype(y.dtype)), fmt, mode, random_bits)


def resolve(y, fmt: Format, mode: str, side_rule, margin_ulps=None):
    """``y`` with its near values placed by ``side_rule(b)`` (which returns the side of each
    element's exact value against ``b``); the rule runs only when some value is near."""
    if not refinable(fmt, y.dtype, margin_ulps):
        return y
    near, b = near_boundary(y, fmt, "nearest" if mode == "nearest" else "up", margin_ulps)
    return lax.cond(jnp.any(near), lambda v: place(v, near, b, side_rule(b)), lambda v: v, y)
