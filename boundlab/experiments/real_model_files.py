"""The real-model study's files: ``summary.json`` with the headline numbers, the tables as CSV,
the per-layer and advisor plots, and the lines the command prints."""

from __future__ import annotations


import numpy as np

from boundlab.output.tables import write_table

def _all_hold(bounds):
    """True when every layer's check held, False when one failed, None when one was not checked."""
    values = [b["holds"] for b in bounds]
    return False if False in values else None if None in values or not values else True


def _bounds_verdict(bounds) -> str:
    counts = {label: sum(b["holds"] is value for b in bounds)
              for label, value in (("held", True), ("failed", False), ("not checked", None))}
    if counts["failed"]:
        return f"failed at {counts['failed']} of {len(bounds)} layers"
    if counts["not checked"]:
        return f"not checked at {counts['not checked']} of {len(bounds)} layers (" + "; ".join(
            b["verdict"] for b in bounds if b["holds"] is None) + ")"
    return f"held at every one of {len(bounds)} layers" if bounds else "not checked (no bound computed)"


def summary(result: dict) -> dict:
    """The headline numbers (what ``summary.json`` holds besides the tables)."""
    adv = result["advisor"]
    embeddings = {f"{e['format']} {e['variant']}": {"embedding_error_median": e["embedding_error"]["median"],
                                                      "embedding_error_max": e["embedding_error"]["max"],
                                                      "cosine_min": e["cosine"]["min"],
                                                      "nonfinite_entries": e["nonfinite_entries"]}
                  for e in result["embeddings"]}
    ranks = sorted({int(h["rank"]) for h in result["heads"]})
    d = result["model"]["config"]["d"]
    return {
        "model": result["model"]["name"], "sentences": len(result["sentences"]),
        "tokens": {"max": max(result["tokens"]), "mean": float(np.mean(result["tokens"]))},
        "embeddings": embeddings,
        "first_order_bound_holds": _all_hold(result["bounds"]),
        "first_order_bound_verdict": _bounds_verdict(result["bounds"]),
        "embedding_bound": {f"{b['format']} {b['variant']}": {k: b[k] for k in ("measured", "first_order",
                                                                               "probabilistic", "k_u")}
                            for b in result["bounds"] if b["layer"] == result["model"]["config"]["layers"]},
        "heads": {"rank_WkT_Wq": ranks, "d": d,
                  "theorem_4_30": (f"rank(W_k^T W_q) = {ranks} < d = {d} in every head: sigma_min(W_k^T W_q) = 0, "
                                   "so Remark 4.18's factor and the printed Theorem 4.30 chain are infinite; the "
                                   "sigma_min-free score bound and the autodiff first-order bound stay finite")
                  if max(ranks) < d else "W_k^T W_q has full rank in some head",
                  "softmax_kappa_cc_max": max(h["softmax_kappa_cc"] for h in result["heads"]),
                  "attention_kappa_c_inf_max": max(h["attention_kappa_c_inf"] for h in result["heads"]),
                  "score_bound_relative_max": max(h["score_bound_relative"] for h in result["heads"])},
        "advisor": {k: adv[k] for k in ("format", "variant", "high", "all_low", "all_high", "fraction_for_10x",
                                        "fraction_for_100x")},
    }


def _fraction(value) -> str:
    return "none below 1 (only recomputing everything)" if value is None else f"{value:.3g}"


def headline_lines(headline: dict) -> list[str]:
    """The summary in a few sentences (what the CLI prints and index.md lists)."""
    def number(x, spec=".3g"):
        return "n/a (non-finite)" if x is None else format(x, spec)

    lines = []
    for key, e in headline["embeddings"].items():
        lines.append(f"{key}: embedding error median {number(e['embedding_error_median'])} (max "
                     f"{number(e['embedding_error_max'])}), min cosine {number(e['cosine_min'], '.6f')}, "
                     f"non-finite entries {e['nonfinite_entries']}")
    for key, b in headline["embedding_bound"].items():
        lines.append(f"first-order bound ({key}, embedding): {number(b['first_order'])} (probabilistic "
                     f"{number(b['probabilistic'])}) vs measured {number(b['measured'])}; k u = {number(b['k_u'])}")
    if "first_order_bound_verdict" in headline:
        lines.append(f"first-order bound at every layer: {headline['first_order_bound_verdict']}")
    heads = headline["heads"]
    lines.append(f"heads: {heads['theorem_4_30']}; softmax kappa_cc <= {number(heads['softmax_kappa_cc_max'])}, "
                 f"attention kappa_c,inf <= {number(heads['attention_kappa_c_inf_max'])}")
    adv = headline["advisor"]
    lines.append(f"advisor ({adv['format']} {adv['variant']} + {adv['high']}): all-low {number(adv['all_low'])}, "
                 f"all-high {number(adv['all_high'])}; 10x at a recomputed fraction of "
                 f"{_fraction(adv['fraction_for_10x'])}, 100x at {_fraction(adv['fraction_for_100x'])}")
    return lines


