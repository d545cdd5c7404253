"""Arithmetic policies: ``Exact()`` (float64), ``Emulated(fmt, ...)`` (Model 4.1) and ``Native()``
(the inputs' own dtype, plain ``jax.numpy``).

A policy is a frozen, hashable dataclass (a static argument under ``jit``) whose methods
evaluate one kind of operation on arrays, elementwise:

* ``add``, ``sub``, ``mul``, ``div``, ``sqrt``, ``exp``: one rounding of the exact result, as
  in Model 4.1: fl(x op y) = (x op y)(1 + delta), |delta| <= u.
* ``sum``, ``dot_general`` (``lax.dot_general``'s signature: any batch and contracting
  dimensions, usable as ``flax.nnx.Linear(..., dot_general=policy.dot_general)`` and in
  ``jnp.einsum(..., _dot_general=policy.dot_general)``), ``matmul`` and ``einsum``: sums and
  dot products in the policy's accumulation order (``boundlab.accumulation``); ``recursive`` is
  the order that Lemma 4.3 analyses.

How the emulation stays exact.  Each operation is carried out in a container (float32 or
float64) and its result rounded to the format with ``boundlab.rounding``.  Products of two
t-bit numbers are exact in the container when 2t <= p.  For +, -, /, sqrt rounding first to the
container's p bits and then to t bits equals rounding once when p >= 2t + 2 in round-to-nearest
(Figueroa, "When is double rounding innocuous?", 1995); directed modes also need the sticky
information of a sum, which an exact TwoSum supplies (the container sum is made "round to odd",
after which any second rounding to t <= p - 2 bits is correct).  Stochastic rounding takes the
container result as it is, for sums as for quotients and square roots: its probability of
rounding away, rem / 2^(p - t) in container ulps, resolves the exact one to 2^-(p - t) either
way (round to odd is off by less than one container ulp, round to nearest by at most half of
one), as SR hardware adds its random bits to a float32 result.  Formats are
therefore emulated in float32 when t <= 11 and their range (subnormals included) lies inside
float32's normal range (fp16, fp8), and in float64 when t <= 25 or the format is float64 itself.

XLA's algebraic simplifier would turn x / broadcast(y) into x * (1/y); ``div`` prevents it (see
there).  exp and the other elementwise functions (``Emulated.apply``) are correctly rounded in
every mode (``boundlab.elementary``: the few results near a rounding boundary are placed on the
exact value's side of it by a saturation, tangent or exact-point rule or a double-word value);
an exact zero sum is -0 under round down (IEEE 754).  Known deviation, documented rather
than hidden: XLA on the CPU flushes float64 subnormals, so t<N> results below 2^-1022 become zero.

Why one file (over 500 lines): ``Policy`` and its subclasses are one class hierarchy whose
methods call each other (``Exact`` overrides half of ``Policy``, ``Emulated`` the other half),
and the contraction helpers serve the three; split, the file boundaries would cut through the
class's method resolution.  ``Native`` (about 70 lines) overrides every operation and could live
apart; it stays beside the others because the three are the one ``Arithmetic`` type every model
function takes, and its contract is stated against theirs.

>>> import jax.numpy as jnp
>>> fp16 = Emulated("fp16")
>>> float(fp16.add(jnp.float32(1.0), jnp.float32(2.0**-11)))  # a tie, rounded to even
1.0
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from boundlab import accumulation, elementary, matrix_units
from boundlab.runtime.x64 import require_x64, x64_enabled
from boundlab.accumulation import ACCUMULATIONS, KeyStream, take
from boundlab.formats import Format, get_format
from boundlab.matrix_units import MatrixUnit
from boundlab.rounding import MODES, random_bits_for, round_bits, round_scalar

KERNELS = ("auto", "pallas", "xla")
# Reductions up to this length are unrolled into straight-line code.  None by default: measured
# (2 CPU cores, jax 0.10.2, Figure 1 networks d = n = D = 64, L = 2), loops compile 4-20x faster
# and run as fast or faster (bf16 0.0044 s vs 0.0058 s unrolled; fp8_e4m3 0.0048 s vs 0.027 s).
_UNROLL_LIMIT = 0
_FP64 = get_format("fp64")


def _container(formats: tuple[Format, ...]) -> np.dtype:
    """The narrowest container in which every format's operations are emulated exactly."""

    def fits_float32(f: Format) -> bool:
        return 2 * f.precision + 2 <= 24 and f.emin - f.precision >= -126 and f.emax <= 127

    def fits_float64(f: Format) -> bool:
        is_float64 = (f.precision, f.emin, f.emax, f.subnormals) == (53, -1022, 1023, True)
        return 2 * f.precision + 2 <= 53 or is_float64

    if all(fits_float32(f) for f in formats):
        return np.dtype(np.float32)
    for f in formats:
        if not fits_float64(f):
            raise ValueError(
                f"format {f} (t = {f.precision}) cannot be emulated exactly: boundlab needs "
                f"2t + 2 <= 53 (t <= 25) or the float64 format itself, so that rounding the "
                f"float64 result again is innocuous"
            )
    return np.dtype(np.float64)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _cast(x, fmt: Format, wide: np.dtype, container: np.dtype) -> jax.Array:
    """``x`` widened, rounded to nearest into ``fmt`` and held in ``container``: one compiled
    program per shape when called eagerly (operation by operation, each new shape of a model's
    weights compiled some twenty small programs), inlined under an outer ``jit``."""
    return round_bits(jnp.asarray(x).astype(wide), fmt, "nearest").astype(container)


