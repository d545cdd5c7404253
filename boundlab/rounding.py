"""Bit-exact rounding of float32/float64 arrays to any binary format (``round_to``).

The rounding is done on the integer bit pattern or by ``lax.reduce_precision`` (itself integer
operations on the pattern in every XLA backend), never by a cast chain or float arithmetic on
values the container holds as subnormals, because

* float arithmetic on XLA's CPU backend flushes subnormals to zero (even in float64), and
  ``lax.reduce_precision`` flushes the target's subnormals;
* a float64 -> float32 -> target cast chain rounds twice (wrong near ties);
* XLA may fold ``astype`` round trips away under ``jit``.

Neither can be folded or flushed, so the result is the same eagerly and under ``jit``, and
agrees bit for bit with MPFR (``gmpy2``, ``subnormalize=True``) in every deterministic mode; the
tests check this.

Round to nearest into an IEEE-like format is one ``reduce_precision`` plus, below the target's
normal range, an exact fixed-quantum rounding (``_round_nearest_reduce_precision``): an emulated
program rounds after every operation, and the bit-pattern algorithm's forty operations per
rounding were most of what XLA compiled (a two-block NNX model in bf16: 29 s to compile, 5 s
with ``reduce_precision``).  Other modes and formats, and Pallas kernel bodies
(``bit_operations_only``), use the bit-pattern algorithm below.

Algorithm (one fused elementwise pass).  Write the magnitude of a finite input as
sig * 2^c with sig the container significand (hidden bit included) and c the exponent of its
last bit.  The target quantum at x is 2^q with q = e(x) - t + 1 where e(x) = floor(log2 |x|) is
at least emin, and q = emin - t + 1 (subnormals on) or q = emin (off) below that.  The
s = q - c low bits of sig are dropped and the kept part incremented by 0 or 1 as the mode
decides.  When s < p (container precision) the increment is added to the bit pattern directly,
and a carry into the exponent field is exactly the binade change.  When s >= p the input is below
one target quantum and the result is 0 or 2^q.  Overflow is detected by comparing bit patterns
(monotone in the magnitude) with the largest finite value.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from boundlab.runtime.x64 import X64_HINT, x64_enabled
from boundlab.formats import Format, get_format

MODES = ("nearest", "zero", "up", "down", "stochastic")


@dataclasses.dataclass(frozen=True)
class _Container:
    """Bit layout of an IEEE binary container (float32 or float64)."""

    dtype: np.dtype
    uint: type
    width: int  # W, bits in the word
    precision: int  # p, significand bits with the hidden bit
    emin: int  # smallest normal exponent
    emax: int

    @property
    def bias(self) -> int:
        return 1 - self.emin

    def const(self, value: int):
        return self.uint(value)


_CONTAINERS = {
    np.dtype(np.float32): _Container(np.dtype(np.float32), np.uint32, 32, 24, -126, 127),
    np.dtype(np.float64): _Container(np.dtype(np.float64), np.uint64, 64, 53, -1022, 1023),
}


def _float_bits(value: float, container: _Container) -> int:
    """Bit pattern (as a Python int) of a finite or infinite value held in the container."""
    return int(np.array(value, dtype=container.dtype).view(container.uint))


def _leading_bit(sig, cont: _Container):
    """floor(log2(sig)) of an unsigned sig < 2^(p - 1), -1 for 0: W - 1 - clz(sig), or, inside the
    kernels (``bit_operations_only``; Triton has no count-leading-zeros), the exponent field of
    sig converted to the container's float, which holds it exactly (p significand bits)."""
    if not _BIT_OPERATIONS_ONLY.get():
        return (cont.width - 1) - lax.convert_element_type(lax.clz(sig), jnp.int32)
    as_float = lax.bitcast_convert_type(lax.convert_element_type(sig, cont.dtype), cont.uint)
    field = lax.convert_element_type(as_float >> cont.const(cont.precision - 1), jnp.int32)
    return jnp.where(sig == 0, -1, field - cont.bias)


