"""Arithmetic policies: ``Exact()`` (float64) and ``Emulated(fmt, ...)`` (Model 4.1).

A policy is a frozen, hashable dataclass (a static argument under ``jit``) whose methods
evaluate one kind of operation on arrays, elementwise:

* ``add``, ``sub``, ``mul``, ``div``, ``sqrt``, ``exp``: one rounding of the exact result, as
  in Model 4.1: fl(x op y) = (x op y)(1 + delta), |delta| <= u.
* ``sum`` and ``matmul``: sums and dot products in the policy's accumulation order (see
  ``ACCUMULATIONS``); ``recursive`` is the order that Lemma 4.3 analyses.

How the emulation stays exact.  Each operation is carried out in a container (float32 or
float64) and its result rounded to the format with ``boundlab.rounding``.  Products of two
t-bit numbers are exact in the container when 2t <= p.  For +, -, /, sqrt rounding first to the
container's p bits and then to t bits equals rounding once when p >= 2t + 2 in round-to-nearest
(Figueroa, "When is double rounding innocuous?", 1995); directed and stochastic modes also need
the sticky information of a sum, which an exact TwoSum supplies (the container sum is made
"round to odd", after which any second rounding to t <= p - 2 bits is correct).  Formats are
therefore emulated in float32 when t <= 11 and their range (subnormals included) lies inside
float32's normal range (fp16, fp8), and in float64 when t <= 25 or the format is float64 itself.

XLA's algebraic simplifier would turn x / broadcast(y) into x * (1/y); ``div`` prevents it (see
there).  Known deviations, documented rather than hidden: exp is the container's exp rounded to t bits
(correctly rounded except when the container's own error straddles a rounding boundary,
probability about 2^(t-p)); XLA on the CPU flushes float64 subnormals, so t<N> results below
2^-1022 become zero.

>>> import jax.numpy as jnp
>>> fp16 = Emulated("fp16")
>>> float(fp16.add(jnp.float32(1.0), jnp.float32(2.0**-11)))  # a tie, rounded to even
1.0
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from boundlab._x64 import require_x64
from boundlab.formats import Format, get_format
from boundlab.rounding import MODES, random_bits_for, round_bits, round_scalar

ACCUMULATIONS = ("recursive", "pairwise", "blocked")
"""Orders of sums and dot products.

* ``recursive``: s = (((x_1 + x_2) + x_3) + ...), one rounding per addition (Lemma 4.3).
* ``pairwise``: a balanced tree, levels padded with exact zeros; one rounding per addition.
* ``blocked``: the terms of each block of ``block_size`` (products unrounded, which is exact) are
  added in float64 in index order, rounded to nearest at 53 bits, which is exact while a block's
  terms span fewer than 53 - 2t bits of exponent; the block sum is rounded once, and the block
  results are added recursively, as in tensor-core multiply-accumulate with a wide internal
  accumulator.