class Policy:
    """Operations shared by the policies; subclasses set the fields used here."""

    fmt: Format
    mode: str
    accumulation: str | MatrixUnit
    block_size: int
    accumulator: Format | None

    @property
    def unit(self) -> MatrixUnit | None:
        """The matrix unit that computes dot products (``accumulation=<MatrixUnit>``), or None."""
        return self.accumulation if isinstance(self.accumulation, MatrixUnit) else None

    @property
    def _sum_order(self) -> str:
        """The order of plain sums: the accumulation's, recursive under a matrix unit (a unit
        computes dot products only; reductions run elementwise, Model 4.1)."""
        return "recursive" if self.unit is not None else self.accumulation

    # -- set-up -------------------------------------------------------------------------------
    @property
    def dtype(self) -> np.dtype:
        """The container dtype in which values are held."""
        raise NotImplementedError

    @property
    def unit_roundoff(self) -> float:
        return self.fmt.unit_roundoff

    def cast(self, x) -> jax.Array:
        """The operand ``x`` rounded (to nearest) into the format, held in the container.

        Model 4.1 speaks of operands that are already floating-point numbers: weights and
        inputs are rounded once, here.  A float64 operand is rounded in float64 before it is
        narrowed, so a float32 container never sees a double rounding.  A Python number is
        rounded on the host, so constants work without ``jax_enable_x64`` in a float32 container.
        """
        if isinstance(x, (int, float)):
            return jnp.asarray(round_scalar(x, self.fmt), dtype=self.dtype)
        in_dtype = np.dtype(getattr(x, "dtype", np.float64))
        wide = np.dtype(np.float64) if np.float64 in (in_dtype, self.dtype) else np.dtype(np.float32)
        if wide == np.float64:
            require_x64(f"{self} with float64 operands or container")
        return _cast(x, self.fmt, wide, self.dtype)

    # -- rounding -----------------------------------------------------------------------------
    def _random_bits(self, x, key):
        if self.mode != "stochastic":
            return None
        if key is None:
            raise ValueError(f"{self} rounds stochastically and needs a PRNG key (pass key=...)")
        return random_bits_for(key, x.shape, x.dtype)

    def _round_to(self, x, fmt: Format, key) -> jax.Array:
        return round_bits(x, fmt, self.mode, self._random_bits(x, key))

    def round(self, x, key=None) -> jax.Array:
        """fl(x): ``x`` (held in the container) rounded to the format."""
        return self._round_to(x, self.fmt, key)

    def _round_acc(self, x, key) -> jax.Array:
        return self._round_to(x, self.accumulator or self.fmt, key)

    def _raw_add(self, x, y) -> jax.Array:
        """x + y in the container, made round-to-odd where a directed rounding follows, so that
        the second rounding sees on which side of the container result the exact sum lies
        (TwoSum, Knuth: exact without FMA).  Round to nearest and stochastic rounding take the
        container sum as it is (module docstring)."""
        total = x + y
        if self.mode in ("nearest", "stochastic"):
            return total
        y_virtual = total - x
        total = elementary.sticky(total, (x - (total - y_virtual)) + (y - y_virtual))
        if self.mode == "down":
            # IEEE 754: an exact zero sum is -0 when rounding toward -inf (x - x, x + (-x)), unless
            # both terms are +0; the container's sum, formed to nearest, gave +0
            plus_zeros = (x == 0) & (y == 0) & ~jnp.signbit(x) & ~jnp.signbit(y)
            total = jnp.where((total == 0) & ~plus_zeros, jnp.asarray(-0.0, total.dtype), total)
        return total

    # -- elementwise operations (Model 4.1) ---------------------------------------------------
    def add(self, x, y, key=None) -> jax.Array:
        """fl(x + y)."""
        return self.round(self._raw_add(x, y), key)

    def sub(self, x, y, key=None) -> jax.Array:
        """fl(x - y)."""
        return self.round(self._raw_add(x, -y), key)

    def mul(self, x, y, key=None) -> jax.Array:
        """fl(x * y); the container product of two format numbers is exact."""
        return self.round(x * y, key)

    def div(self, x, y, key=None) -> jax.Array:
        """fl(x / y) (x/0 gives +-inf and 0/0 NaN, as in IEEE arithmetic).

        XLA rewrites a division by a broadcast or a constant into a multiplication by the
        reciprocal, which is not correctly rounded (a / 20.0 differs from IEEE division in
        about a sixth of cases on the CPU); see ``ieee_divide``.
        """
        return self.round(ieee_divide(x, y), key)

    def sqrt(self, x, key=None) -> jax.Array:
        """fl(sqrt(x))."""
        return self.round(jnp.sqrt(x), key)

    def exp(self, x, key=None) -> jax.Array:
        """fl(exp(x)), correctly rounded in every mode (``boundlab.elementary.exp``)."""
        return elementary.exp(x, self.fmt, self.mode, self._random_bits(x, key))

    def apply(self, fn, *args, key=None) -> jax.Array:
        """fl(fn(*args)) for an elementwise function other than exp (``jax.lax.erf``, ``jnp.tanh``,
        ...): evaluated in float64 (in the container when ``jax_enable_x64`` is off) and rounded
        once.  This is the correctly rounded value except when fn's float64 value lies within a
        float64 ulp of a rounding boundary of the format (and up to float64's own error in fn);
        ``boundlab.emulate`` treats such primitives the same way."""
        wide = jnp.float64 if x64_enabled() else self.dtype
        args = [jnp.asarray(a) for a in args]
        value = fn(*[a.astype(wide) if jnp.issubdtype(a.dtype, jnp.floating) else a for a in args])
        return self.round(value, key).astype(self.dtype)

    def apply_primitive(self, primitive, params: dict, *args, key=None) -> jax.Array:
        """``apply`` of one bound primitive (the emulation interpreter's entry: the primitive is
        known, so ``Emulated`` need not trace a function to find it)."""
        return self.apply(lambda *values: primitive.bind(*values, **params), *args, key=key)

    # -- reductions -----------------------------------------------------------------------------
    def sum(self, x, axis: int = -1, key=None) -> jax.Array:
        """fl(sum_i x_i) along ``axis`` in the policy's accumulation order.

        Recursive summation satisfies |fl(sum x) - sum x| <= gamma_{k-1} ||x||_1 (Lemma 4.3.1).
        """
        x = jnp.moveaxis(x, axis, -1)
        k = x.shape[-1]
        return self._reduce(lambda j: take(x, j, -1), k, key, products=False)

    def dot_general(self, lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, *, key=None,
                    **kwargs) -> jax.Array:
        """``lax.dot_general`` in the policy's arithmetic: every product rounded once, each dot
        product summed in the accumulation order over the contracting dimensions taken in
        row-major order; recursively, |fl(a^T b) - a^T b| <= gamma_k |a|^T |b| (Lemma 4.3.2).

        The operands are rounded into the format first (a no-op for format numbers), so flax
        parameters in float32 become format numbers.  ``precision`` is ignored (the policy is
        the precision); ``preferred_element_type`` may name a float dtype that holds every format
        number (the result is converted, exactly); other keyword arguments that flax and
        ``jnp.einsum`` pass (``out_sharding``) are accepted and ignored.  ``key``: PRNG key for
        stochastic rounding.  Result shape: batch dimensions, then the free dimensions of lhs,
        then those of rhs, as ``lax.dot_general``.

        >>> import jax.numpy as jnp
        >>> a, b = jnp.ones((2, 3), jnp.float32), jnp.full((3, 4), 2.0**-11, jnp.float32)
        >>> Emulated("fp16").dot_general(a, b, (((1,), (0,)), ((), ())))[0, 0] * 2**11  # 3 exact products
        Array(3., dtype=float32)
        """
        return self._contract(self.cast(lhs), self.cast(rhs), dimension_numbers, preferred_element_type, key)

    def _contract(self, lhs, rhs, dimension_numbers, preferred_element_type, key):
        """``dot_general`` on operands that are already format numbers in the container."""
        a, b, out_shape = _canonical_operands(lhs, rhs, dimension_numbers)
        k = a.shape[-1]
        if k == 0:
            out = jnp.zeros(out_shape, self.dtype)  # an empty sum is an exact zero
        else:
            out = self._product(a, b, key).reshape(out_shape)
        return _result_dtype(out, preferred_element_type, self)

    def _product(self, a, b, key):
        """(..., m, k) x (..., k, n) -> (..., m, n), every product rounded, sums in order
        (through the Pallas kernel ``boundlab.kernels.matmul`` when the policy asks for it:
        the same bits)."""
        if self.unit is not None:
            return self._unit_product(a, b, key)
        if getattr(self, "uses_kernel", False):
            from boundlab.kernels.rounded_matmul import product

            return product(a, b, self)
        return self._reduce(lambda j: take(a, j, -1)[..., :, None] * take(b, j, -2)[..., None, :],
                            a.shape[-1], key, products=True)

    def _unit_product(self, a, b, key):
        """The matrix unit's product (``boundlab.matrix_units.product``: operands quantised into
        the unit's input format, with the recipe's scales; fused, chained, promoted), rounded once
        into the policy's format."""
        require_x64(f"{self} (a matrix unit's fused sums are formed in float64)")
        a, b = a.astype(jnp.float64), b.astype(jnp.float64)
        kernel = self.unit.scaling != "block" and (
            self.kernel == "pallas" or (self.kernel == "auto" and jax.default_backend() in ("gpu", "cuda", "rocm")))
        if kernel:
            from boundlab.kernels.unit_matmul import product as chains
        else:
            chains = None
        out = matrix_units.product(self.unit, a, b, chains=chains)
        # straight through, as every rounding in boundlab: the value is the unit's, the derivative
        # that of the exact product (truncation and floors would otherwise give a zero gradient)
        out = _straight_through(out, jnp.matmul(a, b, precision=lax.Precision.HIGHEST))
        return self._round_to(out, self.fmt, key).astype(self.dtype)

    def matmul(self, a, b, key=None) -> jax.Array:
        """fl(a @ b) for a (..., m, k) and b (..., k, n) (batch dimensions broadcast), as
        ``dot_general`` on operands that are already format numbers (no rounding on entry: the
        transformer's hot path); recursively |fl(A x) - A x| <= gamma_k |A| |x| (Lemma 4.3.2)."""
        if a.ndim < 2 or b.ndim < 2 or a.shape[-1] != b.shape[-2]:
            raise ValueError(f"matmul: needs (..., m, k) @ (..., k, n), got {a.shape} @ {b.shape}")
        batch = jnp.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        a = jnp.broadcast_to(a, batch + a.shape[-2:])
        b = jnp.broadcast_to(b, batch + b.shape[-2:])
        nb = len(batch)
        return self._contract(a, b, (((nb + 1,), (nb,)), (tuple(range(nb)), tuple(range(nb)))), None, key)

    def einsum(self, subscripts: str, *operands, key=None) -> jax.Array:
        """``jnp.einsum`` with every contraction through ``dot_general`` (a sum over an index
        that appears in one operand only is not supported: ``jnp.einsum`` would do it unrounded)."""
        for spec in subscripts.replace(" ", "").split("->")[0].split(","):
            others = subscripts.replace(spec, "", 1)
            if any(index not in others for index in spec if index.isalpha()):
                raise ValueError(f"einsum: an index of {spec!r} appears in no other operand and no "
                                 f"output ({subscripts!r}); its sum would not be rounded")
        return jnp.einsum(subscripts, *operands, optimize=False,
                          _dot_general=functools.partial(self.dot_general, key=key))

    def _reduce(self, term, k: int, key, products: bool) -> jax.Array:
        """Sum the k terms term(0), ..., term(k-1) in the accumulation order.

        ``products``: terms are exact container products that Model 4.1 rounds before they
        are added (except inside a fused block); otherwise terms are already format numbers.
        """
        if k == 0:
            raise ValueError("cannot sum an empty axis")
        keys = KeyStream(key)
        unroll = getattr(self, "unroll", _UNROLL_LIMIT)

        def rounded_term(j, term_key):
            return self.round(term(j), term_key) if products else term(j)

        def add(x, y, add_key):
            return self._round_acc(self._raw_add(x, y), add_key)

        if self._sum_order == "recursive":
            total = accumulation.recursive(rounded_term, k, add, keys, unroll)
        elif self._sum_order == "pairwise":
            total = accumulation.pairwise(rounded_term, k, add, keys, unroll)
        else:
            require_x64("accumulation='blocked' (block sums are formed in float64)")
            container = self.dtype

            def round_block(block, block_key):  # rounded in float64, held exactly in the container
                return self._round_acc(block, block_key).astype(container)

            total = accumulation.blocked(term, k, add, round_block, self.block_size, keys, unroll,
                                         zero_down=self.mode == "down")
        if self.accumulator is not None and self.accumulator != self.fmt:
            total = self.round(total, keys.next())
        return total


