"""``write_report(result, out_dir)``: a ``ModelDiagnostics`` as files people read.

* ``report.md``: what was recognised (and what was not, and why), the model output's measured
  errors and first-order bounds, one table row per part, the parts ranked by their share of the
  bound;
* ``parts.csv`` and ``summary.json`` (strict JSON: NaN and inf written as null) with the same
  numbers;
* one PNG per layer (``layer<L>.png``; parts outside any layer in ``model.png``): each part's
  measured normwise error per format beside its share of the first-order bound.
"""

from __future__ import annotations

import math
import os


def write_report(result, out_dir: str) -> dict:
    """Write the report of ``result`` (a ``boundlab.analysis.ModelDiagnostics``) into ``out_dir``;
    returns the paths written ({"report", "csv", "summary", "plots"})."""
    from boundlab.output.strict_json import write_json
    from boundlab.output.tables import write_rows

    os.makedirs(out_dir, exist_ok=True)
    rows = result.table()
    output = {k: float(v) for k, v in result.output.items()}
    flags = {k: bool(v) for k, v in result.flags.items()}
    structure = result.structure
    summary = {
        "formats": list(result.formats),
        "output": output,
        "flags": flags,
        "parts": rows,
        "structure": {
            "parts": [{"name": p.name, "kind": p.kind, "module": p.module, "layer": p.layer, "in_loop": p.in_loop,
                       "details": {k: (list(v) if isinstance(v, tuple) else v) for k, v in p.details}}
                      for p in structure.parts],
            "unrecognised": [{"module": path, "type": kind, "reason": why} for path, kind, why in structure.unrecognised],
            "notes": list(structure.notes),
        },
        "ranking": {f: [{"part": name, "share": share, "fraction": fraction}
                        for name, share, fraction in result.ranking(f, top=len(rows) + 1)]
                    for f in result.formats if result.at_output(f).bound is not None},
    }
    summary_path = os.path.join(out_dir, "summary.json")
    write_json(summary_path, summary)
    csv_path = os.path.join(out_dir, "parts.csv")
    write_rows(csv_path, rows, sorted({key for row in rows for key in row}, key=lambda k: (k not in ("part", "kind", "layer"), k)))
    plots = _plots(result, rows, out_dir)
    report_path = os.path.join(out_dir, "report.md")
    with open(report_path, "w") as handle:
        handle.write(_markdown(result, rows, output, flags, plots))
    return {"report": report_path, "csv": csv_path, "summary": summary_path, "plots": plots}


def _number(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        if math.isnan(x):
            return "n/a"
        if math.isinf(x):
            return "inf"
        return f"{x:.3g}"
    return str(x)


def _markdown(result, rows, output, flags, plots) -> str:
    s = result.structure
    lines = ["# Numerical diagnostics of the model", "",
             f"Formats: {', '.join(result.formats)}.  Every operation rounded as Model 4.1 says; errors against the "
             "float64 run at the same rounded inputs.", ""]
    failed = [name for name, ok in flags.items() if not ok]
    lines += [f"* Flags not holding: {', '.join(failed)}." if failed else "* Every flag holds.", ""]
    lines += ["## Output", ""]
    for f in result.formats:
        at = result.at_output(f)
        line = (f"* {f}: measured componentwise {_number(float(at.error_componentwise))}, "
                f"normwise {_number(float(at.error_normwise))}")
        if at.bound is not None:
            line += (f"; first-order bound, normwise {_number(float(at.bound_normwise))} "
                     f"(summed over entries {_number(float(at.bound))})")
        lines.append(line + ".")
    lines += ["", "## Parts", ""]
    if rows:
        keys = result.report_columns()
        lines.append("| " + " | ".join(keys) + " |")
        lines.append("| " + " | ".join("---" for _ in keys) + " |")
        lines += ["| " + " | ".join(_number(row.get(k)) for k in keys) + " |" for row in rows]
    else:
        lines.append("No part was recognised.")
    if s.unrecognised or s.notes:
        lines += ["", "Not recognised:", ""]
        lines += [f"* `{path}` ({kind}): {why}" for path, kind, why in s.unrecognised]
        lines += [f"* {note}" for note in s.notes]
    for f in result.formats:
        if result.at_output(f).bound is not None:
            lines += ["", f"## Where the first-order bound comes from ({f})", ""]
            lines += [f"{i + 1}. {name}: {_number(fraction * 100)} %" for i, (name, _, fraction)
                      in enumerate(result.ranking(f))]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in plots]
    return "\n".join(lines) + "\n"


def _plots(result, rows, out_dir) -> list[str]:
    from boundlab.output.pyplot import pyplot

    plt = pyplot()
    groups: dict = {}
    for row in rows:
        groups.setdefault(row["layer"], []).append(row)
    paths = []
    for layer, members in sorted(groups.items(), key=lambda item: (item[0] is None, item[0] or 0)):
        figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.2))
        labels = [row["part"].split(":")[-1] + f"\n{row['part'].split(':')[0]}" for row in members]
        width = 0.8 / max(len(result.formats), 1)
        for k, f in enumerate(result.formats):
            positions = [i + k * width for i in range(len(members))]
            errors = [float(result.parts[row["part"]].error_normwise[f]) for row in members]
            left.bar(positions, [e if e and e > 0 and math.isfinite(e) else float("nan") for e in errors], width,
                     label=f)
            bound = result.at_output(f).bound
            total = float("nan") if bound is None else float(bound)
            shares = [float(result.parts[row["part"]].share[f]) / total if total else float("nan") for row in members]
            right.bar(positions, shares, width, label=f)
        for axis in (left, right):
            axis.set_xticks([i + width * (len(result.formats) - 1) / 2 for i in range(len(members))], labels,
                            fontsize=7)
            axis.legend(fontsize=7)
        left.set_yscale("log")
        left.set_ylabel("measured normwise error")
        left.set_title("error at the part's result", fontsize=9)
        right.set_ylabel("fraction of the bound")
        right.set_title("share of the first-order bound", fontsize=9)
        name = "model" if layer is None else f"layer{layer}"
        figure.suptitle(f"{name}: parts", fontsize=10)
        path = os.path.join(out_dir, f"{name}.png")
        figure.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(figure)
        paths.append(path)
    return paths
