"""Tolerances derived from a format's unit roundoff, never scattered literals."""

from boundlab import get_format


def relative_tolerance(fmt="fp64", ulps: int = 2**19) -> float:
    """ulps * u: for float64 with the default, 2^-34 ~ 5.8e-11 (the issues ask for 1e-10)."""
    return ulps * get_format(fmt).unit_roundoff


def relative_difference(a, b):
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = np.maximum(np.abs(a), np.abs(b))
    return np.where(scale > 0, np.abs(a - b) / np.where(scale > 0, scale, 1), 0.0)
