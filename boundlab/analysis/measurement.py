"""Every Section 4 statement on one case, beside the error it bounds, measured under emulation.

``measure`` is a pure function of arrays (jit- and vmap-friendly; the arithmetic and the norm are
static).  For each layer l it takes the exact layer input X^(l-1) of the network, rounds it to
the format (Model 4.1's operands are format numbers) and

* runs every part on the rounded exact input of that part and measures rho_c against the exact
  (float64) part on the same input: Lemmas 4.3, 4.6/4.10/4.11, 4.14, 4.17, 4.19, 4.21, Remark
  4.22, the sub-block Lemmas 4.25-4.28 and the block Lemma 4.29 (no input error);
* runs the emulated block from that input once and, for each part whose input is an emulated
  intermediate, measures the input error and the output error against the exact block: the
  perturbed-input statements Corollaries 4.9/4.12, Remark 4.13, Corollaries 4.16, 4.20, 4.23;
* composes Lemma 4.29 with the error the emulated *network* actually carries into layer l
  (Statement.LEMMA_4_29_PROPAGATED), and evaluates Theorem 4.30 against rho_c of the network output.

Each entry is a dict of arrays: ``coefficient`` and ``input_gain`` of the statement's record,
``input_error`` (rho_c of its perturbed input, 0 for exact inputs), ``measured``, ``flags`` and
``terms``; per layer (leading axis L), and per token or query (second axis) where the statement
is about one column.  ``boundlab.analysis.case`` turns this into tables and JSON.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from boundlab import bounds
from boundlab.bounds.statement import Statement
from boundlab.analysis import first_order_rows
from boundlab.accumulation import fold_key
from boundlab.arithmetic import Exact
from boundlab.bounds.network import block_parts, factors_from_parts
from boundlab.bounds.subblocks import attention_record, feed_forward_record
from boundlab.errors import relative_componentwise
from boundlab.quantities import causal_mask
from boundlab.models import blocks
from boundlab.models.paper.network import Params, block, forward

EXACT = Exact()


RANGE_FLAG = "exact intermediates in the normal range"


def _entry(record, measured, input_error=0.0, in_range=True):
    measured = jnp.asarray(measured, jnp.float64)
    flags = {**record.flags, RANGE_FLAG: in_range}
    return {"coefficient": record.coefficient, "input_gain": jnp.broadcast_to(record.input_gain, record.coefficient.shape),
            "input_error": jnp.broadcast_to(jnp.asarray(input_error, jnp.float64), measured.shape),
            "measured": measured, "flags": {k: jnp.broadcast_to(v, record.coefficient.shape) for k, v in flags.items()},
            "terms": {k: v for k, v in record.terms.items() if jnp.ndim(v) <= jnp.ndim(record.coefficient)}}


def _columns(approx, exact):
    """rho_c of each column (tokens, or queries of a causal score/softmax matrix)."""
    return relative_componentwise(jnp.asarray(approx, jnp.float64), exact, axis=0)


def in_range(values, fmt) -> jax.Array:
    """Every nonzero |v| of every array lies in [min_normal, max_finite] of ``fmt``: Model 4.1
    (no underflow, no overflow) can hold.  A check on the exact intermediates of a block, not on
    every product inside a dot product."""
    ok = jnp.asarray(True)
    for v in values:
        magnitude = jnp.abs(jnp.asarray(v, jnp.float64))
        ok &= jnp.all((magnitude == 0) | ((magnitude >= fmt.min_normal) & (magnitude <= fmt.max_finite)))
    return ok


def _block_in_range(ex, n, fmt):
    mask = causal_mask(n)
    exps = jnp.where(mask, jnp.exp(ex.scores), 0.0)
    return in_range([ex.inputs, ex.attention_input, ex.scores, exps, ex.softmax, ex.attention, ex.attention_residual,
                     ex.perceptron_input, ex.hidden, ex.perceptron, ex.outputs], fmt)


def _layer(true, given, arithmetic, norm, u, key, with_first_order=False):
    """All statements about one layer: ``true`` is the layer's slice of the single exact forward
    of the case as given (float64), ``given`` the layer's weights (float64).  Returns the
    entries and the layer's ``BlockFactors`` (for Theorem 4.30)."""
    X_true = true.inputs
    n = X_true.shape[1]
    D = given.A1.shape[0]
    wide = lambda a: jnp.asarray(a, jnp.float64)  # noqa: E731
    rounded = jax.tree.map(arithmetic.cast, given)  # the weights as format numbers (container)
    W = jax.tree.map(wide, rounded)  # ... held in float64 for the exact references
    Xr = arithmetic.cast(X_true)
    _, ex = block(wide(Xr), W, EXACT, norm, return_intermediates=True)  # exact, on format numbers
    _, em = block(Xr, rounded, arithmetic, norm, fold_key(key, 0), return_intermediates=True)
    em = jax.tree.map(wide, em)
    normalise = blocks.NORMS[norm]
    mask = causal_mask(n)

    def on_format_numbers(function, x, k):
        """(emulated, exact) of ``function`` at x rounded to the format: the part's own error."""
        xr = arithmetic.cast(x)
        return jax.tree.map(wide, function(xr, rounded, arithmetic, k)), function(wide(xr), W, EXACT, None)

    def per_column(statement, X, *args):
        return jax.vmap(lambda x: statement(x, *args, u=u), in_axes=1)(X)

    out = {}
    # -- normalisation (per token), exact inputs: the block's two normalisations
    for index, vectors in enumerate((X_true, true.attention_residual)):
        k = fold_key(key, 10 + index)
        measured = _columns(*on_format_numbers(lambda x, w, a, kk: normalise(x, a, kk), vectors, k))
        if norm == "rms":
            out.setdefault(Statement.LEMMA_4_6, []).append(_entry(per_column(bounds.lemma_4_6, vectors), measured))
        else:
            out.setdefault(Statement.LEMMA_4_11, []).append(_entry(per_column(bounds.lemma_4_11, vectors), measured))
            centred = _columns(*on_format_numbers(lambda x, w, a, kk: blocks.centring(x, a, kk), vectors,
                                                  fold_key(k, 5)))
            out.setdefault(Statement.LEMMA_4_10, []).append(_entry(per_column(bounds.lemma_4_10, vectors), centred))
    out = {name: jax.tree.map(lambda *a: jnp.concatenate(a), *entries) for name, entries in out.items()}

    # -- attention parts, exact inputs
    Z = true.attention_input
    S_em, S_exact = on_format_numbers(lambda x, w, a, k: blocks.scores(x, w.Wq, w.Wk, a, k), Z, fold_key(key, 20))
    out[Statement.LEMMA_4_17] = _entry(bounds.lemma_4_17_columns(Z, given.Wq, given.Wk, u=u), _columns(S_em, S_exact))
    P_em, P_exact = on_format_numbers(lambda x, w, a, k: blocks.softmax(x, a, k, mask=mask), true.scores,
                                      fold_key(key, 21))
    out[Statement.LEMMA_4_19] = _entry(bounds.lemma_4_19_columns(true.scores, u=u), _columns(P_em, P_exact))
    printed = bounds.remark_4_18(given.Wq, given.Wk)
    out[Statement.REMARK_4_18] = {"coefficient": printed.coefficient, "input_gain": jnp.zeros(()), "input_error": jnp.zeros(()),
                          "measured": jnp.max(out[Statement.LEMMA_4_17]["terms"]["xi(S, X)"]), "flags": printed.flags,
                          "terms": printed.terms}
    A_em, A_exact = on_format_numbers(lambda x, w, a, k: blocks.attention(x, w.Wq, w.Wk, w.Wv, a, k), Z,
                                      fold_key(key, 22))
    for statement in (bounds.lemma_4_21, bounds.lemma_4_21_absolute, bounds.remark_4_22):
        record = statement(Z, given.Wq, given.Wk, given.Wv, u=u)
        out[record.statement] = _entry(record, relative_componentwise(A_em, A_exact))

    # -- perceptron, exact inputs (per token)
    V = true.perceptron_input
    (M_em, H_em), (M_exact, H_exact) = on_format_numbers(
        lambda x, w, a, k: blocks.perceptron(x, *w[3:], a, k, return_hidden=True), V, fold_key(key, 30))
    out[Statement.LEMMA_4_3] = _entry(jax.vmap(lambda x: bounds.lemma_4_3(given.A1, x, b=given.b1, u=u), 1)(V),
                              _columns(H_em, H_exact))
    out[Statement.LEMMA_4_14] = _entry(per_column(bounds.lemma_4_14, V, *given[3:]), _columns(M_em, M_exact))

    # -- sub-blocks and the block, exact inputs: each lemma evaluated once, from the exact pass
    attention_parts, token_parts = block_parts(X_true, given, norm, u, true)
    d = X_true.shape[0]
    record = attention_record(attention_parts, norm, n, d)
    sub_perceptron = feed_forward_record(token_parts, norm, d)
    out[record.statement] = _entry(record, relative_componentwise(em.attention_residual, ex.attention_residual))

    def feed_forward(y, w, a, k):
        return a.add(y, blocks.perceptron(normalise(y, a, fold_key(k, 0)), *w[3:], a, fold_key(k, 1)), fold_key(k, 2))

    F_em, F_exact = on_format_numbers(feed_forward, true.attention_residual, fold_key(key, 40))
    out[sub_perceptron.statement] = _entry(sub_perceptron, _columns(F_em, F_exact))
    factors = factors_from_parts(attention_parts, token_parts, true, norm)
    out[Statement.LEMMA_4_29] = _entry(bounds.block_record(factors, n, d, D, norm), relative_componentwise(em.outputs, ex.outputs))

    # -- perturbed inputs inside the emulated block (input errors measured, not assumed)
    corollaries = (bounds.corollary_4_12, bounds.remark_4_13) if norm == "layer" else (bounds.corollary_4_9,)
    for statement in corollaries:
        record = per_column(statement, true.attention_residual)
        out[record.statement] = _entry(record, _columns(em.perceptron_input, ex.perceptron_input),
                                       _columns(em.attention_residual, ex.attention_residual))
    record = per_column(bounds.corollary_4_16, true.perceptron_input, *given[3:])
    out[Statement.COROLLARY_4_16] = _entry(record, _columns(em.perceptron, ex.perceptron),
                                   _columns(em.perceptron_input, ex.perceptron_input))
    out[Statement.COROLLARY_4_20] = _entry(bounds.corollary_4_20_columns(true.scores, u=u), _columns(em.softmax, ex.softmax),
                                   _columns(em.scores, ex.scores))
    record = bounds.corollary_4_23(true.attention_input, given.Wq, given.Wk, given.Wv, u=u)
    out[Statement.COROLLARY_4_23] = _entry(record, relative_componentwise(em.attention, ex.attention),
                                   relative_componentwise(em.attention_input, ex.attention_input))
    if with_first_order:
        for name, coefficient in first_order_rows.part_rows(true, given, arithmetic, norm).items():
            out[name]["first_order"] = jnp.broadcast_to(coefficient, out[name]["coefficient"].shape)
    ok = _block_in_range(ex, n, arithmetic.fmt)
    for entry in out.values():
        entry["flags"][RANGE_FLAG] = jnp.broadcast_to(ok, entry["coefficient"].shape)
    return out, factors