"""

_UNROLL_LIMIT = 64  # reductions up to this length are unrolled so XLA fuses them into one loop
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


class _Policy:
    """Operations shared by the policies; subclasses set the fields used here."""

    fmt: Format
    mode: str
    accumulation: str
    block_size: int
    accumulator: Format | None

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
        x = jnp.asarray(x).astype(wide)
        return round_bits(x, self.fmt, "nearest").astype(self.dtype)

    # -- rounding -----------------------------------------------------------------------------
    def _round_to(self, x, fmt: Format, key) -> jax.Array:
        if self.mode == "stochastic":
            if key is None:
                raise ValueError(f"{self} rounds stochastically and needs a PRNG key (pass key=...)")
            return round_bits(x, fmt, "stochastic", random_bits_for(key, x.shape, x.dtype))
        return round_bits(x, fmt, self.mode)

    def round(self, x, key=None) -> jax.Array:
        """fl(x): ``x`` (held in the container) rounded to the format."""
        return self._round_to(x, self.fmt, key)

    def _round_acc(self, x, key) -> jax.Array:
        return self._round_to(x, self.accumulator or self.fmt, key)

    def _needs_sticky_sums(self) -> bool:
        return self.mode != "nearest"

    def _raw_add(self, x, y) -> jax.Array:
        """x + y in the container, made round-to-odd where a directed or stochastic rounding
        follows, so that the second rounding sees on which side of the container result the
        exact sum lies (TwoSum, Knuth: exact without FMA)."""
        total = x + y
        if not self._needs_sticky_sums():
            return total
        y_virtual = total - x
        error = (x - (total - y_virtual)) + (y - y_virtual)
        uint = jnp.uint32 if total.dtype == jnp.float32 else jnp.uint64
        bits = lax.bitcast_convert_type(total, uint)
        inexact = (error != 0) & jnp.isfinite(total)
        below = inexact & (jnp.signbit(error) != jnp.signbit(total))  # |exact| < |total|
        odd = (bits - below.astype(uint)) | jnp.asarray(1, uint)
        return lax.bitcast_convert_type(jnp.where(inexact, odd, bits), total.dtype)

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
        """fl(exp(x)) (the container's exp, rounded once)."""
        return self.round(jnp.exp(x), key)

    # -- reductions -----------------------------------------------------------------------------
    def sum(self, x, axis: int = -1, key=None) -> jax.Array:
        """fl(sum_i x_i) along ``axis`` in the policy's accumulation order.

        Recursive summation satisfies |fl(sum x) - sum x| <= gamma_{k-1} ||x||_1 (Lemma 4.3.1).
        """
        x = jnp.moveaxis(x, axis, -1)
        k = x.shape[-1]
        return self._reduce(lambda j: _take(x, j, -1), k, key, products=False)

    def matmul(self, a, b, key=None) -> jax.Array:
        """fl(a @ b) for a (..., m, k) and b (..., k, n), each entry a dot product of length k.

        Products are rounded once, then summed in the accumulation order; recursively,
        |fl(A x) - A x| <= gamma_k |A| |x| (Lemma 4.3.2).
        """
        if a.shape[-1] != b.shape[-2]:
            raise ValueError(f"matmul: inner dimensions differ, {a.shape} @ {b.shape}")
        k = a.shape[-1]
        return self._reduce(lambda j: _take(a, j, -1)[..., :, None] * _take(b, j, -2)[..., None, :],
                            k, key, products=True)

    def _reduce(self, term: Callable, k: int, key, products: bool) -> jax.Array:
        """Sum the k terms term(0), ..., term(k-1) in the accumulation order.

        ``products``: terms are exact container products that Model 4.1 rounds before they
        are added (except inside a fused block); otherwise terms are already format numbers.
        Reductions up to ``unroll`` terms (default ``_UNROLL_LIMIT``) are unrolled, so that XLA fuses the whole
        recursion into one loop over the output with the running sum in a register.
        """
        if k == 0:
            raise ValueError("cannot sum an empty axis")
        keys = _KeyStream(key)

        def rounded_term(j, term_key):
            return self.round(term(j), term_key) if products else term(j)

        if self.accumulation == "recursive":
            total = self._recursive(rounded_term, k, keys)
        elif self.accumulation == "pairwise":
            total = self._pairwise(rounded_term, k, keys)
        else:
            total = self._blocked(term, k, keys)
        if self.accumulator is not None and self.accumulator != self.fmt:
            total = self.round(total, keys.next())
        return total

    @property
    def _unroll(self) -> int:
        return getattr(self, "unroll", _UNROLL_LIMIT)

    def _add_acc(self, x, y, key):
        return self._round_acc(self._raw_add(x, y), key)

    def _recursive(self, term, k, keys):
        if k <= self._unroll:
            total = term(0, keys.next())
            for j in range(1, k):
                total = self._add_acc(total, term(j, keys.next()), keys.next())
            return total
        term_keys, sum_keys = keys.next(), keys.next()

        def body(j, total):
            return self._add_acc(total, term(j, fold_key(term_keys, j)), fold_key(sum_keys, j))

        return lax.fori_loop(1, k, body, term(0, fold_key(term_keys, 0)))

    def _stacked_terms(self, term, k, keys):
        term_keys = keys.next()
        return jax.vmap(lambda j: term(j, fold_key(term_keys, j)))(jnp.arange(k))

    def _pairwise(self, term, k, keys):
        if k <= self._unroll:
            level = [term(j, keys.next()) for j in range(k)]
            while len(level) > 1:
                pairs = [self._add_acc(level[i], level[i + 1], keys.next()) for i in range(0, len(level) - 1, 2)]
                level = pairs + ([level[-1]] if len(level) % 2 else [])
            return level[0]
        stacked = self._stacked_terms(term, k, keys)
        while stacked.shape[0] > 1:
            if stacked.shape[0] % 2:  # an odd term out waits for the next level, as above
                carried, stacked = stacked[-1:], stacked[:-1]
                stacked = jnp.concatenate([self._add_acc(stacked[0::2], stacked[1::2], keys.next()), carried])
            else:
                stacked = self._add_acc(stacked[0::2], stacked[1::2], keys.next())
        return stacked[0]

    def _blocked(self, term, k, keys):
        size = self.block_size
        require_x64("accumulation='blocked' (block sums are formed in float64)")
        container = self.dtype
        blocks = []
        for start in range(0, k, size):
            block = term(start).astype(jnp.float64)
            for j in range(start + 1, min(start + size, k)):
                block = block + term(j).astype(jnp.float64)  # the fused part: no rounding to t bits
            blocks.append(block)

        def rounded_block(block, key):  # rounded in float64, then held exactly in the container
            return self._round_acc(block, key).astype(container)

        if len(blocks) <= self._unroll:
            total = rounded_block(blocks[0], keys.next())
            for block in blocks[1:]:
                total = self._add_acc(total, rounded_block(block, keys.next()), keys.next())
            return total
        stacked = jnp.stack(blocks)
        return self._recursive(lambda j, key: rounded_block(_take(stacked, j, 0), key), len(blocks), keys)


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


def fold_key(key, index):
    """fold_in(key, index), or None when there is no key (deterministic rounding)."""
    return None if key is None else jax.random.fold_in(key, index)


def _take(x, j, axis):
    if isinstance(j, int):
        return lax.index_in_dim(x, j, axis=axis, keepdims=False)
    return lax.dynamic_index_in_dim(x, j, axis=axis, keepdims=False)


class _KeyStream:
    """Distinct PRNG keys for successive rounding sites, fixed by the order of the trace."""

    def __init__(self, key):
        self.key, self._count = key, 0

    def next(self):
        if self.key is None:
            return None
        self._count += 1
        return jax.random.fold_in(self.key, self._count)


def _check_common(policy, accumulation_choices):
    if policy.accumulation not in accumulation_choices:
        raise ValueError(f"accumulation must be one of {accumulation_choices}, got {policy.accumulation!r}")
    if not isinstance(policy.block_size, int) or policy.block_size < 1:
        raise ValueError(f"block_size must be a positive int, got {policy.block_size!r}")


@dataclasses.dataclass(frozen=True)
class Exact(_Policy):
    """float64 arithmetic: the reference against which emulated errors are measured.

    ``accumulation="native"`` (default) lets XLA evaluate sums and dot products (fastest; the
    order is XLA's).  ``"recursive"``, ``"pairwise"`` or ``"blocked"`` follow the same order as
    ``Emulated`` with every float64 operation rounded once (no fused multiply-add), so
    ``Emulated("t53", accumulation=...)`` agrees with it bit for bit.
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

    def matmul(self, a, b, key=None) -> jax.Array:
        if self.accumulation == "native":
            if a.shape[-1] != b.shape[-2]:
                raise ValueError(f"matmul: inner dimensions differ, {a.shape} @ {b.shape}")
            return jnp.matmul(a, b, precision=lax.Precision.HIGHEST)
        return super().matmul(a, b, key)

    def __str__(self) -> str:
        return "Exact()" if self.accumulation == "native" else f"Exact({self.accumulation})"


@dataclasses.dataclass(frozen=True)
class Emulated(_Policy):
    """Every scalar operation rounded to ``fmt`` (Model 4.1), in a chosen accumulation order.

    Args:
      fmt: a ``Format`` or a name (``"fp16"``, ``"t10"``, ...).
      mode: rounding mode, one of ``boundlab.MODES``; ``"stochastic"`` needs a key in every
        operation (``forward`` threads one through).
      accumulation: one of ``ACCUMULATIONS``; ``"recursive"`` is the paper's.
      block_size: terms per fused block for ``"blocked"``.
      accumulator: optional wider format for sums: products are rounded to ``fmt``, every
        addition to ``accumulator``, and the finished sum once more to ``fmt``.
      unroll: sums of up to this many terms are unrolled (fastest at run time); longer ones, or
        all with ``unroll=0``, run as a loop (much faster to compile).  Deterministic modes give the same
        results bit for bit either way (stochastic rounding draws its bits differently).
    """

    fmt: Format | str
    mode: str = "nearest"
    accumulation: str = "recursive"
    block_size: int = 32
    accumulator: Format | str | None = None
    unroll: int = _UNROLL_LIMIT

    def __post_init__(self):
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
        return _container(self._formats())

    def __str__(self) -> str:
        extras = "" if self.mode == "nearest" else f", {self.mode}"
        extras += "" if self.accumulation == "recursive" else f", {self.accumulation}"
        extras += f"({self.block_size})" if self.accumulation == "blocked" else ""
        extras += "" if self.accumulator is None else f", accumulate in {self.accumulator}"
        return f"Emulated({self.fmt}{extras})"


Arithmetic = Exact | Emulated