def _all_float(arrays) -> bool:
    return all(jnp.issubdtype(a.dtype, jnp.floating) for a in arrays)


def _dimensions(lhs, rhs, dimension_numbers):
    """The checked (lhs_contract, rhs_contract, lhs_batch, rhs_batch) of ``lax.dot_general``."""
    try:
        (lc, rc), (lb, rb) = dimension_numbers
        lc, rc, lb, rb = (tuple(int(i) for i in dims) for dims in (lc, rc, lb, rb))
    except (TypeError, ValueError):
        raise ValueError(f"dimension_numbers must be ((lhs_contract, rhs_contract), (lhs_batch, rhs_batch)), "
                         f"got {dimension_numbers!r}") from None
    for name, dims, ndim in (("lhs", lc + lb, lhs.ndim), ("rhs", rc + rb, rhs.ndim)):
        if len(set(dims)) != len(dims) or any(not 0 <= i < ndim for i in dims):
            raise ValueError(f"dot_general: {name} dimensions {dims} are repeated or outside 0..{ndim - 1}")
    if len(lc) != len(rc) or len(lb) != len(rb):
        raise ValueError(f"dot_general: {len(lc)} vs {len(rc)} contracting, {len(lb)} vs {len(rb)} batch dimensions")
    for l_dims, r_dims, kind in ((lc, rc, "contracting"), (lb, rb, "batch")):
        for i, j in zip(l_dims, r_dims, strict=True):
            if lhs.shape[i] != rhs.shape[j]:
                raise ValueError(f"dot_general: {kind} dimensions differ, lhs {lhs.shape}[{i}] vs rhs {rhs.shape}[{j}]")
    return lc, rc, lb, rb