def measure(params, X, arithmetic, norm: str = "layer", key=None, with_first_order: bool = False) -> dict:
    """All statements on one case (see the module docstring); arrays only, so jit/vmap work.

    The bounds are evaluated in float64 on the exact intermediates of the case as given, from
    one exact forward pass: every per-layer lemma once, Theorem 4.30 (both variants) from the
    per-layer factors.  The errors are measured as Model 4.1 defines them: the weights and each
    part's input are rounded to the format (operands are format numbers), and the emulated result
    is compared with the float64 result on the same format numbers.  ``measured_against_given``
    compares the emulated network with the exact network of the unrounded case.
    ``with_first_order`` adds the autodiff first-order coefficient of every part at an exact
    input (``first_order`` in those entries) and of every layer of the network
    (``network_first_order``): ``boundlab.analysis.first_order_rows``.
    """
    u = arithmetic.unit_roundoff
    params = Params(*params) if isinstance(params, Params) else Params(**params)
    given = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
    X_given = jnp.asarray(X, jnp.float64)
    rounded = jax.tree.map(arithmetic.cast, params)
    Xr = arithmetic.cast(X)
    exact_given, true = forward(given, X_given, EXACT, norm, return_intermediates=True, cast=False)
    exact_out, ex = forward(jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), rounded), jnp.asarray(Xr, jnp.float64),
                            EXACT, norm, return_intermediates=True, cast=False)
    emulated_out, em = forward(rounded, Xr, arithmetic, norm, key, return_intermediates=True, cast=False)
    emulated_out = jnp.asarray(emulated_out, jnp.float64)
    network = relative_componentwise(jnp.asarray(em.outputs, jnp.float64), ex.outputs, axis=(1, 2))  # (L,)
    network_in = jnp.concatenate([jnp.zeros(1), network[:-1]])
    L = params.A1.shape[0]
    layer_keys = jnp.arange(L) if key is None else jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(L))

    def one(inter, layer, k):
        return _layer(inter, layer, arithmetic, norm, u, None if key is None else k, with_first_order)

    per_layer, factors = jax.vmap(one)(true, given, layer_keys)
    theorem = bounds.theorem_4_30(given, X_given, norm=norm, u=u, factors=factors)
    free = bounds.theorem_4_30(given, X_given, norm=norm, u=u, sigma_min_free=True, factors=factors)
    network_in_range = jax.vmap(lambda e: _block_in_range(e, X.shape[1], arithmetic.fmt))(ex)
    # the same Lemma 4.29 records (evaluated per layer above), now with the network's own errors
    block_lemma = per_layer[Statement.LEMMA_4_29]
    per_layer[Statement.LEMMA_4_29_PROPAGATED] = {
        **{k: v for k, v in block_lemma.items() if k != "first_order"},  # that row has no autodiff column
        "input_error": network_in, "measured": network,
        "flags": {**block_lemma["flags"], RANGE_FLAG: network_in_range}}
    extra = {}
    if with_first_order:
        extra["network_first_order"] = first_order_rows.network_rows(
            jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), rounded), jnp.asarray(Xr, jnp.float64), arithmetic, norm)
    return {**extra, "statements": per_layer, "theorem": theorem, "theorem_sigma_min_free": free,
            "network_error": network, "measured": network[-1], "in_range": network_in_range,
            "measured_against_given": relative_componentwise(emulated_out, exact_given),
            "exact": exact_out, "exact_given": exact_given, "emulated": emulated_out, "inputs": true.inputs,
            "u": jnp.asarray(u)}
