"""The paper's Figures 1-4 as sweeps over random initialisations.

Every figure runs each initialisation once in float64 and, in lockstep, under ``Emulated`` in
each precision of ``precisions`` (t significand bits with float64's exponent range, as in the
paper's experiments), with every product and partial sum rounded (``accumulation="recursive"``)
unless asked otherwise.  Weights and inputs are first rounded to the narrowest precision, so
that every precision evaluates the same network and one exact forward is the reference of all
(Model 4.1: operands are floating-point numbers).  Runs in which a value overflows (the paper's
softmax has no max shift, so exp can overflow; without the pre-norm activations grow) give NaN:
they are counted per precision and left out of the statistics, never averaged in.

Default precisions (the paper says "various numbers of digits"): t = 12, 16, 20, 24 for
Figures 1, 3 and 4, and t = 16, 24 for Figure 2 (its grid is 27 times the work of Figure 1's
single depth).  At t = 12 the errors of the deep networks saturate at O(1) within a few layers.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from boundlab.arithmetic import Emulated
from boundlab.bounds import theorem_4_30
from boundlab.errors import relative_componentwise, relative_normwise
from boundlab.experiments import three_way
from boundlab.experiments.per_layer import layer_errors
from boundlab.experiments.stats import finite_stats, growth_fit, linear_fit, power_fit
from boundlab.experiments.sweeps import sweep
from boundlab.models.paper import attention, init
from boundlab.verdicts import holds, verdict

KINDS = ("componentwise", "normwise")


@dataclasses.dataclass(frozen=True)
class Common:
    """Knobs every figure has."""

    precisions: tuple[int, ...] = (12, 16, 20, 24)
    accumulation: str = "recursive"
    mode: str = "nearest"
    seed: int = 0
    chunk: int = 128  # on 2 CPU cores, small chunks stay in cache: 128 ran 1.6x faster than 1000
    kernel: str = "auto"  # dot products through the Pallas kernel ("pallas"), XLA ("xla") or by backend

    def arithmetics(self) -> tuple[Emulated, ...]:
        # loops rather than unrolled sums: the same numbers, faster to compile and, vmapped over
        # thousands of initialisations, faster to run
        return tuple(Emulated(f"t{t}", mode=self.mode, accumulation=self.accumulation, unroll=0, kernel=self.kernel)
                     for t in self.precisions)

    def narrow(self, tree):
        """Round to the narrowest precision (then exact in every precision), held in float64."""
        narrowest = Emulated(f"t{min(self.precisions)}")
        return jax.tree.map(lambda a: jnp.asarray(narrowest.cast(a), jnp.float64), tree)

    def check(self):
        """Refuse a configuration that would compute nothing or nonsense, naming the field."""
        if not self.precisions:
            raise ValueError("give at least one precision")
        for name in ("d", "n", "D", "L", "inits", "chunk", "bound_samples", "first_order_samples"):
            value = getattr(self, name, None)
            low = {"d": 2, "bound_samples": 0, "first_order_samples": 0}.get(name, 1)  # d >= 2: the norms and the bounds need it
            if value is not None and (not isinstance(value, int) or value < low):
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if getattr(self, "depths", None) is not None and (not self.depths or min(self.depths) < 1):
            raise ValueError(f"depths must be integers >= 1, got {self.depths!r}")
        for name in ("lambdas", "scales"):
            values = getattr(self, name, None)
            if values is not None and (not values or not all(np.isfinite(v) and v > 0 for v in values)):
                raise ValueError(f"{name} must be finite and positive, got {values!r}")
        if self.mode == "stochastic":
            raise ValueError("the figures use deterministic rounding modes")
        self.arithmetics()  # fails early for unsupported precisions


@dataclasses.dataclass(frozen=True)
class Figure1(Common):
    """Figure 1: d = n = D = 20, L = 40, 5000 figure1 initialisations (layer norm, eq. 7)."""

    d: int = 20
    n: int = 20
    D: int = 20
    L: int = 40
    inits: int = 5000
    norm: str = "layer"
    bound_samples: int = 200
    first_order_samples: int = 200  # the autodiff first-order bound (three-way comparison); 0 skips it

    def quick(self):
        return dataclasses.replace(self, L=20, inits=1000, bound_samples=50, first_order_samples=10)


@dataclasses.dataclass(frozen=True)
class Figure2(Common):
    """Figure 2: Figure 1's network with W_k^T W_q times lambda, errors at L = 10, 15, 20."""

    precisions: tuple[int, ...] = (16, 24)
    d: int = 20
    n: int = 20
    D: int = 20
    depths: tuple[int, ...] = (10, 15, 20)
    lambdas: tuple[float, ...] = tuple(float(v) for v in np.logspace(-1, 1, 9))
    inits: int = 5000
    norm: str = "layer"

    def quick(self):
        return dataclasses.replace(self, d=10, n=10, D=10, inits=150,
                                   lambdas=tuple(float(v) for v in np.logspace(-1, 1, 5)))


