"""Matplotlib figures laid out like the paper's (PNG, Agg backend)."""

from __future__ import annotations

import numpy as np

from boundlab.experiments.stats import log10_of
from boundlab.output.pyplot import pyplot

KIND_LABELS = {"componentwise": "componentwise rho_c", "normwise": "normwise (Frobenius)"}


def plot(result, path) -> None:
    plt = pyplot()
    figure = {1: _figure1, 2: _figure2, 3: _figure3, 4: _figure4}[result.number](plt, result)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)


def _colours(plt, count):
    return plt.cm.viridis(np.linspace(0.1, 0.85, count))


def _figure1(plt, result):
    summary, config = result.summary, result.config
    fig, axes = plt.subplots(2, 3, figsize=(15, 8), layout="constrained")
    layers = np.arange(1, config.L + 1)
    colours = _colours(plt, len(config.precisions))
    for column, kind in enumerate(("componentwise", "normwise")):
        for colour, t in zip(colours, config.precisions):
            stats = summary["precisions"][f"t{t}"][kind]["per_layer"]
            axes[0, column].semilogy(layers, stats["mean"], color=colour, label=f"t = {t}")
            axes[1, column].semilogy(layers, stats["median"], color=colour, label=f"t = {t}")
            axes[1, column].fill_between(layers, stats["p5"], stats["p95"], color=colour, alpha=0.2)
        axes[0, column].set_title(f"mean {KIND_LABELS[kind]} error per layer", fontsize=10)
        axes[1, column].set_title(f"{KIND_LABELS[kind]}: median (line), 5th-95th percentile (band)", fontsize=10)
        for row in range(2):
            axes[row, column].set_xlabel("layer")
            axes[row, column].set_ylabel("relative error (absolute)")
            axes[row, column].legend(fontsize=8)
        final = result.data[kind][:, :, -1]
        ax = axes[column, 2]
        finite = final[np.isfinite(final) & (final > 0)]
        if finite.size:
            bins = np.logspace(np.log10(finite.min()), np.log10(finite.max()), 40)
            for p, (colour, t) in enumerate(zip(colours, config.precisions)):
                values = final[:, p]
                values = values[np.isfinite(values) & (values > 0)]
                ax.hist(values, bins=bins, color=colour, alpha=0.5, label=f"t = {t}")
                ax.axvline(summary["precisions"][f"t{t}"][kind]["last_layer"]["mean"], color="black", lw=1)
            ax.set_xscale("log")
        ax.set_title(f"final layer, {KIND_LABELS[kind]} (black lines: means)", fontsize=10)
        ax.set_xlabel("relative error at the last layer")
        ax.set_ylabel("initialisations")
        overflowed = int(np.sum(~np.isfinite(final[:, 0])))
        if overflowed:
            ax.annotate(f"{overflowed}/{final.shape[0]} runs overflowed (not shown)", (0.02, 0.98),
                        xycoords="axes fraction", va="top", fontsize=8)
        ax.legend(fontsize=8, loc="upper right")  # the overflow note keeps the upper left
    fig.suptitle(f"Figure 1: d = n = D = {config.d}, L = {config.L}, {config.inits} initialisations, "
                 f"{config.accumulation} sums")
    return fig


