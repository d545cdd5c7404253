"""Rounding sites as taps: an exact (float64) policy that marks every rounding of Model 4.1.

``TapPolicy(arithmetic, channel)`` evaluates the operations of one site exactly, in the
arithmetic's own order (products, partial sums, block sums, the wider accumulator's roundings
all where ``arithmetic`` would round), and passes each value v that the arithmetic would round
through ``tap``: the identity in the forward pass, whose reverse pass, given the cotangent g
(the sensitivity of a chosen output to v), writes into the site's channel

* ``z``: |g| e, with e = u_eff |v| the local bound of Model 4.1 (|fl(v) - v| <= u_eff |v|;
  u_eff = u to nearest, 2u = one ulp for the directed and stochastic modes);
* ``w``: (g e)^2, for the probabilistic bound;
* ``q``: the site's flags: [same-sign sum, underflow, overflow], the first two independent of g,
  the third raised only where a value beyond the format's range has g != 0.

A rounding whose sensitivity is exactly zero (g = 0: a masked score, a discarded branch)
contributes zero, whatever its value: an overflowed value there (e = inf) would otherwise make the
bound 0 * inf = NaN although the output does not depend on it.  An overflowed value with g != 0
is outside Model 4.1: the site's overflow flag is raised (its contribution |g| u |v| is then no
bound; infinite where v is).

The cotangent of a channel input is therefore the site's first-order contribution: summed over
the channel, sum_i |dy/dv_i| e_i over the site's roundings (over every iteration inside a loop).
The local bounds e are differentiable functions of the values (no ``stop_gradient``), so the
bound itself can be differentiated with respect to the weights and inputs (``jax.grad`` of a
penalty differentiates through both |dy/dv| and e).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from boundlab.arithmetic import Policy
from boundlab.emulation.interpreter import Handler

FLAGS = ("same-sign sum", "underflow", "overflow")


def effective_unit_roundoff(fmt, mode: str) -> float:
    """u for round to nearest; one ulp (2u) for the directed and stochastic modes."""
    return fmt.unit_roundoff * (1.0 if mode == "nearest" else 2.0)


def _fit(values, shape):
    """Per-rounding values summed onto a channel of ``shape`` (the site's result shape): equal
    shapes, the same entries reshaped (contractions with several free dimensions), or stacked
    copies on leading axes (the levels of a vectorised pairwise sum)."""
    if values.shape == shape:
        return values
    size = math.prod(shape)
    if values.size == size:
        return values.reshape(shape)
    if size and values.size % size == 0:
        return values.reshape((-1,) + shape).sum(axis=0)
    return jnp.broadcast_to(jnp.sum(values) / max(size, 1), shape)  # no entrywise match: spread evenly


def _reported_flags(flags, huge, matters, dtype):
    """[same-sign sum, underflow, overflow where it matters] from the forward pass's [same-sign sum,
    underflow] and the entries beyond the range (see the module docstring)."""
    overflow = jnp.any(huge & matters).astype(flags.dtype)
    return jnp.concatenate([flags, overflow[None]]).astype(dtype)


@jax.custom_vjp
def tap(x, e, flags, huge, z, w, q):
    """The identity on x; its reverse pass reports |g| e, (g e)^2 (zero where g = 0) and the flags
    (``huge``: the entries beyond the format's range; see above)."""
    return x


def _tap_fwd(x, e, flags, huge, z, w, q):
    return x, (e, flags, huge, jnp.zeros_like(z), jnp.zeros_like(w), jnp.zeros_like(q))


def _finite(e):
    """e with inf replaced by the largest float64 (no select): |g| e is then 0 where g = 0, and
    where g != 0 as large as float64 goes (inf for |g| >= 1), the site's overflow flag raised."""
    return jnp.minimum(e, jnp.finfo(jnp.float64).max)


def _tap_bwd(residuals, g):
    e, flags, huge, z, w, q = residuals
    contribution = jnp.abs(g) * _finite(e)
    return (g, None, None, None, _fit(contribution, z.shape), _fit(contribution * contribution, w.shape),
            _reported_flags(flags, huge, g != 0, q.dtype))


tap.defvjp(_tap_fwd, _tap_bwd)


@jax.custom_vjp
def tap_sum(x, e, e2, flags, huge, z, w, q):
    """The identity on x standing for many roundings whose sensitivity is that of x (the
    products and partial sums of a recursive sum: d x / d s_j = 1): its reverse pass reports
    |g| e with e = sum_i e_i and g^2 e2 with e2 = sum_i e_i^2 (zero where g = 0)."""
    return x


def _tap_sum_fwd(x, e, e2, flags, huge, z, w, q):
    return x, (e, e2, flags, huge, jnp.zeros_like(z), jnp.zeros_like(w), jnp.zeros_like(q))


def _tap_sum_bwd(residuals, g):
    e, e2, flags, huge, z, w, q = residuals
    return (g, None, None, None, None, _fit(jnp.abs(g) * _finite(e), z.shape), _fit(g * g * _finite(e2), w.shape),
            _reported_flags(flags, huge, g != 0, q.dtype))


tap_sum.defvjp(_tap_sum_fwd, _tap_sum_bwd)


@jax.custom_jvp
def _recursive_total(terms):
    """sum_j terms[j] added in the order j = 1, 2, ..., k (the last partial sum: the loop's value in
    float64, bit for bit), with the derivative of the sum (its tangent sum_j dterms[j], whose
    transpose is a broadcast, where cumsum's is a reversed cumulative sum over every cotangent)."""
    return jnp.cumsum(terms, axis=0)[-1]


@_recursive_total.defjvp
def _recursive_total_jvp(primals, tangents):
    (terms,), (dterms,) = primals, tangents
    return _recursive_total(terms), jnp.sum(dterms, axis=0)


class TapPolicy(Policy):
    """The arithmetic's order of operations, evaluated in float64, every rounding a tap."""

    unroll = 0  # loops, not unrolled sums: the reverse pass is then cheap to compile

    def __init__(self, arithmetic, channel, lumped: bool = False):
        self.base = arithmetic
        self.lumped = lumped
        self.fmt, self.mode = arithmetic.fmt, arithmetic.mode
        self.accumulation = "recursive" if arithmetic.accumulation == "native" else arithmetic.accumulation
        self.block_size, self.accumulator = arithmetic.block_size, arithmetic.accumulator
        self.channel = channel
        self.same_sign = jnp.zeros((), jnp.float64)

    @property
    def dtype(self):
        return jnp.dtype(jnp.float64)

    def cast(self, x):
        return jnp.asarray(self.base.cast(x), jnp.float64)

    def _round_to(self, x, fmt, key):
        x = jnp.asarray(x, jnp.float64)
        return self._tap(x, effective_unit_roundoff(fmt, self.mode) * jnp.abs(x), fmt)

    def _tap(self, x, e, fmt):
        """x marked as a rounding site whose first-order error is at most e (entrywise)."""
        return tap(x, e, *self._marks([x], fmt, jnp.shape(x)), self.channel["z"], self.channel["w"], self.channel["q"])

    def _marks(self, values, fmt, shape):
        """What the roundings of ``values`` into ``fmt`` flag: [same-sign sum, underflow] for the
        site, and the entries of its result (``shape``) beyond the format's range (overflow is
        reported in the reverse pass, where it matters): values of that shape entry by entry,
        stacked ones (k, *shape) along their first axis, any other shape (a matrix unit's operands)
        for the whole site."""
        magnitudes = [jax.lax.stop_gradient(jnp.abs(v)) for v in values]
        tiny = jnp.any(jnp.stack([jnp.any((m > 0) & (m < fmt.min_normal)) for m in magnitudes]))
        masks = []
        for m in magnitudes:
            big = m > fmt.max_finite
            if big.shape == tuple(shape):
                masks.append(big)
            elif big.shape[1:] == tuple(shape):
                masks.append(jnp.any(big, axis=0))
            else:
                masks.append(jnp.broadcast_to(jnp.any(big), shape))
        return jnp.stack([self.same_sign, tiny.astype(jnp.float64)]), functools.reduce(jnp.logical_or, masks)

    def _raw_add(self, x, y):
        return x + y

    def _reduce(self, term, k: int, key, products: bool):
        """A recursive sum (the paper's order) without a loop: every rounding of
        s_j = fl(s_{j-1} + fl(t_j)) has the sensitivity of the result (d s_k / d s_j = d s_k /
        d t_j = 1 in exact arithmetic), so the roundings' first-order terms are |g| times
        e = u sum_j |t_j| (the products) + u_acc sum_{j>=2} |s_j| (the additions) [+ u |s_k| for
        a wider accumulator's final rounding], one tap; the same bound as the loop, in one
        vectorised pass.  Other orders keep the loop."""
        if self._sum_order != "recursive" or k < 1:
            return super()._reduce(term, k, key, products)
        terms = jax.vmap(term)(jnp.arange(k))  # (k, ...) exact terms
        partial = jnp.cumsum(terms, axis=0)  # the partial sums' local bounds (no cotangent flows into them)
        total = _recursive_total(terms)
        u = effective_unit_roundoff(self.fmt, self.mode)
        u_acc = effective_unit_roundoff(self.accumulator or self.fmt, self.mode)
        pieces = [u_acc * jnp.abs(partial[1:])]
        if products:
            pieces.append(u * jnp.abs(terms))
        if self.accumulator is not None and self.accumulator != self.fmt:
            pieces.append(u * jnp.abs(total)[None])
        e = sum(jnp.sum(piece, axis=0) for piece in pieces)
        e2 = sum(jnp.sum(piece * piece, axis=0) for piece in pieces)
        return tap_sum(total, e, e2, *self._marks([terms, partial], self.fmt, jnp.shape(total)), self.channel["z"],
                       self.channel["w"], self.channel["q"])

    def exp(self, x, key=None):
        return self.round(jnp.exp(x), key)

    def _mark_same_sign(self, terms, axis):
        """Flag a sum whose terms all have one sign (k >= 2): its rounding errors all push the
        same way (softmax denominators), the case the independence assumption is known to miss."""
        if terms.shape[axis] >= 2:
            same = jnp.all(terms >= 0, axis=axis) | jnp.all(terms <= 0, axis=axis)
            self.same_sign = jnp.any(jax.lax.stop_gradient(same)).astype(jnp.float64)

    def _lumped_coefficient(self, k: int, products: bool) -> float:
        """Lemma 4.3's first-order constant for one dot product (sum) of k terms: every product
        rounded to the format (u), k - 1 additions to the accumulator format, and the finished
        sum once more to the format when the accumulator is wider."""
        u = effective_unit_roundoff(self.fmt, self.mode)
        u_acc = effective_unit_roundoff(self.accumulator or self.fmt, self.mode)
        return (u if products else 0.0) + (k - 1) * u_acc + (u if self.accumulator is not None else 0.0)

    def sum(self, x, axis=-1, key=None):
        self._mark_same_sign(x, axis)
        if self.lumped:
            x = jnp.asarray(x, jnp.float64)
            k = x.shape[axis]
            magnitude = jnp.sum(jnp.abs(x), axis=axis)
            return self._tap(jnp.sum(x, axis=axis), self._lumped_coefficient(k, False) * magnitude, self.fmt)
        return super().sum(x, axis, key)

    def _unit_product(self, a, b, key):
        """A dot product on a matrix unit: one tap at the exact product with the unit's local
        error model (``boundlab.matrix_units.first_order_error``: the operands' quantisation, the
        fused steps' truncation and write-back, promotion and scaling), then the rounding into
        the format, a tap of its own."""
        from boundlab.formats import get_format
        from boundlab.matrix_units import first_order_error

        unit = self.unit
        exact = jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)
        e = first_order_error(unit, a, b)
        checked, fmt = ([a, b], get_format(unit.inputs)) if unit.scaling is None else ([exact], get_format("fp32"))
        marked = tap(exact, e, *self._marks(checked, fmt, jnp.shape(exact)), self.channel["z"], self.channel["w"],
                     self.channel["q"])
        return self.round(marked, key)

    def _product(self, a, b, key):
        if a.shape[-1] >= 2:  # products of one sign everywhere, counted with indicator matmuls
            def ind(v, positive):
                return jax.lax.stop_gradient((v > 0) if positive else (v < 0)).astype(jnp.float64)

            positive = ind(a, True) @ ind(b, True) + ind(a, False) @ ind(b, False)
            negative = ind(a, True) @ ind(b, False) + ind(a, False) @ ind(b, True)
            self.same_sign = jnp.any((positive == 0) | (negative == 0)).astype(jnp.float64)
        if self.lumped and self.unit is None:
            k = a.shape[-1]
            exact = jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)
            magnitude = jnp.matmul(jnp.abs(a), jnp.abs(b), precision=jax.lax.Precision.HIGHEST)
            return self._tap(exact, self._lumped_coefficient(k, True) * magnitude, self.fmt)
        return super()._product(a, b, key)


class TapHandler(Handler):
    """Every site evaluated by a ``TapPolicy`` writing into its own channel.  With ``channels``
    None (the discovery pass), zero channels of the sites' shapes are made on the fly.

    ``stop_gradient`` in the traced function is the identity here: dy/dv_i is the derivative of
    the function's value (a softmax's stopped maximum shifts every score alike), and the bound's
    own derivative (a penalty's gradient) must see every dependence, e.g. of |s - max s| on max.
    """

    keeps_stop_gradient = False

    def __init__(self, arithmetic, channels=None, lumped: bool = False):
        super().__init__(arithmetic)
        self.channels = channels
        self.lumped = lumped

    @property
    def dtype(self):
        return jnp.dtype(jnp.float64)

    def cast(self, x):
        return jnp.asarray(self.arithmetic.cast(x), jnp.float64)

    def policy(self, site, key):
        channel = self.channels[site.index] if self.channels is not None else zero_channel(site.shape)
        return TapPolicy(self.arithmetic, channel, self.lumped)


def zero_channel(shape):
    return {"z": jnp.zeros(shape, jnp.float64), "w": jnp.zeros(shape, jnp.float64),
            "q": jnp.zeros((len(FLAGS),), jnp.float64)}