def round_bit_pattern(x: jax.Array, fmt: Format, mode: str, random_bits) -> jax.Array:
    """The rounding itself, on the bit pattern; see the module docstring."""
    cont = _CONTAINERS[np.dtype(x.dtype)]
    U, W, p, t = cont.uint, cont.width, cont.precision, fmt.precision
    u = cont.const
    int32 = jnp.int32

    if mode == "nearest" and not _BIT_OPERATIONS_ONLY.get() and _reduce_precision_rounds_exactly(fmt, cont):
        return _round_nearest_reduce_precision(x, fmt, cont)
    bits = lax.bitcast_convert_type(x, U)
    if mode == "stochastic" and _same_range_as_container(fmt, cont) and t < p:
        # on the signed pattern: a carry out of the significand moves the exponent field only
        # (past the largest finite value it lands on +-inf, IEEE's overflow), never the sign bit
        low_mask = u((1 << (p - t)) - 1)
        rounded = lax.bitcast_convert_type(((bits + (random_bits & low_mask)) >> u(p - t)) << u(p - t), cont.dtype)
        return jnp.where(jnp.isnan(x), x, rounded)  # a NaN's payload could be cleared to inf
    # masks as shifts: no constant >= 2^63, which Pallas's Triton lowering cannot hold in an i64
    sign = (bits >> u(W - 1)) << u(W - 1)
    a = bits ^ sign
    if _same_range_as_container(fmt, cont) and t < p:
        return _round_bits_same_range(a, sign, fmt, mode, cont, random_bits)
    biased_exp = lax.convert_element_type(a >> u(p - 1), int32)
    mantissa = a & u((1 << (p - 1)) - 1)
    is_normal = biased_exp > 0
    sig = jnp.where(is_normal, mantissa | u(1 << (p - 1)), mantissa)
    # Exponent of the last significand bit: c = max(E, 1) - bias - (p - 1).
    last_bit_exp = jnp.maximum(biased_exp, 1) - (cont.bias + p - 1)
    # Exponent of the leading bit, e(x).  For container subnormals its exact value matters only
    # when the target reaches below the container's normal range (float32 holding t<N>).
    if fmt.emin < cont.emin:
        leading = _leading_bit(sig, cont)
        lead_exp = jnp.where(is_normal, biased_exp - cont.bias, (cont.emin - p + 1) + leading)
    else:
        lead_exp = jnp.where(is_normal, biased_exp - cont.bias, cont.emin - 1)
    quantum_floor = fmt.emin - t + 1 if fmt.subnormals else fmt.emin
    quantum_exp = jnp.where(lead_exp >= fmt.emin, lead_exp - t + 1, quantum_floor)
    dropped = quantum_exp - last_bit_exp  # s, may be huge for tiny inputs
    shift = lax.convert_element_type(jnp.clip(dropped, 0, p + 1), U)

    low_mask = (u(1) << shift) - u(1)
    rem = sig & low_mask
    negative = sign != 0
    if mode == "nearest":
        half = (low_mask >> u(1)) + u(1)
        kept_is_odd = ((sig >> shift) & u(1)) != 0
        inc = (rem > half) | ((rem == half) & kept_is_odd)
    elif mode == "zero":
        inc = jnp.zeros_like(negative)
    elif mode == "up":
        inc = (rem != 0) & ~negative
    elif mode == "down":
        inc = (rem != 0) & negative
    elif mode == "stochastic":
        # Round away from zero with probability rem / 2^s, drawn as u < frac with u uniform on
        # W bits and frac = rem / 2^s in W-bit fixed point (exact whenever s <= W).
        wide = jnp.clip(dropped, 0, 2 * W)
        up_shift = lax.convert_element_type(jnp.clip(W - wide, 0, W - 1), U)
        down_shift = lax.convert_element_type(jnp.clip(wide - W, 0, W - 1), U)
        frac = jnp.where(
            wide == 0,
            u(0),
            jnp.where(wide <= W, rem << up_shift, jnp.where(wide - W >= W, u(0), sig >> down_shift)),
        )
        inc = random_bits < frac
    else:  # validated by round_to
        raise ValueError(mode)

    inc_bits = lax.convert_element_type(inc, U)
    quantum_floor_bits = _float_bits(2.0**quantum_floor, cont)
    rounded = jnp.where(
        shift < u(p),
        (a - rem) + (inc_bits << shift),
        inc_bits * u(quantum_floor_bits),
    )

    # Overflow: bit patterns of non-negative floats are ordered like their values.
    container_max = float(np.finfo(cont.dtype).max)
    max_bits = _float_bits(min(fmt.max_finite, container_max), cont)
    inf_bits = _float_bits(np.inf, cont)
    nan_bits = _float_bits(np.nan, cont)
    beyond_container = fmt.max_finite > container_max
    if beyond_container:
        # The format's largest value does not fit: the container can only say inf.
        huge_bits = sat_bits = inf_bits
    else:
        huge_bits = max_bits if fmt.overflow == "saturate" else (inf_bits if fmt.infinities else nan_bits)
        sat_bits = max_bits
    if mode in ("nearest", "stochastic"):
        overflow_bits = u(huge_bits)
    elif mode == "zero":
        overflow_bits = u(sat_bits)
    elif mode == "up":
        overflow_bits = jnp.where(negative, u(sat_bits), u(huge_bits))
    else:
        overflow_bits = jnp.where(negative, u(huge_bits), u(sat_bits))
    rounded = jnp.where(rounded > u(max_bits), overflow_bits, rounded)

    is_finite = biased_exp != (2 * cont.emax + 1)
    if fmt.infinities:
        non_finite = a
    else:
        non_finite = u(nan_bits)
    rounded = jnp.where(is_finite, rounded, non_finite)
    if not fmt.negative_zero:  # FNUZ: a zero is +0 (-0's code is NaN)
        sign = jnp.where(rounded == u(0), u(0), sign)
    return lax.bitcast_convert_type(rounded | sign, cont.dtype)