def write(result: dict, out_dir) -> dict:
    """CSV tables, ``layers.png``, ``advisor.png`` and ``summary.json`` in ``out_dir``."""
    import os

    from boundlab.output.strict_json import write_json

    os.makedirs(out_dir, exist_ok=True)
    write_table(os.path.join(out_dir, "layers.csv"),
         ["format", "variant", "layer", "state_error_median", "state_error_max", "pooled_error_median", "pooled_error_max"],
         ([r["format"], r["variant"], r["layer"], r["state_error"]["median"], r["state_error"]["max"],
           r["pooled_error"]["median"], r["pooled_error"]["max"]] for r in result["runs"]))
    write_table(os.path.join(out_dir, "embeddings.csv"), ["format", "variant", "sentence", "relative_error", "cosine"],
         ([e["format"], e["variant"], i, err, cos] for e in result["embeddings"]
          for i, (err, cos) in enumerate(zip(e["per_sentence_error"], e["per_sentence_cosine"]))))
    bound_keys = ["format", "variant", "layer", "measured", "first_order", "probabilistic", "holds", "verdict", "k_u"]
    write_table(os.path.join(out_dir, "bounds.csv"), bound_keys, ([b[k] for k in bound_keys] for b in result["bounds"]))
    head_keys = [k for k in result["heads"][0]]
    write_table(os.path.join(out_dir, "heads.csv"), head_keys, ([h[k] for k in head_keys] for h in result["heads"]))
    adv = result["advisor"]
    write_table(os.path.join(out_dir, "advisor.csv"), ["strategy", "target", "fraction", "sites", "error"],
         [["all-low", 0.0, 0.0, 0, adv["all_low"]], ["all-high", 1.0, 1.0, adv["sites"], adv["all_high"]]] +
         [[s, p["target"], p["fraction"], p["sites"], p["error"]] for s, points in adv["curves"].items() for p in points])
    plot_layers(result, os.path.join(out_dir, "layers.png"))
    plot_advisor(result, os.path.join(out_dir, "advisor.png"))
    headline = summary(result)
    write_json(os.path.join(out_dir, "summary.json"), {"summary": headline} | {k: v for k, v in result.items()})
    return headline


def plot_layers(result: dict, path) -> None:
    """Relative error of each layer's pooled state per format and variant, with the bound."""
    from boundlab.output.pyplot import pyplot

    plt = pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(13, 4.5), layout="constrained")
    keys = sorted({(r["format"], r["variant"]) for r in result["runs"]}, key=lambda k: (k[0], k[1]))
    colours = plt.cm.viridis(np.linspace(0.05, 0.9, len(keys)))
    for (fmt, variant), colour in zip(keys, colours):
        rows = [r for r in result["runs"] if r["format"] == fmt and r["variant"] == variant]
        layers = [r["layer"] for r in rows]
        for ax, kind in zip(axes, ("state_error", "pooled_error")):
            values = [np.nan if r[kind]["median"] is None else r[kind]["median"] for r in rows]
            ax.semilogy(layers, values, "o-", color=colour, label=f"{fmt} {variant}", ms=3)
    for variant, marker in zip(sorted({b["variant"] for b in result["bounds"]}), ("x", "+", "d", "*")):
        bounds = [b for b in result["bounds"] if b["variant"] == variant]
        fmt = bounds[0]["format"]
        axes[1].semilogy([b["layer"] for b in bounds], [b["first_order"] for b in bounds], "k--", marker=marker,
                         label=f"first-order bound ({fmt} {variant})")
        axes[1].semilogy([b["layer"] for b in bounds], [b["probabilistic"] for b in bounds], "k:", marker=marker,
                         label=f"probabilistic ({fmt} {variant})")
    axes[0].set_title("hidden state (median over sentences)")
    axes[1].set_title("mean-pooled state")
    for ax in axes:
        ax.set_xlabel("layer (0: embeddings)")
        ax.set_ylabel("relative error (2-norm)")
    figure.legend(*axes[1].get_legend_handles_labels(), fontsize=7, loc="outside right upper")
    figure.suptitle(f"{result['model']['name']}: error per layer on {len(result['sentences'])} sentences")
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_advisor(result: dict, path) -> None:
    """Measured embedding error against the fraction of operations recomputed in the high format."""
    from boundlab.output.pyplot import pyplot

    plt = pyplot()
    adv = result["advisor"]
    figure, ax = plt.subplots(figsize=(6.5, 4.2), layout="constrained")
    styles = {"first-order": "o-", "first-order/cost": "D-", "random": "s--", "activations": "^:"}
    for strategy, points in adv["curves"].items():
        xs = [0.0] + [p["fraction"] for p in points] + [1.0]
        ys = [adv["all_low"]] + [p["error"] for p in points] + [adv["all_high"]]
        ax.loglog(np.maximum(xs, 1e-4), ys, styles.get(strategy, "o-"), label=strategy, ms=4)
    for factor, style in ((10, "-."), (100, ":")):
        ax.axhline(adv["all_low"] / factor, color="grey", ls=style, lw=0.8, label=f"all-{adv['format']} / {factor}")
    ax.axhline(adv["all_high"], color="k", lw=0.8, label=f"all-{adv['high']}")
    ax.set_xlabel(f"fraction of rounded operations in {adv['high']} (0 plotted at 1e-4)")
    ax.set_ylabel("embedding relative error")
    ax.set_title(f"mixed-precision advisor: {adv['format']} ({adv['variant']}) + {adv['high']}")
    ax.legend(fontsize=7)
    figure.savefig(path, dpi=100)
    plt.close(figure)
