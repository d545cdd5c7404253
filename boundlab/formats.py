"""Binary floating-point formats: precision, exponent range, subnormals, overflow.

A format is the set F = {0} U {+-m 2^(e - t + 1) : 2^(t-1) <= m < 2^t, emin <= e <= emax}
plus, when ``subnormals`` is on, the subnormal numbers +-m 2^(emin - t + 1), 0 < m < 2^(t-1).

Conventions
-----------
* ``precision`` is the paper's t: significand bits *including* the implicit bit, so the unit
  roundoff is u = 2^-t (Section 4.1: u = beta^(1-t) / 2 with beta = 2).
* ``emin`` and ``emax`` are IEEE 754 exponents of normal numbers: the smallest normal number is
  2^emin and the largest finite one 2^emax (2 - 2^(1-t)); fp16 has emin = -14, emax = 15.  The
  paper writes exponents one larger (IEEE single as emin = -125, emax = 128) because its
  significand is scaled into [1/2, 1); MPFR uses that convention too.
* ``infinities=False`` follows the OCP 8-bit "FN" convention (E4M3FN): there are no infinities,
  and the all-ones exponent with the all-ones significand is NaN, so the largest finite value
  is 2^emax (2 - 2^(2-t)) (448 for fp8_e4m3).
* ``negative_zero=False`` (with ``infinities=False``) is the "FNUZ" convention of AMD's and
  Graphcore's 8-bit formats (E4M3FNUZ, E5M2FNUZ: bias 8 and 16): NaN takes the code of -0, so
  there is no negative zero (a zero result is +0) and the whole top binade is finite, the
  largest value 2^emax (2 - 2^(1-t)) (240 for fp8_e4m3fnuz, 57344 for fp8_e5m2fnuz).
* ``overflow`` says what a finite result beyond the largest finite value becomes: ``"inf"``
  (IEEE: round-to-nearest gives +-inf, directed modes give inf or the largest finite value as
  IEEE 754 prescribes; NaN for formats without infinities) or ``"saturate"`` (always the largest
  finite value of the right sign).  Infinite inputs stay infinite (NaN without infinities).
"""

from __future__ import annotations

import dataclasses
import math
import re

_OVERFLOW_CHOICES = ("inf", "saturate")

# float64 bounds every format: results are held in float32 or float64 containers.
_F64_PRECISION, _F64_EMIN, _F64_EMAX = 53, -1022, 1023
_F32_PRECISION, _F32_EMIN, _F32_EMAX = 24, -126, 127


@dataclasses.dataclass(frozen=True)
class Format:
    """A binary floating-point format; frozen and hashable, so usable as a static jit argument.

    >>> fp16 = Format(precision=11, emin=-14, emax=15, name="fp16")
    >>> fp16.unit_roundoff == 2.0**-11, fp16.max_finite, fp16.min_subnormal == 2.0**-24
    (True, 65504.0, True)
    """

    precision: int
    emin: int
    emax: int
    subnormals: bool = True
    infinities: bool = True
    overflow: str = "inf"
    name: str = ""
    negative_zero: bool = True

    def __post_init__(self):
        for field in ("precision", "emin", "emax"):
            if not isinstance(getattr(self, field), int) or isinstance(getattr(self, field), bool):
                raise TypeError(f"Format.{field} must be an int, got {getattr(self, field)!r}")
        if not 2 <= self.precision <= _F64_PRECISION:
            raise ValueError(
                f"Format.precision must be in [2, 53] (float64 holds every emulated value), "
                f"got {self.precision}"
            )
        if self.emin < _F64_EMIN or self.emax > _F64_EMAX:
            raise ValueError(
                f"Format exponent range [{self.emin}, {self.emax}] exceeds float64's "
                f"[{_F64_EMIN}, {_F64_EMAX}]; boundlab holds emulated values in float64 at most"
            )
        if self.emin > self.emax:
            raise ValueError(f"Format.emin ({self.emin}) must not exceed emax ({self.emax})")
        if self.overflow not in _OVERFLOW_CHOICES:
            raise ValueError(f"Format.overflow must be one of {_OVERFLOW_CHOICES}, got {self.overflow!r}")
        if not self.infinities and self.precision < 2:
            raise ValueError("a format without infinities needs precision >= 2")
        if not self.negative_zero and self.infinities:
            raise ValueError("negative_zero=False is the FNUZ convention (NaN in place of -0, no infinities): "
                             "set infinities=False too")

    @property
    def unit_roundoff(self) -> float:
        """u = 2^-t, the bound on the relative error of rounding to nearest (Section 4.1, eq. 13)."""
        return math.ldexp(1.0, -self.precision)

    @property
    def epsilon(self) -> float:
        """Machine epsilon 2^(1-t): the spacing of F just above 1."""
        return math.ldexp(1.0, 1 - self.precision)

    @property
    def max_finite(self) -> float:
        """Largest finite value: 2^emax (2 - 2^(1-t)), or 2^emax (2 - 2^(2-t)) without infinities
        (FN: the top code is NaN), except in FNUZ formats (``negative_zero=False``)."""
        top_ulps = 1 if self.infinities or not self.negative_zero else 2
        return math.ldexp(2.0 - math.ldexp(top_ulps, 1 - self.precision), self.emax)

    @property
    def min_normal(self) -> float:
        """Smallest positive normal value 2^emin."""
        return math.ldexp(1.0, self.emin)

    @property
    def min_subnormal(self) -> float:
        """Smallest positive value: 2^(emin - t + 1), or 2^emin when subnormals are off."""
        if not self.subnormals:
            return self.min_normal
        return math.ldexp(1.0, self.emin - self.precision + 1)

    @property
    def fits_float32(self) -> bool:
        """True when rounding a float32 array to this format can be held in float32.

        Only the precision matters: rounding a float32 value to t <= 24 bits gives a multiple of
        float32's smallest subnormal, whatever the format's exponent range; a result beyond
        float32's largest finite value (possible only for formats with a wider range) is held
        as inf.
        """
        return self.precision <= _F32_PRECISION

    def replace(self, **changes) -> "Format":
        """A copy with some fields changed, e.g. ``fmt.replace(overflow="saturate")``."""
        return dataclasses.replace(self, **changes)

    def __str__(self) -> str:
        return self.name or (
            f"Format(t={self.precision}, emin={self.emin}, emax={self.emax}"
            f"{'' if self.subnormals else ', no subnormals'}"
            f"{'' if self.infinities else ', no infinities'}"
            f"{'' if self.negative_zero else ', no negative zero'}"
            f"{', saturating' if self.overflow == 'saturate' else ''})"
        )


