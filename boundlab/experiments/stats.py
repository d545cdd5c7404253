"""Statistics of the figures: NaN-aware summaries and the fits reported in ``summary.json``."""

from __future__ import annotations

import math
import warnings

import numpy as np


def finite_stats(errors: np.ndarray, axis: int = 0) -> dict:
    """mean, std, median, 5th/95th percentiles and max over ``axis``, ignoring NaN (overflowed
    runs, counted separately).  inf (a support mismatch) stays in and makes the mean inf."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return {"mean": np.nanmean(errors, axis=axis), "std": np.nanstd(errors, axis=axis),
                "median": np.nanmedian(errors, axis=axis), "p5": np.nanpercentile(errors, 5, axis=axis),
                "p95": np.nanpercentile(errors, 95, axis=axis), "max": np.nanmax(errors, axis=axis)}


def linear_fit(x, y) -> dict:
    """Least-squares line y = slope x + intercept with its R^2 (finite points only)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 2:
        return {"slope": math.nan, "intercept": math.nan, "r2": math.nan, "points": int(len(x))}
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    total = np.sum((y - y.mean()) ** 2)
    r2 = 1 - np.sum(residual**2) / total if total > 0 else 1.0
    return {"slope": float(slope), "intercept": float(intercept), "r2": float(r2), "points": int(len(x))}


def growth_fit(mean_per_layer) -> dict:
    """Slope of log10(mean error) against the layer index (decades per layer), its R^2, and the
    per-layer growth factor 10^slope."""
    layers = np.arange(1, len(mean_per_layer) + 1)
    with np.errstate(divide="ignore"):
        fit = linear_fit(layers, np.log10(mean_per_layer))
    fit["growth_factor_per_layer"] = 10 ** fit["slope"] if math.isfinite(fit["slope"]) else math.nan
    return fit


def power_fit(x, y) -> dict:
    """Fit y = a + b x^p (a, b >= 0) in log space: the error is flat at small norms (a, the
    rounding floor) and grows like x^p beyond; returns a, b, p and the R^2 of log y."""
    from scipy.optimize import least_squares

    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(x) & np.isfinite(y) & (y > 0) & (x > 0)
    x, y = x[keep], y[keep]
    if len(x) < 4:
        return {"a": math.nan, "b": math.nan, "p": math.nan, "r2_log": math.nan, "points": int(len(x))}
    logy = np.log(y)

    def residual(theta):
        log_a, log_b, p = theta
        return np.logaddexp(log_a, log_b + p * np.log(x)) - logy

    start = [np.log(y.min()), np.log(y.max()) - 2 * np.log(x.max()), 2.0]
    result = least_squares(residual, start, bounds=([-np.inf, -np.inf, 0.0], [np.inf, np.inf, 10.0]))
    log_a, log_b, p = result.x
    total = np.sum((logy - logy.mean()) ** 2)
    r2 = 1 - np.sum(result.fun**2) / total if total > 0 else 1.0
    return {"a": float(np.exp(log_a)), "b": float(np.exp(log_b)), "p": float(p), "r2_log": float(r2),
            "points": int(len(x))}


def log10_of(name: str, values) -> np.ndarray:
    """log10 of a diagnostic's values; names starting with ``log10_`` hold logarithms already
    (log10 of 0 is -inf and of a negative or NaN value NaN, without warnings)."""
    values = np.asarray(values, np.float64)
    if name.startswith("log10_"):
        return values
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log10(values)