_BIT_OPERATIONS_ONLY = contextvars.ContextVar("boundlab_bit_operations_only", default=False)


@contextlib.contextmanager
def bit_operations_only():
    """While tracing inside this context, every rounding is the integer bit-pattern algorithm
    (no ``reduce_precision``, no float scaling): for Pallas kernel bodies, whose compiled
    lowerings cover integer operations but not every XLA primitive, and where no float operation
    next to a product may give a backend an FMA to contract.  The same bits either way."""
    token = _BIT_OPERATIONS_ONLY.set(True)
    try:
        yield
    finally:
        _BIT_OPERATIONS_ONLY.reset(token)


def _reduce_precision_rounds_exactly(fmt: Format, cont: _Container) -> bool:
    """Round to nearest into ``fmt`` is ``lax.reduce_precision`` plus a fixed-quantum branch below
    the target's normal range: an IEEE-like format (emax = 2^(e-1) - 1, emin = 1 - emax, gradual
    underflow, overflow to infinity) inside the container, whose subnormal quanta are either the
    container's own (same emin) or so coarse that every container subnormal rounds to zero
    (emin - t >= the container's emin), so no float operation ever sees a container subnormal
    (XLA's CPU backend flushes them).  Not for t = p (see below)."""
    e = (fmt.emax + 1).bit_length()
    ieee_like = (fmt.infinities and fmt.overflow == "inf" and fmt.subnormals and fmt.emax + 1 == 1 << (e - 1)
                 and fmt.emin == 1 - fmt.emax)
    # t = p is no rounding at all: XLA would delete the reduce_precision, and with it the barrier
    # that keeps a product and a sum from being contracted into an FMA (rounded once, not twice)
    fits = fmt.precision < cont.precision and fmt.emax <= cont.emax
    return ieee_like and fits and (fmt.emin == cont.emin or fmt.emin - fmt.precision >= cont.emin)


def _round_nearest_reduce_precision(x, fmt: Format, cont: _Container):
    """Round to nearest, ties to even, with one ``reduce_precision`` (mantissa rounding on the bit
    pattern, overflow to infinity, NaN kept) for |x| >= 2^emin; below it, where
    ``reduce_precision`` would flush the target's subnormals, x is a multiple of the fixed
    quantum q = 2^(emin - t + 1) rounded to nearest even: roundeven(x / q) * q, both scalings
    exact (powers of two, container-normal operands by the condition above).  One HLO
    operation (five more with the subnormal branch) instead of the bit-pattern algorithm's forty:
    emulated programs round at every operation, and this is most of what XLA compiles."""
    t = fmt.precision
    rounded = lax.reduce_precision(x, exponent_bits=(fmt.emax + 1).bit_length(), mantissa_bits=t - 1)
    if fmt.emin == cont.emin:
        return rounded  # the container's subnormals are the target's (same quanta, bit rounding)
    quantum = 2.0 ** (fmt.emin - t + 1)
    scaled = lax.round(x * jnp.asarray(1 / quantum, x.dtype), lax.RoundingMethod.TO_NEAREST_EVEN)
    below = jnp.abs(x) < jnp.asarray(2.0**fmt.emin, x.dtype)
    return jnp.where(below, scaled * jnp.asarray(quantum, x.dtype), rounded)