def _figure2(plt, result):
    summary, config = result.summary, result.config
    fig, axes = plt.subplots(2, len(config.precisions), figsize=(6 * len(config.precisions), 8), squeeze=False,
                             layout="constrained")
    colours = _colours(plt, len(config.depths))
    for column, t in enumerate(config.precisions):
        for row, kind in enumerate(("componentwise", "normwise")):
            ax = axes[row, column]
            notes = []
            for colour, depth in zip(colours, config.depths):
                entry = summary["precisions"][f"t{t}"][f"L{depth}"][kind]
                slope = entry["loglog_slope"]
                slope = "slope undefined" if slope is None or not np.isfinite(slope) else f"slope {slope:.2f}"
                ax.loglog(config.lambdas, entry["mean"], "o-", color=colour, label=f"L = {depth} ({slope})")
                raw = result.data[kind][:, :, column, config.depths.index(depth)]  # (inits, lambdas)
                overflowed = np.sum(~np.isfinite(raw), axis=0)
                for lam, count, mean in zip(config.lambdas, overflowed, entry["mean"]):
                    if count and (mean is None or not np.isfinite(mean)):
                        notes.append(f"L = {depth}, lambda = {lam:.3g}: {count}/{config.inits} overflowed, no mean")
                    elif count:
                        notes.append(f"L = {depth}, lambda = {lam:.3g}: {count}/{config.inits} overflowed (left out)")
            if notes:
                ax.annotate("\n".join(notes[:6]), (0.02, 0.98), xycoords="axes fraction", va="top", fontsize=7)
            ax.set_xlabel("lambda (W_k^T W_q scaled by lambda)")
            ax.set_ylabel("relative error (absolute)")
            ax.set_title(f"t = {t}: mean {KIND_LABELS[kind]} error, last layer", fontsize=10)
            ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"Figure 2: W_k^T W_q scaled by lambda, {config.inits} initialisations per lambda")
    return fig