def _canonical_operands(lhs, rhs, dimension_numbers):
    """lhs, rhs of ``lax.dot_general`` as (batch..., m, k) and (batch..., k, n), and the shape of
    the result; the k contracting entries in row-major order of the contracting dimensions."""
    lc, rc, lb, rb = _dimensions(lhs, rhs, dimension_numbers)
    lf = tuple(i for i in range(lhs.ndim) if i not in lc + lb)
    rf = tuple(i for i in range(rhs.ndim) if i not in rc + rb)
    batch = tuple(lhs.shape[i] for i in lb)
    m = math.prod(lhs.shape[i] for i in lf)
    n = math.prod(rhs.shape[i] for i in rf)
    k = math.prod(lhs.shape[i] for i in lc)
    a = jnp.transpose(lhs, lb + lf + lc).reshape(batch + (m, k))
    b = jnp.transpose(rhs, rb + rc + rf).reshape(batch + (k, n))
    return a, b, batch + tuple(lhs.shape[i] for i in lf) + tuple(rhs.shape[i] for i in rf)


def _result_dtype(out, preferred_element_type, policy):
    if preferred_element_type is None or np.dtype(preferred_element_type) == out.dtype:
        return out
    wanted = np.dtype(preferred_element_type)
    fmt = policy.fmt
    in_float32 = fmt.precision <= 24 and fmt.emax <= 127 and fmt.min_subnormal >= 2.0**-149
    holds = wanted == np.float64 or (wanted == np.float32 and in_float32)
    if not holds:
        raise ValueError(f"preferred_element_type={wanted} cannot hold every number of {policy.fmt} "
                         f"(the emulated result is exact in {policy.dtype}); use {policy.dtype} or None")
    if wanted == np.float64:
        require_x64(f"{policy}.dot_general(preferred_element_type=float64)")
    return out.astype(wanted)