@dataclasses.dataclass(frozen=True)
class Figure3(Common):
    """Figure 3: self-attention alone, W_q = W_k = W_v = I, d = n = 10, X ~ N(1, 0.01) times a
    scale, 1000 initialisations per scale."""

    d: int = 10
    n: int = 10
    scales: tuple[float, ...] = tuple(float(v) for v in np.logspace(-1, 1.05, 16))
    inits: int = 1000

    def quick(self):
        return dataclasses.replace(self, inits=200, scales=tuple(float(v) for v in np.logspace(-1, 1.05, 10)))


@dataclasses.dataclass(frozen=True)
class Figure4(Common):
    """Figure 4: d = n = D = 10, variance-0.1 weights, 1000 initialisations; a) layer norm before
    the attention (eq. 7), b) immediately after it.  The paper does not give L; 30 here."""

    d: int = 10
    n: int = 10
    D: int = 10
    L: int = 30
    inits: int = 1000
    norm: str = "layer"
    bound_samples: int = 200

    def quick(self):
        return dataclasses.replace(self, L=15, inits=200, bound_samples=50)


CONFIGS = {1: Figure1, 2: Figure2, 3: Figure3, 4: Figure4}


@dataclasses.dataclass(frozen=True)
class FigureResult:
    """Raw per-initialisation data (NumPy arrays), the fitted ``summary`` and the config."""

    number: int
    config: Common
    data: dict
    summary: dict


def _overflowed(errors):
    """Per initialisation and precision: did any layer overflow (NaN)?"""
    return np.isnan(errors).reshape(errors.shape[0], errors.shape[1], -1).any(axis=-1)


def _theorem_samples(config, scheme, count, progress, norm="layer", **init_kwargs):
    """Theorem 4.30 on the first ``count`` initialisations (the same keys as the sweep); the
    coefficient does not depend on u, the hypotheses (alpha-conditions, n u < 1) do."""

    us = jnp.asarray([2.0**-t for t in config.precisions])

    def one(key, index):
        params, X = config.narrow(init(key, scheme, **init_kwargs))
        # u is traced: one compiled theorem for every precision (only the hypotheses depend on u)
        records = jax.vmap(lambda u: theorem_4_30(params, X, norm=norm, u=u))(us)
        return {"log10_coefficient": records.terms["log10_coefficient"][0],
                "log10_layerwise": records.terms["log10_layerwise"][0], "valid": records.valid}

    return sweep(one, jax.random.key(config.seed), count, min(config.chunk, 100), progress, "Theorem 4.30")


