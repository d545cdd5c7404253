"""The mixed-precision advisor: which operations to recompute in a higher format.

A site is one operation of the traced model (one equation: a layer's query projection, its
softmax denominators, ...; ``boundlab.emulation.Site``); its cost is the number of rounded
operations it performs (``Site.operations``).  Three orders of the sites:

* ``"first-order"``: by the site's first-order contribution to the output's error bound
  (``FirstOrder.contributions`` summed over the output entries: sum_j |dy_j/dv_i| u |v_i|);
* ``"first-order/cost"``: by that contribution per rounded operation (the knapsack greedy: the
  most error removed per operation recomputed);
* ``"random"``: a random permutation (seeded);
* ``"activations"``: by the largest magnitude of the site's exact result (a common heuristic);

and, for a fraction f, the shortest prefix of an order whose cost reaches f of the total is
recomputed in the high format while the rest stays in the low one (``boundlab.emulation.
mixed_by_mask``).  The measured relative error of the output against f is the advisor's curve,
between the all-low and the all-high ends; ``reduction_fraction`` reads off where it first
falls 10x (100x) below the all-low error.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from boundlab.emulation.api import interpret
from boundlab.emulation.interpreter import Handler

STRATEGIES = ("first-order", "first-order/cost", "random", "activations")


class _Recorder(Handler):
    """Exact evaluation that records max |result| of every rounding site."""

    def __init__(self, arithmetic):
        super().__init__(arithmetic)
        self.magnitudes = []

    def policy(self, site, key):
        return _Recording(self.arithmetic, self.magnitudes)


class _Recording:
    def __init__(self, base, magnitudes):
        self.base, self.magnitudes = base, magnitudes
        self.dtype = base.dtype

    def __getattr__(self, name):
        method = getattr(self.base, name)

        def call(*args, **kwargs):
            out = method(*args, **kwargs)
            self.magnitudes.append(jnp.max(jnp.abs(out)) if out.size else jnp.zeros((), out.dtype))
            return out

        return call


def site_magnitudes(f, arithmetic, *args) -> np.ndarray:
    """max |v| of each site's result in an evaluation of ``f(*args)`` under ``arithmetic``
    (``Exact()``: the exact activations)."""

    def run(states):
        recorder = _Recorder(arithmetic)
        interpret(f, recorder, states, None)
        return jnp.stack(recorder.magnitudes)

    return np.asarray(jax.jit(run)(args), np.float64)


def order(strategy: str, contributions, magnitudes, seed: int = 0, costs=None) -> np.ndarray:
    """Site indices, most deserving of the high format first (``costs``: operations per site, for
    ``"first-order/cost"``)."""
    if strategy == "first-order":
        return np.argsort(-np.asarray(contributions), kind="stable")
    if strategy == "first-order/cost":
        return np.argsort(-np.asarray(contributions) / np.maximum(np.asarray(costs, np.float64), 1), kind="stable")
    if strategy == "activations":
        return np.argsort(-np.asarray(magnitudes), kind="stable")
    if strategy == "random":
        return np.random.default_rng(seed).permutation(len(contributions))
    raise ValueError(f"unknown strategy {strategy!r}; use {STRATEGIES}")


def prefix_mask(ranking, costs, fraction: float) -> tuple[np.ndarray, float]:
    """(mask over sites, cost fraction actually recomputed): the shortest prefix of ``ranking``
    whose cost reaches ``fraction`` of the total."""
    costs = np.asarray(costs, np.float64)
    cumulative = np.cumsum(costs[ranking]) / costs.sum()
    count = int(np.searchsorted(cumulative, fraction - 1e-12) + 1) if fraction > 0 else 0
    count = min(count, len(ranking))
    mask = np.zeros(len(costs), bool)
    mask[ranking[:count]] = True
    return mask, float(costs[mask].sum() / costs.sum())


def sweep(error, contributions, costs, fractions, strategies=STRATEGIES, magnitudes=None, seed: int = 0,
          step=None) -> dict:
    """The advisor's curves: ``error(mask)`` (the measured output error with the masked sites in the
    high format) at the all-low and all-high ends and, per strategy of ``strategies``, at the
    shortest prefix of its order reaching each of ``fractions`` of the cost.  ``step(what)`` is
    called after each evaluation (a progress bar).  Returns ``all_low``, ``all_high`` and
    ``curves`` (strategy -> points: target, fraction, sites, error)."""
    n_sites = len(costs)
    tick = step or (lambda what: None)
    all_low = error(np.zeros(n_sites, bool))
    tick("all-low end")
    all_high = error(np.ones(n_sites, bool))
    tick("all-high end")
    curves = {}
    for strategy in strategies:
        ranking = order(strategy, contributions, magnitudes, seed, costs)
        points = []
        for fraction in fractions:
            mask, actual = prefix_mask(ranking, costs, fraction)
            points.append({"target": fraction, "fraction": actual, "sites": int(mask.sum()), "error": error(mask)})
            tick(f"advisor {strategy} {fraction:g}")
        curves[strategy] = points
    return {"all_low": all_low, "all_high": all_high, "curves": curves}


def reduction(swept: dict, strategies, factor: float):
    """``reduction_fraction`` on the curve of the points of ``strategies`` between the two ends of a
    ``sweep``."""
    points = [(p["fraction"], p["error"]) for strategy in strategies for p in swept["curves"][strategy]]
    curve = [(0.0, swept["all_low"])] + points + [(1.0, swept["all_high"])]
    return reduction_fraction(curve, swept["all_low"], factor)


def reduction_fraction(curve, low_error: float, factor: float):
    """The smallest recomputed fraction below 1 on ``curve`` ((fraction, error) pairs) whose error
    is at most low_error / factor, or None when no point reaches it short of recomputing
    everything."""
    hits = [f for f, e in sorted(curve) if f < 1 and e is not None and np.isfinite(e) and e <= low_error / factor]
    return hits[0] if hits else None
