"""Transformer blocks (6)/(9) and the depth-L network (7)/(10) under ``lax.scan``."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from boundlab.accumulation import fold_key
from boundlab.arithmetic import Exact
from boundlab.models.blocks import NORMS, attention, perceptron

PARAM_NAMES = ("Wq", "Wk", "Wv", "A1", "b1", "A2", "b2")


class Params(NamedTuple):
    """Parameters of L layers, stacked on a leading axis (the interchange file's arrays).

    Wq, Wk, Wv: (L, d, d); A1: (L, D, d); b1: (L, D); A2: (L, d, D); b2: (L, d).  One layer's
    parameters are the same record without the leading axis.
    """

    Wq: jax.Array
    Wk: jax.Array
    Wv: jax.Array
    A1: jax.Array
    b1: jax.Array
    A2: jax.Array
    b2: jax.Array


class Intermediates(NamedTuple):
    """Inputs and outputs of every sub-block of every layer, stacked on a leading layer axis.

    For layer l with input X: ``attention_input`` = N(X), ``scores`` and ``softmax`` (n x n,
    column t = S(X_t), psi(S(X_t))), ``attention`` = A(N(X)), ``attention_residual`` Y = X +
    A(N(X)), ``perceptron_input`` = N(Y), ``hidden`` = L_1(N(Y)) before the ReLU,
    ``perceptron`` = M(N(Y)), ``outputs`` = Y + M(N(Y)) (eq. 6; with R for eq. 9).
    """

    inputs: jax.Array
    attention_input: jax.Array
    scores: jax.Array
    softmax: jax.Array
    attention: jax.Array
    attention_residual: jax.Array
    perceptron_input: jax.Array
    hidden: jax.Array
    perceptron: jax.Array
    outputs: jax.Array



def block(X, layer: Params, arithmetic=Exact(), norm: str = "layer", key=None, max_shift: bool = False,
          return_intermediates: bool = False):
    """One pre-norm block, T = (Id + M o N) o (Id + A o N) (eq. 6) or with R (eq. 9)."""
    normalise = _norm(norm)
    X_normed = normalise(X, arithmetic, fold_key(key, 0))
    attended, S, P = attention(X_normed, layer.Wq, layer.Wk, layer.Wv, arithmetic, fold_key(key, 1),
                               max_shift=max_shift, return_internals=True)
    Y = arithmetic.add(X, attended, fold_key(key, 2))
    Y_normed = normalise(Y, arithmetic, fold_key(key, 3))
    mlp, hidden = perceptron(Y_normed, layer.A1, layer.b1, layer.A2, layer.b2, arithmetic, fold_key(key, 4),
                             return_hidden=True)
    Z = arithmetic.add(Y, mlp, fold_key(key, 5))
    if not return_intermediates:
        return Z
    return Z, Intermediates(X, X_normed, S, P, attended, Y, Y_normed, hidden, mlp, Z)


def _norm(norm: str):
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {tuple(NORMS)}, got {norm!r}")
    return NORMS[norm]


def empty_case(A1_shape: tuple[int, ...], X_shape: tuple[int, ...]) -> str | None:
    """The message for a case with an empty dimension (L, D from A1 = (L, D, d); d, n from
    X = (d, n)), or None: the one wording of ``validate`` and of the interchange loader."""
    (L, D, _), (d, n) = A1_shape, X_shape
    for count, what in ((L, f"L = 0 layers (A1 has shape {A1_shape})"),
                        (D, f"D = 0 hidden units (A1 has shape {A1_shape})"),
                        (d, f"d = 0 features (X has shape {X_shape})"), (n, f"n = 0 tokens (X has shape {X_shape})")):
        if count == 0:
            return f"the case is empty: {what}"
    return None


def validate(params: Params, X, norm: str | None = None) -> tuple[int, int, int, int]:
    """Check shapes (no empty dimension) and, for concrete arrays, finiteness; return (L, d, n, D).

    With ``norm``, a concrete input whose first normalisation is undefined is refused too: a
    constant column for layer norm (its variance is 0) or a zero column for RMS norm.  Under
    ``jit`` such cases cannot raise; they show up as NaN in the output.  Raises ValueError naming
    the offending array.
    """
    if not isinstance(params, Params):
        try:
            params = Params(**{name: params[name] for name in PARAM_NAMES})
        except (KeyError, TypeError) as error:
            raise ValueError(f"params must be a Params or a mapping with {PARAM_NAMES}: {error}") from None
    X = jnp.asarray(X) if not hasattr(X, "shape") else X
    if X.ndim != 2:
        raise ValueError(f"X must be (d, n) with tokens as columns, got shape {tuple(X.shape)}")
    d, n = X.shape
    if params.A1.ndim != 3:
        raise ValueError(f"A1 must be (L, D, d), got shape {tuple(params.A1.shape)}")
    L, D = params.A1.shape[0], params.A1.shape[1]
    empty = empty_case(tuple(params.A1.shape), tuple(X.shape))
    if empty:
        raise ValueError(empty)
    expected = {"Wq": (L, d, d), "Wk": (L, d, d), "Wv": (L, d, d), "A1": (L, D, d), "b1": (L, D),
                "A2": (L, d, D), "b2": (L, d)}
    for name in PARAM_NAMES:
        shape = tuple(getattr(params, name).shape)
        if shape != expected[name]:
            raise ValueError(f"{name} must have shape {expected[name]} for X of shape {(d, n)} and "
                             f"L = {L}, D = {D}; got {shape}")
    for name, value in [("X", X)] + [(name, getattr(params, name)) for name in PARAM_NAMES]:
        if not isinstance(value, jax.core.Tracer) and not np.all(np.isfinite(np.asarray(value))):
            raise ValueError(f"{name} contains NaN or inf")
    if norm is not None and not isinstance(X, jax.core.Tracer):
        columns = np.asarray(X)
        degenerate = np.all(columns == columns[:1], axis=0) if norm == "layer" else np.all(columns == 0, axis=0)
        if degenerate.any():
            what = "constant (layer norm (1) divides by its zero standard deviation)" if norm == "layer" else \
                "zero (RMS norm (8) divides by its zero norm)"
            raise ValueError(f"column {int(np.flatnonzero(degenerate)[0])} of X is {what}")
    return L, d, n, D


def forward(params: Params, X, arithmetic=Exact(), norm: str = "layer", key=None, max_shift: bool = False,
            return_intermediates: bool = False, cast: bool = True):
    """The depth-L transformer (7) (``norm="layer"``) or (10) (``norm="rms"``) applied to X.

    Args:
      params: stacked ``Params`` (or a mapping with their names) of L layers.
      X: (d, n), tokens as columns.
      arithmetic: ``Exact()`` or ``Emulated(...)``.
      norm: ``"layer"`` (eq. 1) or ``"rms"`` (eq. 8).
      key: PRNG key, needed when the arithmetic rounds stochastically; layer l uses
        fold_in(key, l), so results do not depend on how a batch is split.
      max_shift: subtract each softmax column's maximum (not the paper's algorithm).
      return_intermediates: also return ``Intermediates`` stacked over layers.
      cast: round ``params`` and ``X`` into the arithmetic's format first (Model 4.1's operands
        are floating-point numbers); ``False`` when they already are.

    Returns:
      The output (d, n) in the arithmetic's container dtype, and the intermediates if asked.

    >>> import jax
    >>> from boundlab import Emulated
    >>> from boundlab.models.paper import init
    >>> params, X = init(jax.random.key(0), "figure1", d=4, n=3, D=5, L=2)
    >>> forward(params, X, Emulated("fp16")).shape
    (4, 3)
    """
    _norm(norm)
    validate(params, X, norm)
    params = Params(*params) if isinstance(params, Params) else Params(**{k: params[k] for k in PARAM_NAMES})
    if cast:
        params = jax.tree.map(arithmetic.cast, params)
        X = arithmetic.cast(X)

    def step(carry, layer_and_index):
        layer, index = layer_and_index
        layer_key = None if key is None else jax.random.fold_in(key, index)
        result = block(carry, layer, arithmetic, norm, layer_key, max_shift, return_intermediates)
        if return_intermediates:
            return result[0], result[1]
        return result, None

    L = params.A1.shape[0]
    output, stacked = lax.scan(step, X, (params, jnp.arange(L)))
    return (output, stacked) if return_intermediates else output
