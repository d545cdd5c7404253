"""``round_to`` against plain casts and the peers (pychop, gfloat) on one large array."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from boundlab.formats import get_format
from boundlab.rounding import round_to
from boundlab.bench.timing import Timing, mismatches, time_call


def _peer_timings(x: np.ndarray, fmt, reference: np.ndarray, repeats: int) -> list[Timing]:
    """pychop and gfloat on the same array, with their mismatch count against boundlab."""
    timings = []
    try:
        import pychop

        exp_bits = (fmt.emax - fmt.emin + 2).bit_length()
        chop = pychop.Chop(exp_bits=exp_bits, sig_bits=fmt.precision - 1, rmode=1)  # numpy input: numpy backend
        best, first = time_call(lambda: np.asarray(chop(x)), repeats)
        wrong = mismatches(np.asarray(chop(x), dtype=x.dtype), reference)
        timings.append(Timing("pychop.Chop (numpy)", best, first, note=f"{wrong} results differ from MPFR-exact rounding"))
    except ImportError:
        pass
    try:
        import gfloat
        from gfloat import formats as gformats

        info = getattr(gformats, f"format_info_{_GFLOAT_NAMES.get(fmt.name, '')}", None)
        if info is not None:
            best, first = time_call(lambda: gfloat.round_ndarray(info, x), repeats)
            wrong = mismatches(np.asarray(gfloat.round_ndarray(info, x), dtype=x.dtype), reference)
            timings.append(Timing("gfloat.round_ndarray", best, first, note=f"{wrong} results differ from MPFR-exact rounding"))
    except ImportError:
        pass
    return timings


_GFLOAT_NAMES = {"fp16": "binary16", "bf16": "bfloat16", "fp32": "binary32", "tf32": "tf32",
                 "fp8_e5m2": "ocp_e5m2", "fp8_e4m3": "ocp_e4m3"}


def rounding_benchmark(size: int = 10**7, fmt: str = "fp16", repeats: int = 5, seed: int = 0,
                       peers: bool = True) -> list[Timing]:
    """Throughput of ``round_to`` against a jitted ``x * 1.0`` on the same float64 array.

    ``x * 1.0`` is what XLA reduces to a copy: one read and one write of the array, the floor
    for any elementwise pass.  The float32 container and stochastic rounding are timed too.
    """
    fmt = get_format(fmt)
    rng = np.random.default_rng(seed)
    host = rng.standard_normal(size) * np.exp2(rng.integers(-20, 20, size))
    x64 = jnp.asarray(host, dtype=jnp.float64)
    baseline = jax.jit(lambda v: v * 1.0)
    nearest = jax.jit(lambda v: round_to(v, fmt))
    results = []
    base_best, base_first = time_call(lambda: baseline(x64), repeats)
    results.append(Timing("jit(x * 1.0) float64", base_best, base_first, 1.0))

    def add(name, fn, base=base_best, note=""):
        best, first = time_call(fn, repeats)
        results.append(Timing(name, best, first, best / base, note))

    add(f"round_to {fmt} nearest, float64", lambda: nearest(x64))
    toward_zero = jax.jit(lambda v: round_to(v, fmt, "zero"))
    add(f"round_to {fmt} toward zero, float64", lambda: toward_zero(x64))
    key = jax.random.key(seed)
    stochastic = jax.jit(lambda v, k: round_to(v, fmt, "stochastic", key=k))
    add(f"round_to {fmt} stochastic, float64", lambda: stochastic(x64, key), note="includes drawing 64 random bits per element")
    if fmt.fits_float32:
        x32 = x64.astype(jnp.float32)
        base32, first32 = time_call(lambda: baseline(x32), repeats)
        results.append(Timing("jit(x * 1.0) float32", base32, first32, base32 / base_best))
        add(f"round_to {fmt} nearest, float32", lambda: nearest(x32), base=base32, note="ratio to the float32 copy")
    if peers:
        reference = np.asarray(nearest(x64))
        for timing in _peer_timings(host, fmt, reference, max(1, repeats // 2)):
            results.append(dataclasses.replace(timing, ratio=timing.seconds / base_best))
    return results
