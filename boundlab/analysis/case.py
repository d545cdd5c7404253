"""``analyze``: one case, every quantity side by side, as a table or as JSON.

The JSON (``Analysis.to_dict()``) is keyed by the paper's statement names.  Every bound entry
has ``coefficient`` (the first-order bound in units of u, the worst over the layers and tokens
it applies to), ``bound`` (coefficient u + input_gain rho_in, worst case), ``measured`` (the
largest rho_c measured under emulation), ``valid`` (all hypotheses hold everywhere, including "no overflow":
Model 4.1 has none), ``verdict`` (``boundlab.verdicts``: "held", "failed", or "not checked (why)"
when no layer or token had its hypotheses, a finite measurement and a finite bound), ``holds``
(True, False, or None when not checked: never True against a NaN or overflowed measurement),
``check`` (how many entries were checked, held and failed, and why the others were not),
``bound/measured`` (the smallest ratio there: how close the bound came to being violated), ``flags`` and ``per_layer`` lists.  ``"Theorem 4.30"`` also carries
the per-layer factors (K_l, chi_l or eta_l, G_l, the layer-norm ratios), the layer-by-layer
composition, the weights-only growth and the sigma_min-free variant.  Infinite values are
written as the JSON extension ``Infinity`` (what Python's ``json`` reads back as ``inf``).
"""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np

from boundlab.bounds.statement import Statement
from boundlab.runtime.x64 import require_x64
from boundlab.analysis.measurement import measure
from boundlab.arithmetic import Emulated
from boundlab.condition.side_by_side import condition_report
from boundlab.models.paper.network import PARAM_NAMES, Params, validate
from boundlab.verdicts import verdict
from boundlab.verdicts import holds as verdict_holds

APPLIES_TO = {
    Statement.LEMMA_4_3: "L_1 = A_1 x + b_1 of the perceptron at N(y_t), per token",
    Statement.LEMMA_4_6: "RMS norm R at x_t and at y_t (exact inputs), per token",
    Statement.LEMMA_4_10: "centring c at x_t and at y_t (exact inputs), per token",
    Statement.LEMMA_4_11: "layer norm N at x_t and at y_t (exact inputs), per token",
    Statement.COROLLARY_4_9: "R(y^_t), y^ = the emulated attention sub-block's output, per token",
    Statement.COROLLARY_4_12: "N(y^_t), y^ = the emulated attention sub-block's output, per token",
    Statement.REMARK_4_13: "N(y^_t), y^ = the emulated attention sub-block's output, per token",
    Statement.LEMMA_4_14: "perceptron M at N(y_t) (exact input), per token",
    Statement.COROLLARY_4_16: "perceptron M at the emulated N(y^_t), per token",
    Statement.LEMMA_4_17: "scores S(X_t) of query t at N(X) (exact input), per query",
    Statement.REMARK_4_18: "xi(S, X_t) <= sigma_max(|W_k|^T|W_q|) / sigma_min(W_k^T W_q) (printed; false in general)",
    Statement.LEMMA_4_19: "softmax of the exact scores S(X_t), per query",
    Statement.COROLLARY_4_20: "softmax of the emulated scores, per query",
    Statement.LEMMA_4_21: "attention A at N(X) (exact input)",
    Statement.LEMMA_4_21_ABSOLUTE_SCORES: "attention A at N(X), sigma_min-free score bound (errata)",
    Statement.REMARK_4_22: "attention A at N(X) (exact input)",
    Statement.COROLLARY_4_23: "attention A at the emulated N(X^)",
    Statement.LEMMA_4_25: "attention sub-block X + A(R(X)) at the layer input",
    Statement.LEMMA_4_26: "attention sub-block X + A(N(X)) at the layer input",
    Statement.LEMMA_4_27: "feed-forward sub-block y + M(R(y)) at y_t (exact input), per token",
    Statement.LEMMA_4_28: "feed-forward sub-block y + M(N(y)) at y_t (exact input), per token",
    Statement.LEMMA_4_29: "one block at the layer's exact input",
    Statement.LEMMA_4_29_PROPAGATED: "one block, with the error the emulated network carries into the layer",
}


def _py(value):
    value = np.asarray(value)
    if value.dtype == bool:
        return value.tolist()
    return value.astype(float).tolist()