@jax.custom_jvp
def _straight_through(value, exact):
    """``value``, differentiated as ``exact`` (the same quantity computed without rounding)."""
    return value


@_straight_through.defjvp
def _straight_through_jvp(primals, tangents):
    return primals[0], tangents[1]


@jax.custom_batching.custom_vmap
def _divide_full(x, y):
    return x / lax.optimization_barrier(y)


@_divide_full.def_vmap
def _divide_full_vmap(axis_size, in_batched, x, y):
    # vmap would divide by a broadcast of an unbatched divisor, which XLA rewrites again:
    # broadcast both operands over the batch first, then divide behind the barrier.
    x = x if in_batched[0] else jnp.broadcast_to(x, (axis_size,) + x.shape)
    y = y if in_batched[1] else jnp.broadcast_to(y, (axis_size,) + y.shape)
    return _divide_full(x, y), True


@jax.custom_jvp
def _divide_same_shape(x, y):
    return _divide_full(x, y)


@_divide_same_shape.defjvp
def _divide_same_shape_jvp(primals, tangents):
    (x, y), (x_dot, y_dot) = primals, tangents
    quotient = _divide_same_shape(x, y)
    return quotient, x_dot / y - quotient * y_dot / y


def ieee_divide(x, y) -> jax.Array:
    """x / y rounded once, as IEEE 754 prescribes, also under ``jit`` and ``vmap``.

    XLA's algebraic simplifier turns a division by a broadcast or by a constant into a
    multiplication by the reciprocal.  Here the divisor is materialised at the full (batched)
    shape and hidden behind ``lax.optimization_barrier``, and a custom batching rule keeps
    ``vmap`` from reintroducing a broadcast divisor.  Differentiable.
    """
    shape = jnp.broadcast_shapes(jnp.shape(x), jnp.shape(y))
    return _divide_same_shape(jnp.broadcast_to(x, shape), jnp.broadcast_to(y, shape))


