"""Autodiff condition numbers beside the paper's closed forms for one transformer layer."""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from boundlab.arithmetic import Exact
from boundlab.condition import autodiff, closed_forms
from boundlab.quantities import causal_mask
from boundlab.models import blocks


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
    normalise = blocks.layer_norm if norm == "layer" else blocks.rms_norm
    per_token = functools.partial(jax.vmap, in_axes=1)  # one trace for all tokens
    if norm == "layer":
        closed_values = per_token(lambda x: closed_forms.layer_norm(x).kappa_cc_bound)(X)
    else:
        closed_values = per_token(lambda x: closed_forms.rms_norm(x).kappa_cc)(X)
    pairs = [(jnp.max(per_token(lambda x: autodiff.componentwise(normalise, x).value)(X)), jnp.max(closed_values))]

    Xn = normalise(X)
    S_all = blocks.scores(Xn, layer.Wq, layer.Wk)
    mask = causal_mask(n)

    def prefix_conditions(t):
        """kappa_cc of the scores of query t and of their softmax, with the keys i > t padded
        with zeros (the same numbers as on the prefix X_t, at a fixed shape)."""
        visible = mask[:, t]

        def last_scores(Y):
            return jnp.where(visible, blocks.scores(jnp.where(visible[None, :], Y, 0.0), layer.Wq, layer.Wk)[:, t], 0.0)

        def softmax(v):
            return blocks.softmax(v[:, None], mask=visible[:, None])[:, 0]

        prefix = jnp.where(visible[None, :], Xn, 0.0)
        scores = autodiff.componentwise(last_scores, prefix, where=visible).value
        return scores, autodiff.componentwise(softmax, jnp.where(visible, S_all[:, t], 0.0), where=visible).value

    score_auto, soft_auto = jax.vmap(prefix_conditions)(jnp.arange(n))
    score_closed = [closed_forms.scores(Xn[:, :t], layer.Wq, layer.Wk).kappa_cc_bound for t in range(1, n + 1)]
    soft_closed = [closed_forms.softmax(S_all[:t, t - 1]).kappa_cc for t in range(1, n + 1)]
    pairs.append((jnp.max(score_auto), _worst(score_closed)))
    pairs.append((jnp.max(soft_auto), _worst(soft_closed)))

    att_auto = autodiff.componentwise(lambda Y: blocks.attention(Y, layer.Wq, layer.Wk, layer.Wv), Xn).value
    att = closed_forms.attention(Xn, layer.Wq, layer.Wk, layer.Wv)
    pairs.append((att_auto, att.kappa_cc_bound))
    pairs.append((att_auto, att.remark_3_15_normalised_bound))

    Y = X + blocks.attention(Xn, layer.Wq, layer.Wk, layer.Wv)
    Yn = normalise(Y)

    def mlp(v):
        return blocks.perceptron(v[:, None], layer.A1, layer.b1, layer.A2, layer.b2)[:, 0]

    def mlp_closed(y):
        local = closed_forms.perceptron(layer.A1, layer.b1, layer.A2, layer.b2, y)
        offset = mlp(y) - local.jacobian @ y  # M is affine near y (Lemma 3.10): M(v) = J v + offset
        return jnp.where(local.generic, closed_forms.affine(local.jacobian, offset, y).kappa_cc, jnp.inf)

    mlp_auto = per_token(lambda y: autodiff.componentwise(mlp, y).value)(Yn)
    pairs.append((jnp.max(mlp_auto), jnp.max(per_token(mlp_closed)(Yn))))
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
