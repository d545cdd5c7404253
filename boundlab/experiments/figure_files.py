"""Writing a figure's results: PNG laid out like the paper's figure, CSV of the raw
per-initialisation errors, and ``summary.json`` with the fitted quantities."""

from __future__ import annotations

import math
import os

import numpy as np

from boundlab.output.strict_json import write_json
from boundlab.output.tables import write_table


def write_csv(result, out_dir) -> list[str]:
    """The raw errors, one row per initialisation and grid point, one column per layer (or depth)."""
    data, config = result.data, result.config
    paths = []
    precisions = config.precisions
    for kind in ("componentwise", "normwise"):
        path = os.path.join(out_dir, f"errors_{kind}.csv")
        values = data[kind]
        if result.number == 1:
            header = ["init", "t"] + [f"layer_{l + 1}" for l in range(values.shape[-1])]
            rows = ([i, t, *values[i, p]] for i in range(values.shape[0]) for p, t in enumerate(precisions))
        elif result.number == 2:
            header = ["init", "lambda", "t"] + [f"L_{depth}" for depth in config.depths]
            rows = ([i, lam, t, *values[i, g, p]] for i in range(values.shape[0]) for g, lam in enumerate(config.lambdas)
                    for p, t in enumerate(precisions))
        elif result.number == 3:
            header = ["init", "scale", "mean_column_norm", "t", "error"]
            rows = ([i, s, data["norm"][i, g], t, values[i, g, p]] for i in range(values.shape[0])
                    for g, s in enumerate(config.scales) for p, t in enumerate(precisions))
        else:
            header = ["init", "variant", "t"] + [f"layer_{l + 1}" for l in range(values.shape[-1])]
            rows = ([i, variant, t, *values[i, v, p]] for i in range(values.shape[0])
                    for v, variant in enumerate(("a_norm_before_attention", "b_norm_after_attention"))
                    for p, t in enumerate(precisions))
        write_table(path, header, ([_fmt(x) for x in row] for row in rows))
        paths.append(path)
    return paths


def _fmt(x):
    if isinstance(x, (float, np.floating)):
        return "nan" if math.isnan(x) else repr(float(x))
    return x


def write(result, out_dir) -> dict:
    """Write PNG, CSV and summary.json for ``result`` into ``out_dir``; returns their paths."""
    from boundlab.experiments.plots import plot

    os.makedirs(out_dir, exist_ok=True)
    png = os.path.join(out_dir, f"figure{result.number}.png")
    plot(result, png)
    summary_path = os.path.join(out_dir, "summary.json")
    write_json(summary_path, result.summary)  # NaN/inf -> null
    return {"png": png, "csv": write_csv(result, out_dir), "summary": summary_path}
