"""The FP8 promotion question (``boundlab hardware``): how wrong is a matrix unit's accumulation as
K grows, and how much does DeepSeek-V3's promotion every N_C products buy back?

**K-sweep.** For each K and each input distribution, C = A B (rows x K times K x cols) on Hopper's
wgmma FP8 e4m3 path (``hopper-wgmma-fp8_e4m3-fp32``: F = 13 fractional bits after alignment, 32
products a step, round toward zero into E8M13) without promotion and with promotion every N_C
products into a float32 total (DeepSeek-V3, arXiv 2412.19437, Section 3.3.2), and bf16 on
Ampere's mma and Hopper's wgmma (F = 24 and 25 bits, round toward zero into float32).  The
operands are quantised once (per-tensor scale s = fl32(max |X| / max_finite), X_q = fl(X / s)),
so every configuration multiplies the same format numbers and the error measured is the
accumulation's alone: D against the exact product of the quantised operands (float64; exact up to
float64's last bit).  Per configuration: the componentwise relative error |D - C| / |C|
(maximum and median over the entries) and the normwise ||D - C||_F / ||C||_F, beside the
deterministic bound (``boundlab.matrix_units.dot_error_bound``, entrywise, divided the same way).

Distributions: ``gaussian`` (zero mean, N(0, 1) for A and B), ``uniform`` (positive, U[0, 1)),
``network`` (entries resampled from the paper's Figure 1 network: its layer-normed activations for
A, the entries of W_q, W_k, W_v, A_1, A_2 for B), ``minilm`` (MiniLM-L6's layer-normed hidden
states on the shipped sentences for A, its FFN and attention weights for B; only with the models
extra).  The activations' sign structure (the mean, the spread of exponents) is what the
accumulation sees; K beyond the networks' widths is reached by resampling, which the summary says.

**Whole models.** The paper's network (``figure1`` initialisation) and MiniLM (with the models
extra; not at the quick size) with every elementwise operation in bf16 and their GEMMs on the FP8
unit (per-tensor scaling), without and with promotion every 128, and with DeepSeek-V3's 1 x 128
block scaling: the output's relative error against float64 and the cosine of each token's (each
sentence's embedding) output to the exact one.

Written: ``ksweep.csv`` (one row per distribution, unit, N_C, K), ``models.csv``,
``ksweep.png`` and a strict ``summary.json`` with the promotion result in words and numbers.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from boundlab.output.tables import write_rows
from boundlab.output.strict_json import write_json
from boundlab.formats import get_format
from boundlab.matrix_units import dot, dot_error_bound, get_unit

FP8_UNIT = "hopper-wgmma-fp8_e4m3-fp32"
BF16_UNITS = ("ampere-mma-bf16-fp32", "hopper-wgmma-bf16-fp32")
DISTRIBUTIONS = ("gaussian", "uniform", "network", "minilm")
DEEPSEEK = {"K": 4096, "max_relative_error": 0.02,
            "source": "DeepSeek-V3 technical report (arXiv 2412.19437), Section 3.3.2: FP8 GEMM on H800, "
                      "'a maximum relative error of nearly 2%' for K = 4096"}


@dataclasses.dataclass(frozen=True)
class HardwareStudy:
    """The study's configuration; ``QUICK`` is the CI size."""

    Ks: tuple[int, ...] = (128, 256, 512, 1024, 2048, 4096, 8192, 16384)
    intervals: tuple[int, ...] = (32, 64, 128, 256, 512)  # N_C; "no promotion" is always run
    distributions: tuple[str, ...] = DISTRIBUTIONS
    rows: int = 16
    cols: int = 16
    bf16: bool = True
    models: tuple[str, ...] = ("network", "minilm")
    network_size: int = 20  # d = n = D of the paper's network in the whole-model runs (Figure 1's)
    network_layers: int = 4
    minilm_sentences: int = 16
    minilm_layers: int | None = None  # all six
    seed: int = 0

    def __post_init__(self):
        if not self.Ks or min(self.Ks) < 1:
            raise ValueError(f"Ks must be positive, got {self.Ks}")
        for every in self.intervals:
            get_unit(FP8_UNIT, promote_every=every)  # a one-line error naming the choices
        unknown = set(self.distributions) - set(DISTRIBUTIONS)
        if unknown:
            raise ValueError(f"unknown distributions {sorted(unknown)}; choose from {DISTRIBUTIONS}")
        if self.rows < 1 or self.cols < 1:
            raise ValueError(f"rows and cols must be >= 1, got {self.rows}, {self.cols}")


QUICK = HardwareStudy(Ks=(128, 1024, 4096), intervals=(128,), distributions=("gaussian", "uniform", "network"),
                      rows=8, cols=8, bf16=False, models=("network",), network_size=16, network_layers=2)