def _worst(a, axis=None):
    """The largest value, NaN only when every value is NaN (NaN marks an overflow, flagged)."""
    a = np.asarray(a, dtype=float)
    if a.size == 0:
        return a
    with np.errstate(invalid="ignore"):
        nan = np.all(np.isnan(a), axis=axis)
        return np.where(nan, np.nan, np.max(np.where(np.isnan(a), -np.inf, a), axis=axis))


def _worst_per_layer(a):
    a = np.asarray(a, dtype=float)
    return _worst(a.reshape(a.shape[0], -1), axis=1) if a.ndim > 1 else a


# an emulated run that left Model 4.1: NaN from an overflow (inf - inf, inf / inf) or from a norm
# that rounding made undefined (a column constant in the format: 0 / 0)
NAN_RUN = "overflow or NaN"


def overflowed(measured, coefficient, input_error):
    """Where the emulated run left the format's range (Model 4.1 has no overflow): a NaN measured
    error or input error, or an infinite measured error beside a finite coefficient (an infinite
    one beside an infinite coefficient is the paper's x/0 = inf at a non-generic output, flagged
    by the statement's own hypotheses)."""
    measured, coefficient = np.asarray(measured, dtype=float), np.asarray(coefficient, dtype=float)
    return np.isnan(measured) | np.isnan(input_error) | (np.isinf(measured) & np.isfinite(coefficient))


def _counts(check):
    return {key: check[key] for key in ("entries", "checked", "held", "failed", "not_checked")}