def _same_range_as_container(fmt: Format, cont: _Container) -> bool:
    return (fmt.emin == cont.emin and fmt.emax == cont.emax and fmt.subnormals and fmt.infinities
            and fmt.overflow == "inf")


def _round_bits_same_range(a, sign, fmt: Format, mode: str, cont: _Container, random_bits=None):
    """Fast path for formats with the container's exponent range (t<N> in float64).

    The number of dropped bits is p - t for every finite input: for container subnormals the
    target quantum 2^(emin - t + 1) is again 2^(p - t) container quanta.  A carry out of the top
    binade lands on the container's infinity, which is IEEE's overflow for every mode, so only
    NaN needs guarding.  Stochastic rounding (in ``round_bit_pattern``, on the signed pattern: the
    same bits of the magnitude) adds p - t uniform random bits r to the magnitude and truncates:
    the carry happens exactly when rem + r >= 2^(p - t), with probability rem / 2^(p - t), away
    from zero (the general path draws the same probability from the top
    bits of the word instead of the low ones).
    """
    u, p, t = cont.const, cont.precision, fmt.precision
    shift = p - t
    low_mask = u((1 << shift) - 1)
    rem = a & low_mask
    negative = sign != 0
    if mode == "nearest":
        kept_is_odd = (a >> u(shift)) & u(1)
        rounded = ((a + (u((1 << (shift - 1)) - 1) + kept_is_odd)) >> u(shift)) << u(shift)
    else:
        inc = {"zero": jnp.zeros_like(negative), "up": (rem != 0) & ~negative,
               "down": (rem != 0) & negative}[mode]
        rounded = (a - rem) + (lax.convert_element_type(inc, cont.uint) << u(shift))
    is_nan = a > u(_float_bits(np.inf, cont))
    rounded = jnp.where(is_nan, a, rounded)
    return lax.bitcast_convert_type(rounded | sign, cont.dtype)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def _round_straight_through(x, fmt, mode, random_bits):
    return round_bit_pattern(x, fmt, mode, random_bits)


@_round_straight_through.defjvp
def _round_straight_through_jvp(fmt, mode, primals, tangents):
    x, random_bits = primals
    x_dot, _ = tangents
    return round_bit_pattern(x, fmt, mode, random_bits), x_dot


def round_bits(x: jax.Array, fmt: Format, mode: str, random_bits=None) -> jax.Array:
    """``round_to`` without argument checks, for callers that have validated them (arithmetic).

    ``x`` is a float32/float64 array whose dtype holds ``fmt``; ``random_bits`` is an unsigned
    array of the container's width (only for ``"stochastic"``).  Straight-through gradient.
    """
    return _round_straight_through(x, fmt, mode, random_bits)


_GOLDEN = 0x9E3779B9