def _check_common(policy, accumulation_choices):
    if isinstance(policy.accumulation, MatrixUnit):
        return
    if policy.accumulation not in accumulation_choices:
        raise ValueError(f"accumulation must be one of {accumulation_choices} or a matrix unit "
                         f"(boundlab.matrix_units.UNITS, e.g. 'hopper-wgmma-fp8_e4m3-fp32'), got {policy.accumulation!r}")
    if not isinstance(policy.block_size, int) or policy.block_size < 1:
        raise ValueError(f"block_size must be a positive int, got {policy.block_size!r}")


@dataclasses.dataclass(frozen=True)
class Exact(Policy):
    """float64 arithmetic: the reference against which emulated errors are measured.

    ``accumulation="native"`` (default) lets XLA evaluate sums and dot products (fastest; the
    order is XLA's).  ``"recursive"``, ``"pairwise"`` or ``"blocked"`` follow the same order as
    ``Emulated`` with every float64 operation rounded once (no fused multiply-add), so
    ``Emulated("t53", accumulation=...)`` agrees with it bit for bit.  ``dot_general`` is
    ``lax.dot_general`` in float64 with precision HIGHEST (native) or that ordered accumulation.
    """

    accumulation: str = "native"
    block_size: int = 32

    def __post_init__(self):
        _check_common(self, ("native",) + ACCUMULATIONS)

    fmt = _FP64
    mode = "nearest"
    accumulator = None

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float64)

    def cast(self, x) -> jax.Array:
        require_x64("Exact() arithmetic")
        return jnp.asarray(x, dtype=jnp.float64)

    def round(self, x, key=None) -> jax.Array:
        # Values are unchanged; in an ordered accumulation the rounding also keeps XLA from
        # contracting a product and a sum into one fused multiply-add.
        if self.accumulation == "native":
            return x
        return round_bits(x, _FP64, "nearest")

    def sum(self, x, axis: int = -1, key=None) -> jax.Array:
        if self.accumulation == "native":
            return jnp.sum(x, axis=axis)
        return super().sum(x, axis, key)

    def exp(self, x, key=None) -> jax.Array:
        return jnp.exp(x)  # float64's own exp: the reference (Emulated("t53") uses it too)

    def apply(self, fn, *args, key=None) -> jax.Array:
        return self.round(fn(*args))  # float64's own function: the reference

    def _contract(self, lhs, rhs, dimension_numbers, preferred_element_type, key):
        if self.accumulation != "native":
            return super()._contract(lhs, rhs, dimension_numbers, preferred_element_type, key)
        _dimensions(lhs, rhs, dimension_numbers)  # the same checks and messages
        out = lax.dot_general(lhs, rhs, dimension_numbers, precision=lax.Precision.HIGHEST,
                              preferred_element_type=jnp.float64)
        return _result_dtype(out, preferred_element_type, self)

    def __str__(self) -> str:
        return "Exact()" if self.accumulation == "native" else f"Exact({self.accumulation})"