def _pool_network(config: HardwareStudy):
    """Activations (layer-normed inputs of each block) and weight entries of a Figure 1 network."""
    from boundlab.models.paper.inits import init
    from boundlab.models.paper.network import forward

    d = 20  # Figure 1's width (wider figure1 networks overflow their softmax, even in float64)
    params, X = init(jax.random.key(config.seed), "figure1", d=d, n=d, D=d, L=8)
    _, inter = forward(params, X, return_intermediates=True)
    acts = np.concatenate([np.ravel(inter.attention_input), np.ravel(inter.perceptron_input)])  # the GEMMs' inputs
    weights = np.concatenate([np.ravel(getattr(params, k)) for k in ("Wq", "Wk", "Wv", "A1", "A2")])
    # a layer whose softmax overflows even in float64 (exp of a score beyond 709: the paper's softmax
    # has no max-shift) has no activations to sample; its NaNs are left out
    return acts[np.isfinite(acts)], weights


def _pool_minilm(config: HardwareStudy):
    """MiniLM-L6's hidden states (every layer's input: the GEMMs' activations; post-norm, so
    layer-normed) on the valid tokens of a few shipped sentences, and its weight matrices' entries."""
    from boundlab import models
    from boundlab.arithmetic import Exact
    from boundlab.models.encoder.network import encode_batch

    model = models.load("minilm")
    ids, valid = models.tokenize(model, models.sentences()[:8])
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), model.params)
    _, states = encode_batch(params, ids, valid, model.config, Exact(), return_layers=True, unroll_layers=False)
    states = np.swapaxes(np.asarray(states), -1, -2)  # (sentences, L + 1, tokens, d)
    acts = states[np.broadcast_to(np.asarray(valid)[:, None, :], states.shape[:3])]
    weights = np.concatenate([np.asarray(v).ravel() for v in params["layers"].values() if np.ndim(v) >= 3])
    return acts.ravel(), weights


def operands(config: HardwareStudy, K: int, distribution: str, pools: dict):
    """(A, B): rows x K and K x cols float64 operands of one distribution."""
    rng = np.random.default_rng([config.seed, K, DISTRIBUTIONS.index(distribution)])
    shape_a, shape_b = (config.rows, K), (K, config.cols)
    if distribution == "gaussian":
        return rng.standard_normal(shape_a), rng.standard_normal(shape_b)
    if distribution == "uniform":
        return rng.uniform(0, 1, shape_a), rng.uniform(0, 1, shape_b)
    acts, weights = pools[distribution]
    return rng.choice(acts, shape_a), rng.choice(weights, shape_b)


def quantise(X, fmt: str):
    """Per-tensor scaled quantisation for FP8: (X_q, s) with s = fl32(max |X| / max_finite),
    X_q = fl(X / s); formats with float32's range (bf16) are rounded unscaled (s = 1)."""
    from boundlab.rounding import round_to

    fmt = get_format(fmt)
    scaled = fmt.emax < 127 and np.any(X)
    s = float(np.float32(np.max(np.abs(X)) / fmt.max_finite)) if scaled else 1.0
    return np.asarray(round_to(jnp.asarray(X / s), fmt)), s


_DOT = jax.jit(dot, static_argnums=0)
_BOUND = jax.jit(dot_error_bound, static_argnums=0)


def _configurations(config: HardwareStudy):
    """(label, unit, N_C or None) of every accumulation the sweep runs."""
    runs = [("fp8 no promotion", get_unit(FP8_UNIT), None)]
    runs += [(f"fp8 N_C={every}", get_unit(FP8_UNIT, promote_every=every), every) for every in config.intervals]
    if config.bf16:
        runs += [(f"bf16 {name.split('-bf16')[0]}", get_unit(name), None) for name in BF16_UNITS]
    return runs


def _errors(D, C, bound):
    """Componentwise (max, median), normwise relative error and the same for the bound."""
    with np.errstate(divide="ignore", invalid="ignore"):
        component = np.abs(D - C) / np.abs(C)
        component_bound = bound / np.abs(C)
    normwise = np.linalg.norm(D - C) / np.linalg.norm(C)
    normwise_bound = np.linalg.norm(bound) / np.linalg.norm(C)
    return {"max": float(np.max(component)), "median": float(np.median(component)), "normwise": float(normwise),
            "bound_max": float(np.max(component_bound)), "bound_median": float(np.median(component_bound)),
            "bound_normwise": float(normwise_bound), "overflow": int(np.sum(~np.isfinite(D)))}