def _fmix32(h):
    """MurmurHash3's 32-bit finaliser: a bijection of uint32 with full avalanche."""
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def _key_words(key):
    """(uint32 words of a typed or raw PRNG key, a function that wraps new words like it)."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        impl = jax.random.key_impl(key)
        return jax.random.key_data(key), lambda words: jax.random.wrap_key_data(words, impl=impl)
    return jnp.asarray(key, jnp.uint32), lambda words: words


def hash_fold_in(key, index):
    """A key for sub-site ``index`` of ``key``: every key word mixed with the index and its
    neighbour by two rounds of ``_fmix32`` (a counter-based hash, not threefry's fold_in).

    Emulated stochastic rounding draws a key per rounded operation; threefry's 20 unrolled rounds
    at each of hundreds of sites made compilation slow (a d = 4, L = 2 forward: 8.7 s against
    1.9 s for round to nearest); the hash costs a few integer operations per site.
    """
    words, wrap = _key_words(key)
    i = jnp.asarray(index).astype(jnp.uint32)
    rolled = jnp.roll(words, 1, axis=-1)
    salt = jnp.arange(1, words.shape[-1] + 1, dtype=jnp.uint32) * jnp.uint32(_GOLDEN)
    return wrap(_fmix32(_fmix32(words ^ (i * jnp.uint32(_GOLDEN) + salt)) + rolled))


_GOLDEN64 = 0x9E3779B97F4A7C15


def _splitmix64(z):
    """SplitMix64's output function (Steele, Lea and Flood 2014; Vigna's constants): a bijection
    of uint64 with full avalanche; over a Weyl sequence of counters it passes BigCrush."""
    z = (z ^ (z >> 30)) * jnp.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> 27)) * jnp.uint64(0x94D049BB133111EB)
    return z ^ (z >> 31)


def random_bits_for(key, shape, dtype) -> jax.Array:
    """Uniform random words for stochastic rounding of an array of ``dtype`` and ``shape``, from a
    counter-based hash of the element index and the key's words, so each rounding site costs a
    few integer operations rather than a threefry block:

    * 32-bit words (float32 containers): ``_fmix32`` chained over the key's words (``hash_fold_in``'s
      mixing);
    * 64-bit words (float64 containers): SplitMix64 of the Weyl sequence seed + (i + 1) * golden
      ratio, the seed being the key's words (folded pairwise through SplitMix64 for keys of more
      than two words): one 64-bit multiply-xorshift chain per element.  It replaced two fmix32
      chains and a third for the high word (with a TwoSum per addition, stochastic rounding was
      3.7x the round-to-nearest forward, ``boundlab bench --only stochastic``; now 1.4x).
    """
    uint = _CONTAINERS[np.dtype(dtype)].uint
    words, _ = _key_words(key)
    if np.dtype(uint).itemsize == 4:
        counter = jnp.arange(math.prod(shape), dtype=jnp.uint32).reshape(shape)
        h = counter * jnp.uint32(_GOLDEN)
        for w in range(words.shape[-1]):
            h = _fmix32(h ^ words[..., w])
        return h.astype(uint)
    wide = words.astype(jnp.uint64)
    if wide.shape[-1] % 2:
        wide = jnp.concatenate([wide, jnp.zeros_like(wide[..., :1])], axis=-1)
    seed = (wide[..., 0] << 32) | wide[..., 1]
    for w in range(2, wide.shape[-1], 2):
        seed = _splitmix64(seed ^ ((wide[..., w] << 32) | wide[..., w + 1]))
    counter = jnp.arange(1, math.prod(shape) + 1, dtype=jnp.uint64).reshape(shape)
    return _splitmix64(counter * jnp.uint64(_GOLDEN64) + seed)


def round_scalar(value: float, fmt: Format) -> float:
    """A Python number rounded to nearest (ties to even) in ``fmt``, on the host, exactly.

    For constants (sqrt(d), d) that must not depend on ``jax_enable_x64``.  Follows the same
    rules as ``round_to``: subnormals, overflow to inf (NaN without infinities) or saturation.
    """
    import math

    value = float(value)
    if value == 0 and not fmt.negative_zero:
        return 0.0
    if not math.isfinite(value) or value == 0:
        return value if (fmt.infinities or not math.isinf(value)) else math.nan
    exponent = math.frexp(abs(value))[1] - 1
    quantum = exponent - fmt.precision + 1
    if exponent < fmt.emin:
        quantum = fmt.emin - fmt.precision + 1 if fmt.subnormals else fmt.emin
    try:
        rounded = math.ldexp(round(math.ldexp(value, -quantum)), quantum)  # round(): ties to even
    except OverflowError:  # carried past float64's largest value
        rounded = math.copysign(math.inf, value)
    rounded = math.copysign(rounded, value)  # round() drops the sign of a zero result
    if rounded == 0 and not fmt.negative_zero:
        return 0.0
    if abs(rounded) > fmt.max_finite:
        big = fmt.max_finite if fmt.overflow == "saturate" else (math.inf if fmt.infinities else math.nan)
        return math.copysign(big, value)
    return rounded


def _check_input(x) -> jax.Array:
    dtype = getattr(x, "dtype", None)
    if dtype is not None and np.dtype(dtype) == np.float64 and not x64_enabled():
        raise TypeError(f"round_to got a float64 array but jax_enable_x64 is off, so JAX would "
                        f"silently compute in float32; {X64_HINT}")
    x = jnp.asarray(x)
    if np.dtype(x.dtype) not in _CONTAINERS:
        raise TypeError(
            f"round_to takes float32 or float64 arrays, got {x.dtype}; convert first "
            f"(x.astype(jnp.float32) is exact for bf16, fp16 and fp8 values)"
        )
    return x


def round_to(x, fmt: Format | str, mode: str = "nearest", key=None) -> jax.Array:
    """Round every element of ``x`` to the format ``fmt``; the result keeps ``x``'s dtype.

    Args:
      x: float32 or float64 array (float64 needs ``jax_enable_x64``).  A float32 array can be
        rounded to any format with ``precision <= 24``.
      fmt: a ``Format`` or a name for ``get_format`` (``"bf16"``, ``"t10"``, ...).
      mode: ``"nearest"`` (ties to even), ``"zero"``, ``"up"`` (toward +inf), ``"down"``
        (toward -inf) or ``"stochastic"`` (away from zero with probability equal to the distance
        to the lower-magnitude neighbour in ulps; exact when the dropped part has at most 32
        (float32) or 64 (float64) bits, else truncated to that many bits).
      key: PRNG key, required by ``"stochastic"`` and used by no other mode; the same key gives
        the same result.

    Round to nearest satisfies fl(x) = x (1 + delta), |delta| <= u = 2^-t, for x in the normal
    range (Section 4.1, eq. (13)); directed modes have |delta| < 2u.  Subnormals, signed zeros,
    infinities, NaN and overflow follow IEEE 754 and the format's ``overflow`` setting (see
    ``boundlab.formats``).  Under ``jax.grad`` the derivative is 1 (straight-through), so
    emulated models can be trained.

    >>> import jax.numpy as jnp
    >>> x = jnp.array([1 + 2.0**-11, 1 + 3 * 2.0**-11, 65519.0, 65520.0, 2.0**-25], jnp.float32)
    >>> [float(v) for v in round_to(x, "fp16")]  # ties to even, overflow, subnormal tie
    [1.0, 1.001953125, 65504.0, inf, 0.0]
    >>> [float(v) for v in round_to(x, "fp16", "up")]
    [1.0009765625, 1.001953125, inf, inf, 5.960464477539063e-08]
    """
    if mode not in MODES:
        raise ValueError(f"unknown rounding mode {mode!r}; use one of {MODES}")
    fmt = get_format(fmt)
    x = _check_input(x)
    cont = _CONTAINERS[np.dtype(x.dtype)]
    if fmt.precision > cont.precision:
        raise ValueError(
            f"format {fmt} has {fmt.precision} significand bits but a {x.dtype} array holds only "
            f"{cont.precision}; pass a float64 array ({X64_HINT})"
        )
    if mode == "stochastic":
        if key is None:
            raise ValueError("mode='stochastic' needs a PRNG key: round_to(x, fmt, 'stochastic', key=jax.random.key(0))")
        random_bits = jax.random.bits(key, x.shape, dtype=cont.uint)
    else:
        if key is not None:
            raise ValueError(f"key is used only by mode='stochastic', not by mode={mode!r}")
        random_bits = None
    return _round_compiled(x, fmt, mode, random_bits, _BIT_OPERATIONS_ONLY.get())


@functools.partial(jax.jit, static_argnums=(1, 2, 4))
def _round_compiled(x, fmt, mode, random_bits, bits_only: bool):
    """``round_to``'s rounding as one compiled program per shape when called eagerly (inlined
    under an outer ``jit``); ``bits_only`` carries ``bit_operations_only`` into the cache key."""
    with bit_operations_only() if bits_only else contextlib.nullcontext():
        return _round_straight_through(x, fmt, mode, random_bits)