@dataclasses.dataclass(frozen=True)
class Emulated(Policy):
    """Every scalar operation rounded to ``fmt`` (Model 4.1), in a chosen accumulation order.

    Args:
      fmt: a ``Format`` or a name (``"fp16"``, ``"t10"``, ...).
      mode: rounding mode, one of ``boundlab.MODES``; ``"stochastic"`` needs a key in every
        operation (``forward`` threads one through).
      accumulation: one of ``ACCUMULATIONS`` (``"recursive"`` is the paper's), or a matrix unit
        (``boundlab.matrix_units``: a ``MatrixUnit`` or a name in ``UNITS``, e.g.
        ``"hopper-wgmma-fp8_e4m3-fp32"``, optionally with a recipe: ``get_unit(name,
        promote_every=128, scaling="block")``): dot products are computed as that unit does
        (operands quantised into its input format, with the recipe's scales; products fused in
        groups, aligned, truncated, written back by its rounding; promoted and split as the
        recipe says), and the result rounded once into ``fmt``; so ``Emulated("bf16",
        accumulation=<an FP8 unit>)`` is a bf16 model with FP8 GEMMs.  Plain sums (layer norm,
        softmax) stay recursive, elementwise operations Model 4.1.  Needs ``jax_enable_x64``.
      block_size: terms per fused block for ``"blocked"``.
      accumulator: optional wider format for sums: products are rounded to ``fmt``, every
        addition to ``accumulator``, and the finished sum once more to ``fmt``.
      unroll: sums of up to this many terms are unrolled into straight-line code; longer ones,
        all of them with the default ``unroll=0``, run as a loop (compiles several times faster,
        and measured no slower to run on the CPU).  Deterministic modes give the same
        results bit for bit either way (stochastic rounding draws its bits differently).
      kernel: where dot products run: ``"xla"`` (the jnp code path), ``"pallas"`` (the Pallas
        kernel ``boundlab.kernels.matmul``: accumulator in registers; interpret mode on the CPU)
        or ``"auto"`` (Pallas on GPU/TPU, XLA on the CPU).  The results are the same bits; the
        kernel covers recursive and blocked accumulation in the deterministic modes, and
        ``"auto"`` falls back to XLA for the others.  With a matrix unit: its own kernel
        (``boundlab.kernels.unit_matmul``; ``"auto"``: on GPUs, which run float64), not with
        block scales.
      container: ``None`` (the narrowest exact container, see the module docstring) or
        ``"float64"``: hold values in float64 even where float32 would do, so that policies of
        several formats can share one container (``boundlab.emulation.MixedHandler``).  Same
        results bit for bit.
    """

    fmt: Format | str
    mode: str = "nearest"
    accumulation: str = "recursive"
    block_size: int = 32
    accumulator: Format | str | None = None
    unroll: int = _UNROLL_LIMIT
    kernel: str = "auto"
    container: str | None = None

    def __post_init__(self):
        if self.container not in (None, "float64"):
            raise ValueError(f"container must be None or 'float64', got {self.container!r}")
        if self.kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {self.kernel!r}")
        if isinstance(self.accumulation, str) and self.accumulation not in ACCUMULATIONS:
            try:
                object.__setattr__(self, "accumulation", matrix_units.get_unit(self.accumulation))
            except ValueError as error:
                raise ValueError(f"accumulation must be one of {ACCUMULATIONS} or a matrix unit; {error}") from None
        if self.unit is not None and self.accumulator is not None:
            raise ValueError(f"accumulation={self.unit.name!r} is a matrix unit: it has its own accumulator "
                             f"(leave accumulator=None)")
        if self.unit is not None and self.kernel == "pallas" and self.unit.scaling == "block":
            raise ValueError(f"{self.unit}: block scales dequantise inside the chain, which the Pallas kernel "
                             f"does not do; use kernel='auto' or 'xla'")
        if self.kernel == "pallas" and (self.accumulation == "pairwise" or self.mode == "stochastic"):
            raise ValueError(f"the Pallas matmul implements recursive and blocked accumulation in the "
                             f"deterministic modes, not {self.accumulation!r} / {self.mode!r}; use kernel='xla' or 'auto'")
        object.__setattr__(self, "fmt", get_format(self.fmt))
        if not isinstance(self.unroll, int) or self.unroll < 0:
            raise ValueError(f"unroll must be a non-negative int, got {self.unroll!r}")
        if self.accumulator is not None:
            object.__setattr__(self, "accumulator", get_format(self.accumulator))
        if self.mode not in MODES:
            raise ValueError(f"unknown rounding mode {self.mode!r}; use one of {MODES}")
        _check_common(self, ACCUMULATIONS)
        _container(self._formats())  # fail early for formats that cannot be emulated

    def _formats(self) -> tuple[Format, ...]:
        return (self.fmt,) if self.accumulator is None else (self.fmt, self.accumulator)

    @property
    def dtype(self) -> np.dtype:
        if self.container == "float64":
            return np.dtype(np.float64)
        return _container(self._formats())

    @property
    def uses_kernel(self) -> bool:
        """Dot products go through the Pallas kernel (``kernel``, the backend and the mode decide)."""
        if self.kernel == "xla" or self.accumulation == "pairwise" or self.mode == "stochastic" or self.unit:
            return False
        return self.kernel == "pallas" or jax.default_backend() in ("gpu", "cuda", "rocm", "tpu")

    def apply(self, fn, *args, key=None) -> jax.Array:
        """fl(fn(*args)) for an elementwise function other than exp, correctly rounded in every
        mode when ``fn`` is one primitive with a rule (``boundlab.elementary.RULES``: ``jnp.tanh``,
        ``lax.erf``, ``jax.nn.sigmoid``, ``jnp.log``, ...; ``boundlab.elementary.functions`` says
        how); any other ``fn`` is evaluated in float64 and rounded once (``Policy.apply``)."""
        args = [jnp.asarray(a) for a in args]
        found = elementary.single_primitive(fn, args) if _all_float(args) else None
        if found is None:
            return super().apply(fn, *args, key=key)
        return self.apply_primitive(*found, *args, key=key)

    def apply_primitive(self, primitive, params: dict, *args, key=None) -> jax.Array:
        """fl(primitive(*args)), correctly rounded (``boundlab.elementary.rounded``) when the
        primitive has a rule; else its float64 value rounded once (``Policy.apply``)."""
        args = [jnp.asarray(a) for a in args]
        if primitive.name not in elementary.RULES or not _all_float(args):
            return Policy.apply(self, lambda *values: primitive.bind(*values, **params), *args, key=key)
        args = jnp.broadcast_arrays(*[a.astype(self.dtype) for a in args])
        rounded = elementary.rounded(primitive, params, self.fmt, self.mode)
        return rounded(*args, random_bits=self._random_bits(args[0], key))

    def __str__(self) -> str:
        extras = "" if self.mode == "nearest" else f", {self.mode}"
        extras += "" if self.accumulation == "recursive" else f", {self.accumulation}"  # a unit: its str
        extras += f"({self.block_size})" if self.accumulation == "blocked" else ""
        extras += "" if self.accumulator is None else f", accumulate in {self.accumulator}"
        extras += "" if self.kernel == "auto" else f", kernel={self.kernel}"
        extras += "" if self.container is None else f", in {self.container}"
        return f"Emulated({self.fmt}{extras})"