def k_sweep(config: HardwareStudy, progress: bool = True):
    """One row per (distribution, configuration, K) (see the module docstring)."""
    from boundlab.output.progress import ProgressBar

    distributions = list(config.distributions)
    pools = {}
    if "network" in distributions:
        pools["network"] = _pool_network(config)
    if "minilm" in distributions:
        from boundlab import models

        if models.available():
            pools["minilm"] = _pool_minilm(config)
        else:
            distributions.remove("minilm")
    runs = _configurations(config)
    bar = ProgressBar(len(config.Ks) * len(runs), "hardware K-sweep") if progress else None
    rows = []
    for K in config.Ks:
        data = {}
        for dist in distributions:
            A, B = operands(config, K, dist, pools)
            for fmt in ("fp8_e4m3", "bf16") if config.bf16 else ("fp8_e4m3",):
                Aq, sa = quantise(A, fmt)
                Bq, sb = quantise(B, fmt)
                data[dist, fmt] = (Aq, Bq, Aq @ Bq)  # exact: products of <= 8-bit numbers, float64 sums
        for label, unit, every in runs:
            fmt = unit.inputs
            a = np.stack([data[dist, fmt][0] for dist in distributions])[:, :, None, :]
            b = np.stack([data[dist, fmt][1].T for dist in distributions])[:, None, :, :]
            D = np.asarray(_DOT(unit, a, b))
            bound = np.asarray(_BOUND(unit, a, b))
            for i, dist in enumerate(distributions):
                rows.append({"distribution": dist, "configuration": label, "unit": unit.name,
                             "N_C": every if every is not None else 0, "K": K,
                             **_errors(D[i], data[dist, fmt][2], bound[i])})
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return rows, distributions


def whole_models(config: HardwareStudy, progress: bool = True):
    """The paper's network and MiniLM in bf16 with FP8 GEMMs, without and with promotion."""
    from boundlab.arithmetic import Emulated, Exact

    unit = get_unit(FP8_UNIT)

    def policies(fmt):
        return {f"{fmt} (Model 4.1, no unit)": Emulated(fmt, unroll=0),
                f"{fmt} + fp8 GEMMs, no promotion": Emulated(fmt, accumulation=unit.recipe(scaling="tensor"), unroll=0),
                f"{fmt} + fp8 GEMMs, N_C=128": Emulated(fmt, accumulation=unit.recipe(scaling="tensor", promote_every=128),
                                                        unroll=0),
                f"{fmt} + fp8 GEMMs, 1x128 blocks": Emulated(fmt, accumulation=unit.recipe(scaling="block"), unroll=0)}

    rows = []
    for model in config.models:
        if model == "network":
            from boundlab.models.paper.inits import init
            from boundlab.models.paper.network import forward

            d = config.network_size
            params, X = init(jax.random.key(config.seed), "figure1", d=d, n=d, D=d, L=config.network_layers)
            exact = np.asarray(forward(params, X, Exact()))

            def run(policy, params=params, X=X):
                return np.asarray(jax.jit(lambda p, x: forward(p, x, policy))(params, X), np.float64)

            axis, fmt = 0, "t8"  # tokens are columns; bf16's precision with float64's range, as the paper's
            # experiments (bf16's own range overflows this network's softmax: exp of scores beyond 88.7)
        else:
            from boundlab import models

            if not models.available():
                continue
            from boundlab.experiments.real_model import truncated
            from boundlab.models.encoder.network import encode_batch

            loaded = models.load("minilm")
            ids, valid = models.tokenize(loaded, models.sentences()[:config.minilm_sentences])
            cfg, params32 = truncated(loaded, config.minilm_layers)
            params64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params32)
            exact = np.asarray(encode_batch(params64, ids, valid, cfg, Exact(), unroll_layers=False))

            def run(policy, params32=params32, ids=ids, valid=valid, cfg=cfg):
                cast = jax.tree.map(policy.cast, params32)
                return np.asarray(jax.jit(lambda p: encode_batch(p, ids, valid, cfg, policy, unroll_layers=False))(cast),
                                  np.float64)

            axis, fmt = 1, "bf16"  # one embedding per row
        for label, policy in policies(fmt).items():
            start = time.perf_counter()
            out = run(policy)
            cosine = np.sum(out * exact, axis=axis) / (np.linalg.norm(out, axis=axis) * np.linalg.norm(exact, axis=axis))
            rows.append({"model": model, "policy": label, "relative_error": float(np.linalg.norm(out - exact) /
                                                                              np.linalg.norm(exact)),
                         "min_cosine": float(np.min(cosine)), "mean_cosine": float(np.mean(cosine)),
                         "finite": bool(np.all(np.isfinite(out))), "seconds": time.perf_counter() - start})
    return rows