def digits(t: int) -> Format:
    """t significand bits with float64's exponent range, as in the paper's experiments."""
    return Format(precision=t, emin=_F64_EMIN, emax=_F64_EMAX, name=f"t{t}")


_PRESETS = {
    "fp64": Format(53, -1022, 1023, name="fp64"),
    "fp32": Format(24, -126, 127, name="fp32"),
    "tf32": Format(11, -126, 127, name="tf32"),
    "bf16": Format(8, -126, 127, name="bf16"),
    "fp16": Format(11, -14, 15, name="fp16"),
    "fp8_e5m2": Format(3, -14, 15, name="fp8_e5m2"),
    "fp8_e4m3": Format(4, -6, 8, infinities=False, name="fp8_e4m3"),
    "fp8_e5m2fnuz": Format(3, -15, 15, infinities=False, negative_zero=False, name="fp8_e5m2fnuz"),
    "fp8_e4m3fnuz": Format(4, -7, 7, infinities=False, negative_zero=False, name="fp8_e4m3fnuz"),
}

PRESET_NAMES = tuple(_PRESETS)

_DIGITS_PATTERN = re.compile(r"t(\d+)")


def get_format(name: str | Format, *, overflow: str | None = None) -> Format:
    """Look up a format by name: a preset (``fp64``, ``fp32``, ``tf32``, ``bf16``, ``fp16``,
    ``fp8_e5m2``, ``fp8_e4m3``) or ``t<N>`` (N significand bits, float64's exponent range).

    ``overflow="saturate"`` asks for the saturating variant.  A ``Format`` is returned as is.

    >>> get_format("bf16").precision, get_format("t10").emax
    (8, 1023)
    >>> get_format("fp8_e4m3", overflow="saturate").max_finite
    448.0
    """
    if isinstance(name, Format):
        fmt = name
    elif not isinstance(name, str):
        raise TypeError(f"format name must be a str or Format, got {type(name).__name__}")
    elif name in _PRESETS:
        fmt = _PRESETS[name]
    elif (match := _DIGITS_PATTERN.fullmatch(name)) is not None and 2 <= int(match.group(1)) <= 53:
        fmt = digits(int(match.group(1)))
    else:
        raise ValueError(
            f"unknown format {name!r}; use one of {', '.join(PRESET_NAMES)} or t<N> with "
            f"2 <= N <= 53 (N significand bits, float64's exponent range)"
        )
    if overflow is not None and overflow != fmt.overflow:
        fmt = fmt.replace(overflow=overflow, name=f"{fmt.name}_sat" if fmt.name and overflow == "saturate" else fmt.name)
    return fmt


def gamma(n, u):
    """gamma_n = n u / (1 - n u) (Lemma 4.2), and +inf when n u >= 1 (the lemma's hypothesis fails).

    n >= 0 and u >= 0: a negative one raises ValueError (for Python numbers and concrete
    arrays) or gives NaN (under ``jit``, where no check can raise).  Python numbers give a
    float; arrays give an array (usable under jit and vmap).

    >>> gamma(2, 0.25), gamma(4, 0.25)
    (1.0, inf)
    """
    if isinstance(n, (int, float)) and isinstance(u, (int, float)):
        if not (n >= 0 and u >= 0):
            raise ValueError(f"gamma_n needs n >= 0 and u >= 0, got n = {n!r}, u = {u!r}")
        nu = n * u
        return math.inf if nu >= 1 else nu / (1 - nu)
    import jax
    import jax.numpy as jnp
    import numpy as np

    for name, value in (("n", n), ("u", u)):
        if not isinstance(value, jax.core.Tracer) and np.any(~(np.asarray(value) >= 0)):
            raise ValueError(f"gamma_n needs {name} >= 0 everywhere, got {value!r}")
    nu = jnp.asarray(n) * jnp.asarray(u)
    safe = jnp.where(nu < 1, nu, 0)
    valid = (jnp.asarray(n) >= 0) & (jnp.asarray(u) >= 0)
    return jnp.where(valid, jnp.where(nu < 1, safe / (1 - safe), jnp.inf), jnp.nan)