def _figure3(plt, result):
    summary, config = result.summary, result.config
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), layout="constrained")
    norms = np.asarray(summary["mean_input_norm"])
    colours = _colours(plt, len(config.precisions))
    for ax, kind in zip(axes, ("componentwise", "normwise")):
        for colour, t in zip(colours, config.precisions):
            entry = summary["precisions"][f"t{t}"][kind]
            mean, std = np.asarray(entry["mean"]), np.asarray(entry["std"])
            fit = entry["fit_a_plus_b_norm_p"]
            ax.loglog(norms, mean, "o-", color=colour, label=f"t = {t} (p = {fit['p']:.2f})")
            ax.fill_between(norms, np.maximum(mean - std, mean * 1e-3), mean + std, color=colour, alpha=0.2)
            ax.loglog(norms, fit["a"] + fit["b"] * norms ** fit["p"], "--", color=colour, lw=0.8)
        x0, y0 = norms[len(norms) // 2], np.nanmax(summary["precisions"][f"t{config.precisions[-1]}"][kind]["mean"])
        ax.loglog([x0, 2 * x0, 2 * x0, x0], [y0, y0, 4 * y0, y0], color="grey", label="slope 2 (quadratic growth)")
        ax.set_xlabel("mean column norm ||x_t||_2")
        ax.set_ylabel("relative error (absolute)")
        ax.set_title(f"self-attention: mean {KIND_LABELS[kind]} error, band +- 1 std,\n"
                     "dashed: fitted a + b ||x||^p", fontsize=10)
        ax.legend(fontsize=8)
    fig.suptitle(f"Figure 3: d = n = {config.d}, W = I, X ~ N(1, 0.01) scaled, {config.inits} initialisations")
    return fig


def _figure4(plt, result):
    summary, config = result.summary, result.config
    fig, axes = plt.subplots(2, 2, figsize=(13, 8), layout="constrained")
    layers = np.arange(1, config.L + 1)
    colours = _colours(plt, len(config.precisions))
    for column, (variant, title) in enumerate((("a_norm_before_attention", "a) layer norm before the attention"),
                                               ("b_norm_after_attention", "b) layer norm after the attention"))):
        for row, kind in enumerate(("normwise", "componentwise")):
            ax = axes[row, column]
            for colour, t in zip(colours, config.precisions):
                entry = summary["precisions"][f"t{t}"][variant][kind]
                mean, std = np.asarray(entry["mean"]), np.asarray(entry["std"])
                ax.semilogy(layers, mean, color=colour, label=f"t = {t} (x{entry['growth_factor_per_layer']:.3f}/layer)")
                ax.fill_between(layers, np.maximum(mean - std, mean * 1e-3), mean + std, color=colour, alpha=0.2)
            ax.set_xlabel("layer")
            ax.set_ylabel("relative error (absolute)")
            ax.set_title(f"{title}:\nmean {KIND_LABELS[kind]} error, band +- 1 std (floored at mean/1000)", fontsize=10)
            ax.legend(fontsize=8)
    fig.suptitle(f"Figure 4: d = n = D = {config.d}, L = {config.L}, {config.inits} initialisations")
    return fig


TRAINING_LABELS = {
    "log10_theorem_4_30": "log10 Theorem 4.30 coefficient (printed)",
    "log10_theorem_4_30_free": "log10 Theorem 4.30 coefficient (sigma_min-free)",
    "log10_layerwise_free": "log10 layer-by-layer bound / u (sigma_min-free)",
    "log10_growth": "log10 prod_l G_l (printed, weights only)",
    "log10_growth_free": "log10 prod_l G_l (sigma_min-free)",
    "baek_predictor": "Baek's predictor (sum over layers)",
}


def _run_groups(rows):
    groups = {}
    for row in rows:
        groups.setdefault((row["width"], row["seed"], row["penalised"]), []).append(row)
    return groups


def plot_training(rows, config, out_dir) -> list[str]:
    """trajectories.png (each diagnostic and the measured errors over training, one line per run:
    colour = width, dashed = penalised) and scatter.png (log10 diagnostic vs log10 measured
    normwise error of the first format, one point per checkpoint)."""
    import os

    plt = pyplot()
    groups = _run_groups(rows)
    widths = sorted({key[0] for key in groups})
    colours = dict(zip(widths, _colours(plt, len(widths))))
    from boundlab.analysis.monitoring import error_key

    errors = [error_key(name) for name in config.formats]
    panels = list(TRAINING_LABELS) + errors + ["test_accuracy"]
    columns = 3
    fig, axes = plt.subplots(_ceil_div(len(panels), columns), columns, figsize=(15, 3.6 * _ceil_div(len(panels), columns)),
                             squeeze=False, layout="constrained")
    for axis, name in zip(axes.flat, panels):
        for (width, seed, penalised), group in groups.items():
            steps = [row["step"] for row in group]
            values = [row[name] for row in group]
            values = values if name == "test_accuracy" or name.startswith("log10_") else log10_of(name, values)
            axis.plot(steps, values, color=colours[width], linestyle="--" if penalised else "-", alpha=0.8,
                      label=f"d = {width}" if seed == config.seeds[0] and not penalised else None)
        label = TRAINING_LABELS.get(name, name)
        if name in errors or name == "baek_predictor":
            label = f"log10 {label}"
        axis.set_title(label, fontsize=9)
        axis.set_xlabel("training step")
        axis.set_ylabel("accuracy" if name == "test_accuracy" else "log10")
    for axis in list(axes.flat)[len(panels):]:
        axis.set_visible(False)
    axes.flat[0].legend(fontsize=8, title="solid: plain, dashed: penalised", title_fontsize=8)
    fig.suptitle("Diagnostics on a held-out batch during training (load_digits)")
    trajectories = os.path.join(out_dir, "trajectories.png")
    fig.savefig(trajectories, dpi=100)
    plt.close(fig)

    error = errors[0]
    diagnostics = list(TRAINING_LABELS)
    fig, axes = plt.subplots(2, 3, figsize=(15, 8), squeeze=False, layout="constrained")
    measured = log10_of(error, [row[error] for row in rows])
    for axis, name in zip(axes.flat, diagnostics):
        predictor = log10_of(name, [row[name] for row in rows])
        for width in widths:
            for penalised, marker in ((False, "o"), (True, "x")):
                keep = np.array([row["width"] == width and row["penalised"] == penalised for row in rows])
                axis.scatter(predictor[keep], measured[keep], color=colours[width], marker=marker, s=14,
                             label=f"d = {width}{', penalised' if penalised else ''}")
        axis.set_xlabel(TRAINING_LABELS[name] if name.startswith("log10_") else f"log10 {TRAINING_LABELS[name]}",
                        fontsize=9)
        axis.set_ylabel(f"log10 measured {error}", fontsize=9)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("Each checkpoint of each run: diagnostic vs measured error")
    scatter = os.path.join(out_dir, "scatter.png")
    fig.savefig(scatter, dpi=100)
    plt.close(fig)
    return [trajectories, scatter]


def _ceil_div(a, b):
    return -(-a // b)