def _summary(config, rows, distributions, model_rows):
    """The promotion result, per distribution, at DeepSeek-V3's K = 4096 (or the nearest K run)."""
    K_ref = min(config.Ks, key=lambda K: abs(math.log2(K) - 12))
    result = {}
    for dist in distributions:
        at = {r["configuration"]: r for r in rows if r["distribution"] == dist and r["K"] == K_ref}
        plain = at["fp8 no promotion"]
        over = [r["K"] for r in rows if r["distribution"] == dist and r["configuration"] == "fp8 no promotion"
                and r["max"] >= DEEPSEEK["max_relative_error"]]
        result[dist] = {
            "K": K_ref,
            "no_promotion": {k: plain[k] for k in ("max", "median", "normwise", "bound_normwise")},
            "promoted": {r["configuration"]: {k: r[k] for k in ("max", "median", "normwise")}
                         for label, r in at.items() if label.startswith("fp8 N_C")},
            "bf16": {label: {k: r[k] for k in ("max", "median", "normwise")} for label, r in at.items()
                     if label.startswith("bf16")},
            "smallest_K_with_max_error_over_2_percent": min(over) if over else None,
        }
    words = []
    for dist, r in result.items():
        promoted = r["promoted"].get("fp8 N_C=128")
        words.append(f"{dist}: at K = {r['K']} the largest componentwise error without promotion is "
                     f"{100 * r['no_promotion']['max']:.3g}% (normwise {100 * r['no_promotion']['normwise']:.3g}%)"
                     + (f", with promotion every 128 {100 * promoted['max']:.3g}% (normwise "
                        f"{100 * promoted['normwise']:.3g}%)" if promoted else ""))
    return {"configuration": dataclasses.asdict(config), "deepseek_v3": DEEPSEEK, "K_reference": K_ref,
            "by_distribution": result, "promotion_result": "; ".join(words), "whole_models": model_rows,
            "distributions_run": distributions}


def plot(rows, distributions, config, path):
    from boundlab.output.pyplot import pyplot

    plt = pyplot()
    labels = [label for label, _, _ in _configurations(config)]
    colours = dict(zip(labels, plt.cm.viridis(np.linspace(0.05, 0.9, len(labels)))))
    fig, axes = plt.subplots(2, len(distributions), figsize=(4.2 * len(distributions) + 2.6, 7.5), layout="constrained",
                             squeeze=False)
    for j, dist in enumerate(distributions):
        for i, (metric, title) in enumerate((("max", "max componentwise"), ("normwise", "normwise"))):
            ax = axes[i, j]
            for label in labels:
                sel = [r for r in rows if r["distribution"] == dist and r["configuration"] == label]
                Ks = [r["K"] for r in sel]
                style = "--" if label.startswith("bf16") else "-"
                ax.plot(Ks, [max(r[metric], 1e-12) for r in sel], style, marker="o", ms=3, color=colours[label],
                        label=label)
                if label in ("fp8 no promotion", "fp8 N_C=128"):
                    ax.plot(Ks, [r[f"bound_{metric}"] for r in sel], ":", color=colours[label],
                            label=f"bound, {label}")
            ax.plot([DEEPSEEK["K"]], [DEEPSEEK["max_relative_error"]], "r*", ms=12, label="DeepSeek-V3: ~2% at K=4096")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{dist}: {title}")
            ax.set_xlabel("K (products per dot product)")
            if j == 0:
                ax.set_ylabel(f"{title} relative error of C")
            ax.grid(alpha=0.3)
    # one legend beside the panels (inside a panel it covered the curves)
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside right center", fontsize=8)
    fig.suptitle(f"C = A B on {FP8_UNIT} (e4m3 operands, per-tensor scaled) and bf16 units: accumulation error")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def hardware(config: HardwareStudy, out_dir, progress: bool = True) -> dict:
    """Run the study and write its files into ``out_dir``; returns their paths and the summary."""
    os.makedirs(out_dir, exist_ok=True)
    start = time.perf_counter()
    rows, distributions = k_sweep(config, progress)
    model_rows = whole_models(config, progress)
    paths = {"csv": os.path.join(out_dir, "ksweep.csv"), "models_csv": os.path.join(out_dir, "models.csv"),
             "png": os.path.join(out_dir, "ksweep.png"), "summary": os.path.join(out_dir, "summary.json")}
    write_rows(paths["csv"], rows)
    write_rows(paths["models_csv"], model_rows)
    plot(rows, distributions, config, paths["png"])
    summary = _summary(config, rows, distributions, model_rows)
    summary["seconds"] = time.perf_counter() - start
    write_json(paths["summary"], summary)
    return paths | {"summary_data": summary}
