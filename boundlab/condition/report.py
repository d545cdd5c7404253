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
    return jnp.max(jnp.stack([jnp.asarray(v, jnp.float64) for v in values]))


NORM_ROWS = {"layer": ("Lemma 3.8", "kappa_cc(norm, x_t), max over t", "<="),
             "rms": ("Lemma 3.6", "kappa_cc(norm, x_t), max over t", "=")}
ROWS = (
    ("Lemma 3.12", "kappa_cc(S, X_t), max over t", "<="),
    ("Lemma 3.13", "kappa_cc(psi, S(X_t)), max over t", "="),
    ("Lemma 3.14", "kappa_cc(A, N(X))", "<="),
    ("Remark 3.15", "kappa_cc(A, N(X)) <= xi [1 + 4 d ||B||_2]", "<="),
    ("Lemmas 3.10, 3.4", "kappa_cc(M, N(y_t)), max over t", "="),
)


def condition_values(layer, X, norm: str = "layer"):
    """(autodiff, closed form) pairs of the rows of ``condition_report`` as a (6, 2) array: a
    pure function (jit it with ``norm`` static)."""
    if norm not in NORM_ROWS:
        raise ValueError(f"norm must be 'layer' or 'rms', got {norm!r}")
    exact = Exact()
    X = exact.cast(X)
    n = X.shape[1]
    tokens = [X[:, t] for t in range(n)]
    normalise = layers.layer_norm if norm == "layer" else layers.rms_norm
    if norm == "layer":
        closed_values = [closed_forms.layer_norm(x).kappa_cc_bound for x in tokens]
    else:
        closed_values = [closed_forms.rms_norm(x).kappa_cc for x in tokens]
    pairs = [(_worst([autodiff.componentwise(normalise, x).value for x in tokens]), _worst(closed_values))]

    Xn = normalise(X)
    S_all = layers.scores(Xn, layer.Wq, layer.Wk)
    score_auto, score_closed, soft_auto, soft_closed = [], [], [], []
    for t in range(1, n + 1):
        Xt = Xn[:, :t]
        score_auto.append(autodiff.componentwise(lambda Y: layers.scores(Y, layer.Wq, layer.Wk)[:, -1], Xt).value)
        score_closed.append(closed_forms.scores(Xt, layer.Wq, layer.Wk).kappa_cc_bound)
        s = S_all[:t, t - 1]
        soft_auto.append(autodiff.componentwise(lambda v: layers.softmax(v), s).value)
        soft_closed.append(closed_forms.softmax(s).kappa_cc)
    pairs.append((_worst(score_auto), _worst(score_closed)))
    pairs.append((_worst(soft_auto), _worst(soft_closed)))

    att_auto = autodiff.componentwise(lambda Y: layers.attention(Y, layer.Wq, layer.Wk, layer.Wv), Xn).value
    att = closed_forms.attention(Xn, layer.Wq, layer.Wk, layer.Wv)
    pairs.append((att_auto, att.kappa_cc_bound))
    pairs.append((att_auto, att.remark_3_15_normalised_bound))

    Y = X + layers.attention(Xn, layer.Wq, layer.Wk, layer.Wv)
    Yn = normalise(Y)

    def mlp(v):
        return layers.perceptron(v[:, None], layer.A1, layer.b1, layer.A2, layer.b2)[:, 0]

    mlp_auto, mlp_closed = [], []
    for t in range(n):
        y = Yn[:, t]
        mlp_auto.append(autodiff.componentwise(mlp, y).value)
        local = closed_forms.perceptron(layer.A1, layer.b1, layer.A2, layer.b2, y)
        offset = mlp(y) - local.jacobian @ y  # M is affine near y (Lemma 3.10): M(v) = J v + offset
        mlp_closed.append(jnp.where(local.generic, closed_forms.affine(local.jacobian, offset, y).kappa_cc, jnp.inf))
    pairs.append((_worst(mlp_auto), _worst(mlp_closed)))
    return jnp.asarray(pairs)


_condition_values = jax.jit(condition_values, static_argnums=2)


def condition_report(layer, X, norm: str = "layer") -> list[Row]:
    """kappa_cc of each part of one layer at its actual inputs, from ``jax.jacfwd`` and from
    Section 3, per token where the part acts per token (the maximum over tokens is shown).

    ``layer`` is one layer's ``Params`` (no leading L axis), X the layer's input (d, n).
    """
    values = np.asarray(_condition_values(layer, X, norm))
    return [Row(statement, quantity, float(auto), float(closed), relation)
            for (statement, quantity, relation), (auto, closed) in zip((NORM_ROWS[norm],) + ROWS, values)]


def format_report(rows: list[Row]) -> str:
    """A plain-text table of the report."""
    lines = [f"{'statement':<18} {'quantity':<44} {'autodiff':>12} {'closed form':>12}  rel  ratio"]
    for row in rows:
        lines.append(f"{row.statement:<18} {row.quantity:<44} {row.autodiff:>12.5g} {row.closed_form:>12.5g}"
                     f"  {row.relation:<3}  {row.ratio:.3g}")
    return "\n".join(lines)


__all__ = ["Row", "condition_report", "condition_values", "format_report"]
