"""Autodiff condition numbers beside the paper's closed forms for one transformer layer."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from boundlab.arithmetic import Exact
from boundlab.condition import autodiff, closed_forms
from boundlab.transformer import layers


class Row(NamedTuple):
    """One quantity: ``relation`` is "=" (the lemma states an equality) or "<=" (a bound)."""

    statement: str
    quantity: str
    autodiff: float
    closed_form: float
    relation: str

    @property
    def ratio(self) -> float:
        """closed form / autodiff (1 for equalities; the looseness of a bound)."""
        if self.autodiff == 0:
            return float("inf") if self.closed_form else 1.0
        return self.closed_form / self.autodiff


def _worst(values):
    return float(np.max(np.asarray(values)))


def condition_report(layer, X, norm: str = "layer") -> list[Row]:
    """kappa_cc of each part of one layer at its actual inputs, from ``jax.jacfwd`` and from
    Section 3, per token where the part acts per token (the maximum over tokens is shown).

    ``layer`` is one layer's ``Params`` (no leading L axis), X the layer's input (d, n).
    """
    exact = Exact()
    X = exact.cast(X)
    d, n = X.shape
    rows = []
    tokens = [X[:, t] for t in range(n)]
    if norm == "layer":
        normalise, closed, statement = layers.layer_norm, closed_forms.layer_norm, "Lemma 3.8"
        closed_values = [float(closed(x).kappa_cc_bound) for x in tokens]
        relation = "<="
    else:
        normalise, closed, statement = layers.rms_norm, closed_forms.rms_norm, "Lemma 3.6"
        closed_values = [float(closed(x).kappa_cc) for x in tokens]
        relation = "="
    auto = [float(autodiff.componentwise(normalise, x).value) for x in tokens]
    rows.append(Row(statement, "kappa_cc(norm, x_t), max over t", _worst(auto), _worst(closed_values), relation))

    Xn = normalise(X)
    S_all = layers.scores(Xn, layer.Wq, layer.Wk)
    score_auto, score_closed, soft_auto, soft_closed = [], [], [], []
    for t in range(1, n + 1):
        Xt = Xn[:, :t]
        score_auto.append(float(autodiff.componentwise(lambda Y: layers.scores(Y, layer.Wq, layer.Wk)[:, -1], Xt).value))
        score_closed.append(float(closed_forms.scores(Xt, layer.Wq, layer.Wk).kappa_cc_bound))
        s = S_all[:t, t - 1]
        soft_auto.append(float(autodiff.componentwise(lambda v: layers.softmax(v), s).value))
        soft_closed.append(float(closed_forms.softmax(s).kappa_cc))
    rows.append(Row("Lemma 3.12", "kappa_cc(S, X_t), max over t", _worst(score_auto), _worst(score_closed), "<="))
    rows.append(Row("Lemma 3.13", "kappa_cc(psi, S(X_t)), max over t", _worst(soft_auto), _worst(soft_closed), "="))

    att_auto = float(autodiff.componentwise(lambda Y: layers.attention(Y, layer.Wq, layer.Wk, layer.Wv), Xn).value)
    att = closed_forms.attention(Xn, layer.Wq, layer.Wk, layer.Wv)
    rows.append(Row("Lemma 3.14", "kappa_cc(A, N(X))", att_auto, float(att.kappa_cc_bound), "<="))
    rows.append(Row("Remark 3.15", "kappa_cc(A, N(X)) <= xi [1 + 4 d ||B||_2]", att_auto,
                    float(att.remark_3_15_normalised_bound), "<="))

    Y = X + layers.attention(Xn, layer.Wq, layer.Wk, layer.Wv)
    Yn = normalise(Y)
    mlp_auto, mlp_closed = [], []
    for t in range(n):
        y = Yn[:, t]

        def mlp(v):
            return layers.perceptron(v[:, None], layer.A1, layer.b1, layer.A2, layer.b2)[:, 0]

        mlp_auto.append(float(autodiff.componentwise(mlp, y).value))
        local = closed_forms.perceptron(layer.A1, layer.b1, layer.A2, layer.b2, y)
        value = mlp(y)
        offset = value - local.jacobian @ y  # M is affine near y (Lemma 3.10): M(v) = J v + offset
        mlp_closed.append(float(jnp.where(local.generic, closed_forms.affine(local.jacobian, offset, y).kappa_cc, jnp.inf)))
    rows.append(Row("Lemmas 3.10, 3.4", "kappa_cc(M, N(y_t)), max over t", _worst(mlp_auto), _worst(mlp_closed), "="))
    return rows


def format_report(rows: list[Row]) -> str:
    """A plain-text table of the report."""
    lines = [f"{'statement':<18} {'quantity':<44} {'autodiff':>12} {'closed form':>12}  rel  ratio"]
    for row in rows:
        lines.append(f"{row.statement:<18} {row.quantity:<44} {row.autodiff:>12.5g} {row.closed_form:>12.5g}"
                     f"  {row.relation:<3}  {row.ratio:.3g}")
    return "\n".join(lines)


__all__ = ["Row", "condition_report", "format_report"]
