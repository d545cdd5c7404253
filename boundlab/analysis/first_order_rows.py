"""The autodiff first-order bound (``boundlab.first_order``) of each part ``analyze`` checks.

For every Section 4 statement about a part at an exact input, the same part at the same
(rounded) input is handed to ``first_order``: sum_i |dy/dv_i| e_i over the part's own roundings,
as a componentwise relative bound in units of u (max_j bound_j / |y_j| / u, per column where the
statement is per column).  Under Model 4.1 it lies between the measured error (up to O(u^2))
and the statement's coefficient: the gap to the measurement is the rounding model's worst case
(every delta_i = +-u with the worst signs), the gap to the statement is the proof's own slack.

All parts are evaluated in one ``first_order`` call per layer (one trace, one compilation).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from boundlab.bounds.statement import Statement
from boundlab.arithmetic import Exact
from boundlab.errors import ratio
from boundlab.sensitivity import first_order
from boundlab.models import blocks
from boundlab.models.paper.network import block
from boundlab.models.paper.plain import plain_forward

EXACT = Exact()

# part -> statements whose first-order row it gives (the sub-block names depend on the norm)
STATEMENTS = {"norm": {"layer": (Statement.LEMMA_4_11,), "rms": (Statement.LEMMA_4_6,)}, "centring": {"layer": (Statement.LEMMA_4_10,)},
              "scores": (Statement.LEMMA_4_17,), "softmax": (Statement.LEMMA_4_19,),
              "attention": (Statement.LEMMA_4_21, Statement.LEMMA_4_21_ABSOLUTE_SCORES, Statement.REMARK_4_22),
              "hidden": (Statement.LEMMA_4_3,), "perceptron": (Statement.LEMMA_4_14,),
              "attention sub-block": {"layer": (Statement.LEMMA_4_26,), "rms": (Statement.LEMMA_4_25,)},
              "feed-forward sub-block": {"layer": (Statement.LEMMA_4_28,), "rms": (Statement.LEMMA_4_27,)},
              "block": (Statement.LEMMA_4_29,)}
PER_COLUMN = {"norm", "centring", "scores", "softmax", "hidden", "perceptron", "feed-forward sub-block"}


def _parts(inputs, w, norm):
    """Every part of one block at its exact input, in the order of operations of ``layers``."""
    X, Y, Z, S, V = inputs
    mask = blocks.causal_mask(X.shape[1])
    normalise = blocks.NORMS[norm]
    out = {"norm": jnp.concatenate([normalise(X, EXACT), normalise(Y, EXACT)], axis=1),
           "scores": blocks.scores(Z, w.Wq, w.Wk, EXACT),
           "softmax": blocks.softmax(S, EXACT, mask=mask),
           "attention": blocks.attention(Z, w.Wq, w.Wk, w.Wv, EXACT)}
    if norm == "layer":
        out["centring"] = jnp.concatenate([blocks.centring(X, EXACT), blocks.centring(Y, EXACT)], axis=1)
    out["perceptron"], out["hidden"] = blocks.perceptron(V, *w[3:], EXACT, return_hidden=True)
    out["attention sub-block"] = X + blocks.attention(normalise(X, EXACT), w.Wq, w.Wk, w.Wv, EXACT)
    out["feed-forward sub-block"] = Y + blocks.perceptron(normalise(Y, EXACT), *w[3:], EXACT)
    out["block"] = block(X, w, EXACT, norm)
    return out


def _relative(record_bound, value, u, per_column):
    rho = ratio(record_bound, jnp.abs(value)) / u
    return jnp.max(rho, axis=0) if per_column else jnp.max(rho)


@functools.lru_cache(maxsize=32)
def _parts_bound(arithmetic, norm):
    """One ``first_order`` function per (arithmetic, norm): repeated ``analyze`` calls reuse its
    trace and compilation (nothing traced is cached here: the function only)."""
    return first_order(lambda x, w: _parts(x, w, norm), arithmetic)


@functools.lru_cache(maxsize=32)
def _network_bound(arithmetic, norm):
    return first_order(lambda p, x: plain_forward(p, x, norm, return_layers=True), arithmetic)


def part_rows(true, given, arithmetic, norm) -> dict:
    """statement name -> first-order coefficient (units of u; per column or one number), for one
    layer: ``true`` its slice of the exact intermediates, ``given`` its float64 weights."""
    inputs = (true.inputs, true.attention_residual, true.attention_input, true.scores, true.perceptron_input)
    record = _parts_bound(arithmetic, norm)(inputs, given)
    u = arithmetic.unit_roundoff
    rows = {}
    for part, names in STATEMENTS.items():
        names = names.get(norm, ()) if isinstance(names, dict) else names
        if not names:
            continue
        coefficient = _relative(record.bound[part], record.value[part], u, part in PER_COLUMN)
        rows.update({name: coefficient for name in names})
    return rows


def network_rows(params, X, arithmetic, norm) -> jax.Array:
    """The first-order coefficient (units of u) of rho_c of every layer's output of the network
    on ``params``, ``X`` (format numbers): (L,)."""
    record = _network_bound(arithmetic, norm)(tuple(params), X)
    u = arithmetic.unit_roundoff
    return jax.vmap(lambda b, v: _relative(b, v, u, False))(record.bound, record.value)
