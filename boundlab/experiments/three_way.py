"""The three-way comparison over a figure's initialisations: measured error <= autodiff
first-order bound (``boundlab.first_order``, up to O(u^2)) <= Theorem 4.30 (and its
layer-by-layer composition), all as componentwise relative errors rho_c of the network output.

The first-order coefficient (bound / u, in units of u) depends on the network and the rounding
model but not on u, because the weights and inputs are first rounded to the narrowest
precision: one evaluation serves every precision, as Theorem 4.30's coefficient does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from boundlab.errors import ratio
from boundlab.experiments.sweeps import sweep
from boundlab.sensitivity import first_order
from boundlab.models.paper import init
from boundlab.models.paper.plain import plain_forward
from boundlab.verdicts import holds, verdict


def first_order_samples(config, scheme, count, progress, norm="layer", **init_kwargs):
    """log10 of the first-order coefficient of rho_c of the output, on the first ``count``
    initialisations (the sweep's keys, so sample i is initialisation i)."""
    arithmetic = config.arithmetics()[-1]  # the accumulation order and mode of every precision
    bounded = first_order(lambda p, x: plain_forward(p, x, norm), arithmetic, chunk=50)

    def one(key, index):
        params, X = config.narrow(init(key, scheme, **init_kwargs))
        record = bounded(tuple(params), X)
        coefficient = jnp.max(ratio(record.bound, jnp.abs(record.value))) / arithmetic.unit_roundoff
        return {"log10_coefficient": jnp.log10(coefficient)}

    return sweep(one, jax.random.key(config.seed), count, 2, progress, "first-order bound (autodiff)")


def _ratio_stats(log_ratio):
    """Median and largest ratio over the finite cases, in log10 (Theorem 4.30 is hundreds of
    orders of magnitude away) and, where float64 holds them, as ratios."""
    finite = log_ratio[np.isfinite(log_ratio)]
    if not finite.size:
        return {"log10_median": None, "log10_max": None, "median": None, "max": None, "cases": 0}
    median, worst = float(np.median(finite)), float(np.max(finite))
    linear = lambda v: float(10.0**v) if -300 < v < 300 else None  # noqa: E731
    return {"log10_median": median, "log10_max": worst, "median": linear(median), "max": linear(worst),
            "cases": int(finite.size)}


def summary(first, theorem, measured_last_layer, t, index) -> dict:
    """Per precision t: the ratios measured / first-order and first-order / Theorem 4.30 (and
    / the layer-by-layer composition), median and worst (largest), and whether the ordering
    measured <= first-order (+ its square, the O(u^2) margin) <= layerwise <= theorem held on every
    sample whose hypotheses hold."""
    count = len(first["log10_coefficient"])
    log_u = -t * np.log10(2.0)
    log_first = np.asarray(first["log10_coefficient"]) + log_u
    log_theorem = np.asarray(theorem["log10_coefficient"][:count]) + log_u
    log_layerwise = np.asarray(theorem["log10_layerwise"][:count]) + log_u
    valid = np.asarray(theorem["valid"][:count, index])
    measured = np.asarray(measured_last_layer[:count], dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_measured = np.log10(measured)
    ok = valid & np.isfinite(measured) & np.isfinite(log_first)
    first_bound = 10.0 ** log_first
    ordered = (measured <= first_bound + first_bound**2) & (log_first <= log_layerwise + 1e-9) & \
        (log_layerwise <= log_theorem + 1e-9)
    # the ordering as a check of 0 (ordered) <= 0 on each sample: held, failed or not checked (why)
    check = verdict(np.where(ordered, 0.0, 1.0), np.where(np.isfinite(log_first), 0.0, np.nan),
                    {"Theorem 4.30's hypotheses": valid}, overflow=~np.isfinite(measured))
    return {
        "samples": count, "hypotheses_hold": int(valid.sum()), "samples_checked": int(ok.sum()),
        "log10_first_order_median": float(np.median(log_first[np.isfinite(log_first)]))
        if np.isfinite(log_first).any() else None,
        "measured_over_first_order": _ratio_stats(log_measured - log_first),
        "first_order_over_theorem": _ratio_stats(np.where(valid, log_first - log_theorem, np.nan)),
        "first_order_over_layerwise": _ratio_stats(np.where(valid, log_first - log_layerwise, np.nan)),
        # True, False, or None when no sample was checked (the verdict names why)
        "ordering_holds": holds(check), "verdict": check["label"],
        "measured_within_first_order": float(np.mean(measured[np.isfinite(measured)] <=
                                                     first_bound[np.isfinite(measured)]))
        if np.isfinite(measured).any() else None,
    }