def _statement_entry(name, entry, u):
    coefficient = np.asarray(entry["coefficient"], dtype=float)
    measured = np.asarray(entry["measured"], dtype=float)
    if name == Statement.REMARK_4_18:  # an inequality between two quantities, no u
        holds = measured <= coefficient
        check = verdict(measured, coefficient, entry["flags"], overflow=np.isnan(measured), overflow_reason=NAN_RUN)
        return {"applies_to": APPLIES_TO[name], "coefficient": float(coefficient.max()),
                "measured": float(measured.max()), "valid": bool(all(np.all(v) for v in entry["flags"].values())),
                "holds": verdict_holds(check), "verdict": check["label"], "check": _counts(check),
                "flags": {k: bool(np.all(v)) for k, v in entry["flags"].items()},
                "per_layer": {"rhs": _py(coefficient), "max_t xi(S, X_t)": _py(measured), "holds": _py(holds)}}
    gain = np.asarray(entry["input_gain"], dtype=float)
    rho_in = np.asarray(entry["input_error"], dtype=float)
    with np.errstate(invalid="ignore"):
        bound = coefficient * u + np.where(gain == 0, 0.0, gain * rho_in)
    flags = {k: np.asarray(v, dtype=bool) for k, v in entry["flags"].items()}
    check = verdict(measured, bound, flags, overflow=overflowed(measured, coefficient, rho_in), overflow_reason=NAN_RUN)
    # Model 4.1 has no overflow: a NaN or inf measured error with a finite bound means the emulated
    # computation left the format's range (or its input error already did)
    flags["no overflow"] = ~overflowed(measured, coefficient, rho_in)
    valid = np.ones(coefficient.shape, dtype=bool)
    for flag in flags.values():
        valid &= flag
    with np.errstate(divide="ignore", invalid="ignore"):
        tightness = np.where(measured > 0, bound / np.where(measured > 0, measured, 1), np.inf)
    tightness = np.where(valid, tightness, np.inf)
    result = {"applies_to": APPLIES_TO.get(name, ""), "coefficient": float(coefficient.max()),
              "bound": float(_worst(bound)), "measured": float(_worst(measured)), "valid": bool(valid.all()),
              "holds": verdict_holds(check), "verdict": check["label"], "check": _counts(check),
              "bound/measured": float(tightness.min()),
              "flags": {k: bool(np.all(v)) for k, v in flags.items()},
              "per_layer": {"coefficient": _py(_worst_per_layer(coefficient)), "bound": _py(_worst_per_layer(bound)),
                            "measured": _py(_worst_per_layer(measured)),
                            "valid": _py(valid.reshape(valid.shape[0], -1).all(axis=1))}}
    if "first_order" in entry:  # the autodiff first-order bound of the same part at the same input
        autodiff = np.asarray(entry["first_order"], dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            result["first_order"] = {
                "coefficient": float(_worst(autodiff)), "bound": float(_worst(autodiff)) * u,
                "below_statement": bool(np.all((autodiff <= coefficient) | ~valid)),
                "measured/first_order": float(_worst(np.where(autodiff > 0, measured / (autodiff * u), np.nan)))}
        result["per_layer"]["first_order"] = _py(_worst_per_layer(autodiff))
    if np.any(gain):
        result["input_gain"] = float(gain.max())
        result["per_layer"]["input_error"] = _py(_worst_per_layer(rho_in))
    terms = {k: _py(_worst_per_layer(v)) for k, v in entry["terms"].items() if np.ndim(v) >= 1}
    if terms:
        result["per_layer"]["terms"] = terms
    return result


def _theorem_entry(record, free, measured, network_error, in_range, u, norm, network_first_order=None):
    flags = {k: bool(v) for k, v in record.flags.items()}
    flags["exact intermediates in the normal range"] = bool(np.all(in_range))
    check = verdict(measured, float(record.coefficient) * u, flags,
                    overflow=overflowed(measured, float(record.coefficient), 0.0), overflow_reason=NAN_RUN)
    flags["no overflow"] = not check["not_checked"].get(NAN_RUN)
    valid = all(flags.values())
    per_layer = {k: _py(v) for k, v in record.terms.items() if np.ndim(v) == 1 and k != "layerwise_per_layer"}
    per_layer["layerwise bound"] = _py(np.asarray(record.terms["layerwise_per_layer"]) * u)
    per_layer["measured"] = _py(network_error)
    extra = {}
    if network_first_order is not None:
        autodiff = np.asarray(network_first_order, dtype=float)
        per_layer["first_order bound"] = _py(autodiff * u)
        with np.errstate(divide="ignore", invalid="ignore"):
            extra["first_order"] = {
                "coefficient": float(autodiff[-1]), "bound": float(autodiff[-1]) * u,
                "measured/first_order": float(measured / (autodiff[-1] * u)),
                "log10 theorem/first_order": float(np.log10(float(record.coefficient) / autodiff[-1])),
                "log10 layerwise/first_order": float(np.log10(float(record.terms["layerwise"]) / autodiff[-1]))}
    return {**extra, "applies_to": f"the network ({'part 2, layer norm' if norm == 'layer' else 'part 1, RMS norm'})",
            "coefficient": float(record.coefficient), "bound": float(record.coefficient) * u, "measured": float(measured),
            "valid": valid, "holds": verdict_holds(check), "verdict": check["label"], "check": _counts(check),
            "bound/measured": float(record.coefficient) * u / measured if measured > 0 else
            float("inf") if measured == 0 else float("nan"),
            "layerwise": {"coefficient": float(record.terms["layerwise"]), "bound": float(record.terms["layerwise"]) * u},
            "weights_only_growth": float(record.terms["weights_only_growth"]),
            "sigma_min_free": {"coefficient": float(free.coefficient), "bound": float(free.coefficient) * u,
                               "valid": bool(free.valid), "layerwise": float(free.terms["layerwise"])},
            "flags": flags, "per_layer": per_layer}


@dataclasses.dataclass(frozen=True)
class Analysis:
    """The result of ``analyze``: raw arrays (``raw``, from ``measure``), the condition-number rows
    per layer, and the case's description."""

    case: dict
    raw: dict
    conditions: list

    def to_dict(self) -> dict:
        """JSON-ready dict keyed by statement names (see the module docstring)."""
        u = float(self.raw["u"])
        out = {"case": self.case,
               "outputs": {"exact": _py(self.raw["exact"]), "emulated": _py(self.raw["emulated"]),
                           "exact (unrounded case)": _py(self.raw["exact_given"])},
               "measured": {"network": float(self.raw["measured"]), "per_layer": _py(self.raw["network_error"]),
                            "against the unrounded case": float(self.raw["measured_against_given"])}}
        for name in sorted(self.raw["statements"], key=_statement_order):
            out[name] = _statement_entry(name, self.raw["statements"][name], u)
        out[Statement.THEOREM_4_30] = self._theorem_entry()
        out["condition numbers"] = [{"layer": layer, **row._asdict(), "ratio": row.ratio}
                                    for layer, rows in enumerate(self.conditions, 1) for row in rows]
        return out

    def entry(self, statement: Statement | str) -> dict:
        """The entry of one Section 4 statement (a ``Statement``, or its display name), as
        ``to_dict`` has it: ``coefficient``, ``bound``, ``measured``, ``valid``, ``holds``,
        ``verdict``, ``flags``, ``per_layer`` (Theorem 4.30: also ``layerwise``,
        ``sigma_min_free``, ``first_order``).  KeyError for a statement this case does not have
        (the RMS-norm statements of a layer-norm case, and the other way round)."""
        statement = Statement(statement)
        if statement == Statement.THEOREM_4_30:
            return self._theorem_entry()
        if statement not in self.raw["statements"]:
            raise KeyError(f"{statement} is not evaluated for this case (norm = {self.case['norm']}); it has "
                           f"{', '.join(str(k) for k in [*self.raw['statements'], Statement.THEOREM_4_30])}")
        return _statement_entry(statement, self.raw["statements"][statement], float(self.raw["u"]))

    def _theorem_entry(self) -> dict:
        raw = self.raw
        return _theorem_entry(raw["theorem"], raw["theorem_sigma_min_free"], float(raw["measured"]), raw["network_error"],
                              raw["in_range"], float(raw["u"]), self.case["norm"], raw.get("network_first_order"))

    def to_json(self, **kwargs) -> str:
        """Strict JSON: NaN and infinities (an overflowed run, an undefined factor) are null."""
        from boundlab.output.strict_json import strict_json

        return json.dumps(strict_json(self.to_dict()), allow_nan=False, **kwargs)

    def table(self) -> str:
        """A readable summary: one row per statement, then the condition numbers."""
        data = self.to_dict()
        case = data["case"]
        lines = [f"{case['arithmetic']}, u = 2^-{case['precision']}, norm = {case['norm']}, "
                 f"d = {case['d']}, n = {case['n']}, D = {case['D']}, L = {case['L']}",
                 f"measured rho_c of the network output: {data['measured']['network']:.3e}"
                 + ("" if np.isfinite(data["measured"]["network"]) else
                    "  (the emulated network overflowed: Model 4.1 and the bounds assume it does not; "
                    "see the 'no overflow' flags)"), "",
                 f"{'statement':<30} {'coefficient':>12} {'autodiff':>10} {'bound':>11} {'measured':>11} "
                 f"{'bound/meas':>10}  valid holds"]
        for name, entry in data.items():
            if not isinstance(entry, dict) or "coefficient" not in entry or name == Statement.REMARK_4_18:
                continue
            autodiff = f"{entry['first_order']['coefficient']:>10.4g}" if "first_order" in entry else f"{'-':>10}"
            lines.append(f"{name:<30} {entry['coefficient']:>12.4g} {autodiff} {entry['bound']:>11.3e} {entry['measured']:>11.3e} "
                         f"{entry['bound/measured']:>10.3g}  {'yes' if entry['valid'] else 'NO':<5} "
                         f"{_verdict_cell(entry)}"
                         f"{'' if entry['valid'] else '  failed: ' + failed_hypotheses(entry)}")
        remark = data[Statement.REMARK_4_18]["per_layer"]
        failing = [i for i, ok in enumerate(remark["holds"]) if not ok]
        lines.append("")
        if failing:
            i = failing[0]
            lines.append(f"Remark 4.18 as printed FAILS at layer {i + 1}: max_t xi(S, X_t) = "
                         f"{remark['max_t xi(S, X_t)'][i]:.4g} > {remark['rhs'][i]:.4g} (README, Errata)")
        else:
            lines.append("Remark 4.18 as printed holds at every layer here (it is false in general; README, Errata)")
        theorem = data[Statement.THEOREM_4_30]
        lines += [f"Theorem 4.30 layer-by-layer composition: {theorem['layerwise']['bound']:.3e}; "
                  f"sigma_min-free: {theorem['sigma_min_free']['bound']:.3e}; "
                  f"weights-only growth prod G_l = {theorem['weights_only_growth']:.4g}"]
        if "first_order" in theorem:
            autodiff = theorem["first_order"]
            lines += [f"autodiff first-order bound of the network: {autodiff['bound']:.3e} "
                      f"({autodiff['coefficient']:.4g} u); measured / first-order = {autodiff['measured/first_order']:.3g}; "
                      f"Theorem 4.30 is 10^{autodiff['log10 theorem/first_order']:.1f} above it, the layer-by-layer "
                      f"composition 10^{autodiff['log10 layerwise/first_order']:.1f}",
                      "('autodiff': the first-order bound sum_i |dy/dv_i| u |v_i| of the same part at the same input, "
                      "in units of u; boundlab.first_order)"]
        if self.conditions:
            lines += ["", f"{'layer':<6} {'statement':<18} {'quantity':<40} {'autodiff':>11} {'closed form':>11}  rel"]
            for row in data["condition numbers"]:
                lines.append(f"{row['layer']:<6} {row['statement']:<18} {row['quantity']:<40} {row['autodiff']:>11.4g} "
                             f"{row['closed_form']:>11.4g}  {row['relation']}")
        return "\n".join(lines)


def _verdict_cell(entry) -> str:
    """The table's verdict column: yes, NO, or n/c (not checked) with the reason."""
    check = entry["check"]
    if entry["holds"] is None:
        return "n/c (" + entry["verdict"][len("not checked ("):]
    part = "" if check["checked"] == check["entries"] else f" {check['checked']}/{check['entries']}"
    return ("yes" if entry["holds"] else "NO") + part


def failed_hypotheses(entry) -> str:
    """The names of the hypotheses that fail (somewhere) for a statement entry of ``to_dict``."""
    return ", ".join(name for name, holds in entry["flags"].items() if not holds) or "none"


def _statement_order(name):
    number = name.split()[1]
    major, minor = number.split(".")
    return (int(major), int(minor), name)


def analyze(params, X, fmt="fp16", norm: str = "layer", mode: str = "nearest", accumulation: str = "recursive",
            key=None, conditions: bool = True, first_order: bool = True) -> Analysis:
    """Evaluate one case: exact and emulated outputs, the measured error of every module,
    sub-block and layer, every Section 4 bound beside the error it bounds, the condition numbers
    (autodiff beside closed forms, per layer; ``conditions=False`` skips them) and all flags;
    with ``first_order`` (default), the autodiff first-order bound (``boundlab.first_order``) of
    every part at an exact input and of every layer of the network, beside the statements.

    ``fmt`` is a format name or ``Format``; the arithmetic is ``Emulated(fmt, mode,
    accumulation)`` (recursive is the paper's Model 4.1; the bounds speak about it).  Raises
    ValueError for bad shapes, NaN/inf or degenerate inputs, and when float64 is off.  The
    array part (``boundlab.analysis.measure``) is jit- and vmap-friendly; this wrapper is not.
    """
    require_x64("boundlab.analyze (exact quantities are float64)")
    params = params if isinstance(params, Params) else Params(**{k: params[k] for k in PARAM_NAMES})
    L, d, n, D = validate(params, X, norm)
    arithmetic = Emulated(fmt, mode=mode, accumulation=accumulation, unroll=0)  # same numbers, fast compile
    if arithmetic.unit is not None:
        raise ValueError(f"analyze checks the paper's Section 4 bounds, which are about Model 4.1 (recursive, pairwise "
                         f"or blocked sums), not the matrix unit {arithmetic.unit.name}; bound a unit's dot products with "
                         f"boundlab.matrix_units.dot_error_bound, or a whole model with boundlab.first_order")
    if mode == "stochastic" and key is None:
        raise ValueError("stochastic rounding needs key=jax.random.key(...)")
    u = arithmetic.unit_roundoff
    if n * u >= 1 or d * u >= 1 or D * u >= 1:
        raise ValueError(f"n u, d u or D u >= 1 for {arithmetic.fmt} (u = 2^-{arithmetic.fmt.precision}): "
                         "the first-order bounds say nothing; use a wider format")
    raw = jax.jit(measure, static_argnums=(2, 3, 5))(params, X, arithmetic, norm, key, first_order)
    rows = []
    if conditions:
        weights = jax.tree.map(lambda a: np.asarray(arithmetic.cast(a), dtype=np.float64), params)
        rows = [condition_report(jax.tree.map(lambda a: a[l], weights), raw["inputs"][l], norm) for l in range(L)]
    case = {"d": d, "n": n, "D": D, "L": L, "norm": norm, "format": str(arithmetic.fmt),
            "precision": arithmetic.fmt.precision, "u": u, "mode": mode, "accumulation": accumulation,
            "arithmetic": str(arithmetic)}
    return Analysis(case, raw, rows)
