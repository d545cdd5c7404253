# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Rounding pitfalls
#
# Three ways a low-precision "emulation" silently rounds wrongly, each on concrete values,
# with boundlab's `round_to` and MPFR (gmpy2, from the `test` extra) beside it; pychop and
# gfloat appear when the `bench` extra is installed.

# %%
SIZE = "small"  # or "paper": more random values in the last section
count = 10_000 if SIZE == "small" else 1_000_000

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from jax import lax

from boundlab import get_format, round_to

try:
    import gmpy2
except ImportError:
    gmpy2 = None
    print("gmpy2 is not installed (pip install 'boundlab[test]'): the MPFR column is skipped")


def mpfr(value, fmt):
    """Round one float64 to the format with MPFR (round to nearest, subnormals on)."""
    if gmpy2 is None:
        return float("nan")
    t = fmt.precision
    context = gmpy2.context(precision=t, emin=fmt.emin - t + 2, emax=fmt.emax + 1, subnormalize=True)
    return float(context.plus(value))  # gmpy2 converts a Python float exactly


# %% [markdown]
# ## 1. Double rounding through float32
# Casting float64 to bf16 by way of float32 (what `x.astype(jnp.float32).astype(jnp.bfloat16)`
# and ml_dtypes do for a float64 array) rounds twice. 1 + 2^-8 + 2^-30 lies just above the
# midpoint of two bf16 neighbours: rounded once it goes up to 1 + 2^-7; float32 first drops the
# 2^-30 and leaves an exact tie, which goes to the even neighbour, 1.

# %%
x = 1 + 2.0**-8 + 2.0**-30
bf16 = get_format("bf16")
print("boundlab round_to :", float(round_to(np.array([x]), "bf16")[0]))
print("MPFR              :", mpfr(x, bf16))
print("float32 then bf16 :", float(np.array([x]).astype(np.float32).astype(ml_dtypes.bfloat16)[0]))

# %% [markdown]
# ## 2. `lax.reduce_precision` flushes subnormals
# `reduce_precision(x, exponent_bits=5, mantissa_bits=10)` rounds to fp16's precision, but
# values below fp16's smallest normal number 2^-14 are flushed to zero, while IEEE fp16 keeps
# them as subnormals (down to 2^-24).

# %%
fp16 = get_format("fp16")
tiny = np.array([3 * fp16.min_subnormal, 1000 * fp16.min_subnormal, 2.0**-15])
print("values                :", tiny)
print("boundlab round_to     :", np.asarray(round_to(tiny, "fp16")))
print("MPFR                  :", [mpfr(v, fp16) for v in tiny])
print("lax.reduce_precision  :", np.asarray(jax.jit(lambda v: lax.reduce_precision(v, 5, 10))(jnp.asarray(tiny))))
print("numpy float16 cast    :", tiny.astype(np.float16).astype(np.float64))

# %% [markdown]
# ## 3. Peer libraries on random values
# boundlab, MPFR, pychop and gfloat on the same float64 values near fp16 ties. Values that
# differ from MPFR are mis-rounded. (The cells below skip themselves without the `bench` extra.)

# %%
rng = np.random.default_rng(0)
exponents = rng.integers(-24, 15, count)
significands = 1 + (rng.integers(0, 2**10, count) + 0.5 + rng.choice([-1, 0, 1], count) * 2.0**-30) / 2**10
values = significands * 2.0**exponents
reference = np.array([mpfr(v, fp16) for v in values[:2000]])  # MPFR is slow: a subset
ours = np.asarray(round_to(values, "fp16"))
if gmpy2 is not None:
    print("boundlab mismatches against MPFR (2000 values):", int(np.sum(ours[:2000] != reference)))
print("float16 cast mismatches against boundlab:", int(np.sum(values.astype(np.float16).astype(np.float64) != ours)))

# %%
try:
    import pychop

    chop = pychop.Chop(exp_bits=5, sig_bits=10, rmode=1)
    theirs = np.asarray(chop(values), dtype=np.float64)
    print("pychop mismatches against boundlab:", int(np.sum(theirs != ours)), "of", count)
except ImportError:
    print("pychop is not installed (pip install 'boundlab[bench]'): skipped")

# %%
try:
    import gfloat
    from gfloat.formats import format_info_binary16

    theirs = np.asarray(gfloat.round_ndarray(format_info_binary16, values), dtype=np.float64)
    print("gfloat mismatches against boundlab:", int(np.sum(theirs != ours)), "of", count)
except ImportError:
    print("gfloat is not installed (pip install 'boundlab[bench]'): skipped")
