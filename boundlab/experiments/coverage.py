"""How often the probabilistic first-order bound holds, next to the confidence it claims.

``first_order`` states, per output entry, |y_hat - y| <= lambda sqrt(sum_i (dy/dv_i e_i)^2) with
probability >= 1 - 2 exp(-lambda^2 / 2), for independent mean-zero rounding errors (Higham and
Mary 2019) or for stochastic rounding (Connolly, Higham and Mary 2021, no independence needed).
Two measurements on the paper's transformer:

* stochastic rounding: one network, many keys; the fraction of (key, entry) pairs within the
  bound.  The theorem applies: the fraction should be at least the confidence.
* round to nearest: many random networks, one deterministic run each; the fraction of entries
  within.  Here the errors are not random; the bound is a heuristic, and the sums of one sign
  (the softmax denominators: every exp is positive) are flagged as the known failure of the
  independence assumption.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from boundlab.arithmetic import Emulated
from boundlab.emulation import emulate
from boundlab.experiments.sweeps import sweep
from boundlab.sensitivity import first_order
from boundlab.models.paper import init
from boundlab.models.paper.plain import plain_forward


@dataclasses.dataclass(frozen=True)
class Coverage:
    """Sizes of the coverage experiment (Figure 1's initialisation)."""

    d: int = 8
    n: int = 8
    D: int = 8
    L: int = 4
    precision: int = 12
    confidence: float = 0.99
    keys: int = 200  # stochastic rounding: runs of one network
    networks: int = 40  # round to nearest: random networks
    seed: int = 0


def _network(config, key):
    narrow = Emulated(f"t{config.precision}")
    params, X = init(key, "figure1", d=config.d, n=config.n, D=config.D, L=config.L)
    return jax.tree.map(lambda a: jnp.asarray(narrow.cast(a), jnp.float64), (tuple(params), X))


def coverage(config: Coverage = Coverage(), progress: bool = True) -> dict:
    """The measured fractions within the probabilistic (and the deterministic) bound."""
    f = plain_forward
    stochastic = Emulated(f"t{config.precision}", mode="stochastic", unroll=0)
    nearest = Emulated(f"t{config.precision}", unroll=0)
    params, X = _network(config, jax.random.key(config.seed))
    record = first_order(f, stochastic, confidence=config.confidence)(params, X)
    keys = jax.random.split(jax.random.key(config.seed + 1), config.keys)
    runs = jax.jit(jax.vmap(lambda k: emulate(f, stochastic)(params, X, key=k)))(keys)
    errors = np.abs(np.asarray(runs) - np.asarray(record.value))
    finite = np.isfinite(errors)
    stochastic_result = {
        "runs": config.keys, "entries": int(errors[0].size),
        "fraction_within_probabilistic": float(np.mean((errors <= np.asarray(record.probabilistic))[finite])),
        "fraction_within_deterministic": float(np.mean((errors <= np.asarray(record.bound))[finite])),
        "median_probabilistic_over_deterministic": float(np.median(np.asarray(record.probabilistic / record.bound))),
        "error_over_probabilistic": {"median": float(np.median((errors / np.asarray(record.probabilistic))[finite])),
                                     "max": float(np.max((errors / np.asarray(record.probabilistic))[finite]))},
        "overflowed_runs": int(np.sum(~finite.all(axis=(1, 2))))}

    bounded = first_order(f, nearest, confidence=config.confidence)

    def one(key, index):
        p, x = _network(config, key)
        r = bounded(p, x)
        error = jnp.abs(emulate(f, nearest)(p, x) - r.value)
        return {"within_probabilistic": jnp.mean(error <= r.probabilistic),
                "within_deterministic": jnp.mean(error <= r.bound), "finite": jnp.all(jnp.isfinite(error)),
                "same_sign_sites": jnp.sum(r.flags["same-sign sum"])}

    per_network = sweep(one, jax.random.key(config.seed + 2), config.networks, 4, progress, "coverage (nearest)")
    ok = np.asarray(per_network["finite"])
    nearest_result = {
        "networks": config.networks, "overflowed": int(np.sum(~ok)),
        "fraction_within_probabilistic": float(np.mean(np.asarray(per_network["within_probabilistic"])[ok])),
        "fraction_within_deterministic": float(np.mean(np.asarray(per_network["within_deterministic"])[ok])),
        "max_same_sign_sites_per_network": int(np.max(per_network["same_sign_sites"])),
        "note": "rounding to nearest is deterministic: the probabilistic bound is a heuristic here; the "
                "softmax denominators (sums of positive terms) are flagged as the known failure of independence"}
    flagged = [site.label() for site, flag in zip(record.sites, record.flags["same-sign sum"]) if flag]
    return {"config": dataclasses.asdict(config), "claimed_confidence": config.confidence, "lambda": record.lam,
            "confidence_formula": "1 - 2 exp(-lambda^2 / 2) per output entry (Hoeffding)",
            "stochastic": stochastic_result, "nearest": nearest_result, "same_sign_sum_sites": flagged,
            "u": 2.0**-config.precision, "lambda_check": math.isclose(1 - 2 * math.exp(-record.lam**2 / 2),
                                                                    config.confidence)}


def coverage_lines(result) -> list[str]:
    s, n = result["stochastic"], result["nearest"]
    return [f"Probabilistic first-order bound (claimed confidence {result['claimed_confidence']} per entry, "
            f"lambda = {result['lambda']:.2f}), t = {result['config']['precision']}: under stochastic rounding "
            f"{s['fraction_within_probabilistic']:.4f} of {s['runs']} x {s['entries']} (run, entry) pairs lie within "
            f"it (the bound is {s['median_probabilistic_over_deterministic']:.2g} times the deterministic one in the "
            f"median; error / bound: median {s['error_over_probabilistic']['median']:.2g}, largest "
            f"{s['error_over_probabilistic']['max']:.2g}); under round to nearest {n['fraction_within_probabilistic']:.4f} of the entries of "
            f"{n['networks'] - n['overflowed']} networks (a heuristic there: up to "
            f"{n['max_same_sign_sites_per_network']} rounding sites per network are sums of one sign, the softmax "
            f"denominators among them, flagged as the known failure of independence)."]