@dataclasses.dataclass(frozen=True)
class Native(Policy):
    """The inputs' own arithmetic, as ``jax.numpy`` writes it: nothing rounded on top, nothing
    converted, no ``jax_enable_x64`` needed.

    A model written on ``boundlab.models.blocks`` with ``Native()`` is the plain program: one
    ``jax.numpy`` primitive per operation of the documented order (``a - b`` one subtraction,
    ``a / b`` one division, sums ``jnp.sum``, products ``lax.dot_general`` at the default
    precision), in float32, bf16 or float64 as its inputs are.  It is what such a model is trained
    or served with natively, and the program that ``boundlab.emulate`` and ``first_order`` take:
    ``emulate(lambda *a: f(*a, arithmetic=Native()), Emulated(fmt))`` rounds each of its operations
    (Model 4.1).  It has no format and no unit roundoff (bounds need a format).  Python numbers
    stay Python numbers (weakly typed: they take the dtype of the array they meet).
    """

    fmt = None
    mode = "nearest"
    accumulation = "native"
    block_size = 32
    accumulator = None

    @property
    def dtype(self) -> np.dtype:
        raise ValueError("Native() computes in its inputs' dtype and has no container of its own")

    @property
    def unit_roundoff(self) -> float:
        raise ValueError("Native() has no format, hence no unit roundoff: bound an Emulated(fmt) or an Exact() "
                         "arithmetic instead")

    def cast(self, x):
        return x

    def round(self, x, key=None):
        return x

    def add(self, x, y, key=None):
        return x + y

    def sub(self, x, y, key=None):
        return x - y

    def mul(self, x, y, key=None):
        return x * y

    def div(self, x, y, key=None):
        return x / y

    def sqrt(self, x, key=None):
        return jnp.sqrt(x)

    def exp(self, x, key=None):
        return jnp.exp(x)

    def apply(self, fn, *args, key=None):
        return fn(*args)

    def sum(self, x, axis: int = -1, key=None):
        return jnp.sum(x, axis=axis)

    def dot_general(self, lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, *, key=None,
                    **kwargs):
        return lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                               preferred_element_type=preferred_element_type, **kwargs)

    def matmul(self, a, b, key=None):
        return jnp.matmul(a, b)

    def einsum(self, subscripts: str, *operands, key=None):
        return jnp.einsum(subscripts, *operands)

    def __str__(self) -> str:
        return "Native()"


Arithmetic = Exact | Emulated | Native