def _bound_summary(samples, errors_componentwise, precisions):
    """Theorem 4.30 (a bound on rho_c of the output) beside the measured componentwise errors, in
    log10 (at depth the bound exceeds float64's range)."""
    out = {}
    for i, t in enumerate(precisions):
        valid = samples["valid"][:, i]
        measured = errors_componentwise[: len(valid), i, -1]
        log_bound = samples["log10_coefficient"] - t * np.log10(2.0)
        log_layerwise = samples["log10_layerwise"] - t * np.log10(2.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_measured = np.log10(measured)
        ok = valid & np.isfinite(measured)
        stats = finite_stats(errors_componentwise[:, i, -1])
        # in log10 (the bound can exceed float64's range); a measured 0 is a finite, held comparison
        check = verdict(np.clip(log_measured, -1e300, None), log_bound,
                        {"Theorem 4.30's hypotheses": valid}, overflow=~np.isfinite(measured))

        def median(values):
            return float(np.median(values[valid])) if valid.any() else float("nan")

        out[f"t{t}"] = {
            "samples": int(len(valid)), "hypotheses_hold": int(valid.sum()),
            "log10_bound_median": median(log_bound), "log10_bound_min": float(np.min(log_bound[valid])) if valid.any()
            else float("nan"), "log10_layerwise_bound_median": median(log_layerwise),
            "measured_mean": float(stats["mean"]), "measured_median": float(stats["median"]),
            "measured_max": float(stats["max"]),
            # a check on no sample is no result: True, False or None (not checked), and the verdict
            # with its reason (boundlab.verdicts): never a vacuous True
            "bound_holds_on_samples": holds(check), "verdict": check["label"],
            "samples_checked": int(ok.sum()),
            "median_log10_bound_over_measured": float(np.median(log_bound[ok] - log_measured[ok])) if ok.any()
            else float("nan"),
        }
    return out


def figure1(config: Figure1 = Figure1(), progress: bool = True) -> FigureResult:
    """Mean, median and 5-95 % band of the error per layer; final-layer distribution; Theorem
    4.30 beside the measured errors."""
    config.check()
    arithmetics = config.arithmetics()
    shape = dict(d=config.d, n=config.n, D=config.D, L=config.L)

    def one(key, index):
        params, X = config.narrow(init(key, "figure1", **shape))
        return layer_errors(params, X, arithmetics, config.norm, format_numbers=True)

    data = sweep(one, jax.random.key(config.seed), config.inits, config.chunk, progress, "Figure 1")
    summary = {"figure": 1, "config": dataclasses.asdict(config), "precisions": {}}
    for i, t in enumerate(config.precisions):
        entry = {"u": 2.0**-t, "overflowed_runs": int(_overflowed(data["normwise"][:, i:i + 1]).sum())}
        for kind in KINDS:
            stats = finite_stats(data[kind][:, i, :])
            fit = growth_fit(stats["mean"])
            entry[kind] = {"growth_rate_log10_per_layer": fit["slope"], "growth_factor_per_layer":
                           fit["growth_factor_per_layer"], "r2": fit["r2"],
                           "median_over_mean_last_layer": float(stats["median"][-1] / stats["mean"][-1]),
                           "last_layer": {k: float(v[-1]) for k, v in stats.items()},
                           "per_layer": {k: v for k, v in stats.items()}}
        summary["precisions"][f"t{t}"] = entry
    widest = summary["precisions"][f"t{max(config.precisions)}"]["normwise"]
    summary["headline"] = {
        "precision": max(config.precisions), "error": "normwise (Frobenius) relative error",
        "growth_rate_log10_per_layer": widest["growth_rate_log10_per_layer"], "r2": widest["r2"],
        "median_over_mean_last_layer": widest["median_over_mean_last_layer"],
        "note": "the widest precision, whose errors saturate last; every precision and the componentwise "
                "error are in 'precisions'. The mean curves are slightly concave (growth slows with depth)."}
    if config.bound_samples:
        samples = _theorem_samples(config, "figure1", min(config.bound_samples, config.inits), progress,
                                   config.norm, **shape)
        summary["theorem_4_30"] = _bound_summary(samples, data["componentwise"], config.precisions)
        data["theorem_4_30_log10_coefficient"] = samples["log10_coefficient"]
        count = min(config.first_order_samples, len(samples["valid"]))
        if count:
            first = three_way.first_order_samples(config, "figure1", count, progress, config.norm, **shape)
            summary["three_way"] = {
                f"t{t}": three_way.summary(first, samples, data["componentwise"][:, i, -1], t, i)
                for i, t in enumerate(config.precisions)}
            data["first_order_log10_coefficient"] = first["log10_coefficient"]
    return FigureResult(1, config, data, summary)


def figure2(config: Figure2 = Figure2(), progress: bool = True) -> FigureResult:
    """Final-layer error against lambda for each depth; log-log slopes."""
    config.check()
    arithmetics = config.arithmetics()
    lambdas = jnp.asarray(config.lambdas)
    grid = len(config.lambdas)
    L = max(config.depths)
    depth_index = jnp.asarray([depth - 1 for depth in config.depths])

    def one(key, index):  # index = init * grid + lambda index; one network of depth max(L) per pair
        lam = lambdas[index % grid]
        init_key = jax.random.fold_in(jax.random.key(config.seed + 1), index // grid)
        params, X = config.narrow(init(init_key, "figure2", d=config.d, n=config.n, D=config.D, L=L, lam=lam))
        errors = layer_errors(params, X, arithmetics, config.norm, format_numbers=True)
        return {kind: errors[kind][:, depth_index] for kind in KINDS}

    raw = sweep(one, jax.random.key(config.seed), config.inits * grid, config.chunk, progress, "Figure 2")
    # (inits, lambdas, precisions, depths)
    data = {kind: raw[kind].reshape(config.inits, grid, len(config.precisions), len(config.depths)) for kind in KINDS}
    summary = {"figure": 2, "config": dataclasses.asdict(config), "precisions": {}}
    for i, t in enumerate(config.precisions):
        entry = {"u": 2.0**-t}
        for j, depth in enumerate(config.depths):
            per_depth = {"overflowed_runs": int(np.isnan(data["normwise"][:, :, i, j]).sum())}
            for kind in KINDS:
                stats = finite_stats(data[kind][:, :, i, j])
                with np.errstate(divide="ignore"):
                    fit = linear_fit(np.log10(config.lambdas), np.log10(stats["mean"]))
                    half = grid // 2
                    low = linear_fit(np.log10(config.lambdas[: half + 1]), np.log10(stats["mean"][: half + 1]))
                    high = linear_fit(np.log10(config.lambdas[half:]), np.log10(stats["mean"][half:]))
                per_depth[kind] = {"loglog_slope": fit["slope"], "r2": fit["r2"],
                                   "loglog_slope_small_lambda": low["slope"], "loglog_slope_large_lambda": high["slope"],
                                   "mean": stats["mean"], "median": stats["median"]}
            entry[f"L{depth}"] = per_depth
        summary["precisions"][f"t{t}"] = entry
    summary["reading"] = _figure2_reading(summary, config)
    return FigureResult(2, config, data, summary)


def _figure2_reading(summary, config):
    """One sentence per precision comparing the slopes with the caption (linear at L = 10,
    quadratic at L = 20)."""
    lines = []
    for name, entry in summary["precisions"].items():
        slopes = ", ".join(f"L = {depth}: {entry[f'L{depth}']['normwise']['loglog_slope']:.2f}" for depth in config.depths)
        lines.append(f"{name}: log-log slope of the mean normwise error in lambda, {slopes} "
                     "(the caption describes about 1 at L = 10 and about 2 at L = 20)")
    return lines


def figure3(config: Figure3 = Figure3(), progress: bool = True) -> FigureResult:
    """Attention alone against the input norm; fit error = a + b ||x||^p."""
    config.check()
    arithmetics = config.arithmetics()
    scales = jnp.asarray(config.scales)
    grid = len(config.scales)

    def one(key, index):
        scale = scales[index % grid]
        init_key = jax.random.fold_in(jax.random.key(config.seed + 1), index // grid)
        params, X = init(init_key, "figure3", d=config.d, n=config.n, D=1, L=1, input_scale=scale)
        X = config.narrow(X)
        I = jnp.eye(config.d, dtype=jnp.float64)  # noqa: E741
        exact = attention(X, I, I, I)
        out = {"norm": jnp.mean(jnp.sqrt(jnp.sum(X * X, axis=0)))}
        componentwise, normwise = [], []
        for a in arithmetics:
            identity = a.cast(I)
            emulated = jnp.asarray(attention(a.cast(X), identity, identity, identity, a), jnp.float64)
            componentwise.append(relative_componentwise(emulated, exact))
            normwise.append(relative_normwise(emulated, exact))
        out["componentwise"], out["normwise"] = jnp.stack(componentwise), jnp.stack(normwise)
        return out

    raw = sweep(one, jax.random.key(config.seed), config.inits * grid, config.chunk, progress, "Figure 3")
    data = {"norm": raw["norm"].reshape(config.inits, grid)}
    for kind in KINDS:
        data[kind] = raw[kind].reshape(config.inits, grid, len(config.precisions))
    norms = np.nanmean(data["norm"], axis=0)
    summary = {"figure": 3, "config": dataclasses.asdict(config), "mean_input_norm": norms, "precisions": {}}
    for i, t in enumerate(config.precisions):
        entry = {"u": 2.0**-t, "overflowed_runs": int(np.isnan(data["normwise"][:, :, i]).sum())}
        for kind in KINDS:
            stats = finite_stats(data[kind][:, :, i])
            with np.errstate(divide="ignore"):
                line = linear_fit(np.log10(norms), np.log10(stats["mean"]))
            entry[kind] = {"fit_a_plus_b_norm_p": power_fit(norms, stats["mean"]),
                           "straight_loglog_slope": line["slope"], "mean": stats["mean"], "std": stats["std"]}
        summary["precisions"][f"t{t}"] = entry
    fit = summary["precisions"][f"t{max(config.precisions)}"]["componentwise"]["fit_a_plus_b_norm_p"]
    summary["headline"] = {"precision": max(config.precisions), "error": "componentwise rho_c", "p": fit["p"],
                           "note": "error = a + b ||x||^p fitted to the mean error against the mean column norm; "
                                   "flat at small norms, then about quadratic (the paper's slope-2 triangle)"}
    return FigureResult(3, config, data, summary)


def figure4(config: Figure4 = Figure4(), progress: bool = True) -> FigureResult:
    """Error per layer with the layer norm a) before and b) immediately after the attention."""
    config.check()
    arithmetics = config.arithmetics()
    shape = dict(d=config.d, n=config.n, D=config.D, L=config.L)

    def one(key, index):
        params, X = config.narrow(init(key, "figure4", **shape))
        before = layer_errors(params, X, arithmetics, config.norm, format_numbers=True)
        after = layer_errors(params, X, arithmetics, config.norm, post_norm=True, format_numbers=True)
        return {kind: jnp.stack([before[kind], after[kind]], axis=0) for kind in KINDS}

    data = sweep(one, jax.random.key(config.seed), config.inits, config.chunk, progress, "Figure 4")  # (N, 2, P, L)
    summary = {"figure": 4, "config": dataclasses.asdict(config), "precisions": {}}
    for i, t in enumerate(config.precisions):
        entry = {"u": 2.0**-t}
        for v, variant in enumerate(("a_norm_before_attention", "b_norm_after_attention")):
            per = {"overflowed_runs": int(np.isnan(data["normwise"][:, v, i, :]).any(axis=-1).sum())}
            for kind in KINDS:
                stats = finite_stats(data[kind][:, v, i, :])
                fit = growth_fit(stats["mean"])
                per[kind] = {"growth_rate_log10_per_layer": fit["slope"], "growth_factor_per_layer":
                             fit["growth_factor_per_layer"], "r2": fit["r2"], "mean": stats["mean"], "std": stats["std"]}
            entry[variant] = per
        summary["precisions"][f"t{t}"] = entry
    widest = summary["precisions"][f"t{max(config.precisions)}"]
    summary["headline"] = {
        "precision": max(config.precisions), "error": "normwise (Frobenius) relative error",
        "growth_rate_log10_per_layer_norm_before": widest["a_norm_before_attention"]["normwise"][
            "growth_rate_log10_per_layer"],
        "growth_rate_log10_per_layer_norm_after": widest["b_norm_after_attention"]["normwise"][
            "growth_rate_log10_per_layer"]}
    if config.bound_samples:
        samples = _theorem_samples(config, "figure4", min(config.bound_samples, config.inits), progress,
                                   config.norm, **shape)
        summary["theorem_4_30_variant_a"] = _bound_summary(samples, data["componentwise"][:, 0], config.precisions)
    return FigureResult(4, config, data, summary)


RUNNERS = {1: figure1, 2: figure2, 3: figure3, 4: figure4}
