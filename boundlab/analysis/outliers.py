"""The outlier regimes of a real language model (the paper's v2 questions), measured: massive
activations in the residual stream, attention sinks, and what the RMS norm and the softmax make of
them in a rounded arithmetic.

* ``massive_activations(states)``: per layer (states (L + 1, d, n), 0 the embedding) the largest
  |x_it|, the stream's rms sqrt(mean x^2), the largest per-token ratio max_i |x_it| / rms(x_t)
  (at most sqrt(d)), and the tokens whose largest entry carries more than ``share`` (default
  1/2) of their squared norm, max_i x_it^2 / ||x_t||_2^2 > share: one coordinate dominates
  the token, the regime Sun et al. (2024) call massive activations.
* ``sink_mass(P)``: per layer and head the mean over queries t >= 1 of P[0, t], the attention on
  the first token (P (L, H, n, n) from ``decoder.attention_maps``).
* ``rms_norm_errors(X, fmt)``: per token rho_c(fl(R(x^)), R(x^)) with x^ = x rounded into the
  format and R(x) = x / sqrt(mean(x^2) + eps) every operation rounded (``blocks.scaled_rms_norm``
  with unit gain), beside Lemma 4.6's bound (d/2 + 3) u (one more u/2 for the + eps) and the
  componentwise condition number kappa_cc of Lemma 3.6 (<= 2 for a generic x: the RMS norm is as
  well conditioned with an outlier as without).  The lemma assumes no overflow: ``in_range`` says
  whether sum_i x^_i^2 stays below the format's largest number (fp16's 65504 is passed by a token
  whose largest entry exceeds 256), and no underflow: ``normal`` says whether every nonzero
  square x^_i^2 and output R(x^)_i is at least the smallest normal number (beside a massive
  entry, a token's small entries give outputs that fp16 flushes to subnormals or zero);
* ``softmax_errors(S, mask, fmt)``: per column rho_c(fl(psi(s^)), psi(s^)) over its visible keys,
  beside a bound for the max-shifted softmax psi(s - m), m = max_i s_i, that libraries compute:
  Lemma 4.19's (n_t + 3) u for the exponentials, sum and division (n_t visible keys), plus
  Corollary 4.20's 2 ||delta s||_inf with the shift's rounding as the input perturbation,
  |fl(s_i - m) - (s_i - m)| <= |s_i - m| u: in all (n_t + 3 + 2 (max s - min s)) u.  When one score
  dominates (an attention sink) the spread max s - min s is large and the shift's term is the
  bound; Lemma 4.19 alone, for the unshifted softmax, is then below the measured error.  The
  lemmas assume no underflow: ``normal`` says whether every visible probability is at least the
  format's smallest normal number (a sink pushes the others below it).

Pure functions of arrays, jit-compiled.  Only the first-order quantities are bounds; the
measurement is the arithmetic's own.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from boundlab.arithmetic import Emulated, Exact
from boundlab.condition.closed_forms import rms_norm as rms_norm_condition
from boundlab.errors import relative_componentwise
from boundlab.formats import get_format
from boundlab.models.blocks import scaled_rms_norm, softmax

SHARE = 0.5


@functools.partial(jax.jit, static_argnames=("share",))
def massive_activations(states, share: float = SHARE) -> dict:
    """Per layer: ``max_abs``, ``rms``, ``max_ratio`` (max over tokens of max_i |x_it| / rms(x_t))
    and ``massive_tokens`` (how many tokens' largest entry carries more than ``share`` of their
    squared norm); per layer and token ``massive`` (L + 1, n), boolean."""
    states = jnp.asarray(states, jnp.float64)
    squares = states * states
    token_sq = jnp.sum(squares, axis=1)
    largest = jnp.max(squares, axis=1)
    token_ratio = jnp.sqrt(largest * states.shape[1] / jnp.where(token_sq > 0, token_sq, 1))
    massive = largest > share * token_sq
    return {"max_abs": jnp.max(jnp.abs(states), axis=(1, 2)), "rms": jnp.sqrt(jnp.mean(squares, axis=(1, 2))),
            "max_ratio": jnp.max(token_ratio, axis=1), "massive_tokens": jnp.sum(massive, axis=1), "massive": massive}


@jax.jit
def sink_mass(P) -> jax.Array:
    """Mean over queries t >= 1 of P[..., 0, t] (the first key's share), per leading index."""
    return jnp.mean(jnp.asarray(P, jnp.float64)[..., 0, 1:], axis=-1)


@functools.partial(jax.jit, static_argnames=("fmt", "eps"))
def rms_norm_errors(X, fmt: str, eps: float = 0.0) -> dict:
    """Per column of X (d, n): the measured ``error`` rho_c(fl(R(x^)), R(x^)) in ``fmt``, the
    ``bound`` coefficient times u (module docstring), ``kappa_cc`` (Lemma 3.6), the assumptions
    ``in_range`` and ``normal``, and ``finite``."""
    low, format_ = Emulated(fmt), get_format(fmt)
    rounded = low.cast(X)
    wide = rounded.astype(jnp.float64)  # x^, exactly
    gain = jnp.ones(X.shape[0], jnp.float64)
    computed = scaled_rms_norm(rounded, low.cast(gain), eps, low).astype(jnp.float64)
    exact = scaled_rms_norm(wide, gain, eps, Exact())
    error = relative_componentwise(computed, exact, axis=0)
    kappa = jax.vmap(lambda x: rms_norm_condition(x).kappa_cc)(wide.T)

    def normal(v):
        return jnp.all((v == 0) | (jnp.abs(v) >= format_.min_normal), axis=0)

    return {"error": error, "bound": (X.shape[0] / 2 + 3.5) * format_.unit_roundoff, "kappa_cc": kappa,
            "in_range": jnp.sum(wide * wide, axis=0) <= format_.max_finite,
            "normal": normal(wide * wide) & normal(exact),
            "finite": jnp.all(jnp.isfinite(computed), axis=0)}


@functools.partial(jax.jit, static_argnames=("fmt", "max_shift"))
def softmax_errors(S, mask, fmt: str, max_shift: bool = True) -> dict:
    """Per column of the scores S (m, n) with ``mask`` (m, n): the measured ``error``
    rho_c(fl(psi(s^)), psi(s^)) over the visible keys in ``fmt``, the ``bound``
    (n_t + 3 + 2 (max s^ - min s^)) u, Lemma 4.19's part of it ``lemma_4_19`` = (n_t + 3) u,
    ``normal`` and ``finite`` (module docstring)."""
    low, format_ = Emulated(fmt), get_format(fmt)
    rounded = low.cast(S)
    wide = rounded.astype(jnp.float64)  # s^, exactly
    computed = softmax(rounded, low, mask=mask, max_shift=max_shift).astype(jnp.float64)
    exact = softmax(wide, Exact(), mask=mask, max_shift=max_shift)
    error = relative_componentwise(jnp.where(mask, computed, 0), jnp.where(mask, exact, 0), axis=0)
    visible = jnp.sum(mask, axis=0).astype(jnp.float64)
    spread = jnp.max(jnp.where(mask, wide, -jnp.inf), axis=0) - jnp.min(jnp.where(mask, wide, jnp.inf), axis=0)
    spread = jnp.where(visible > 0, spread, 0) if max_shift else jnp.zeros_like(spread)
    lemma_4_19 = (visible + 3) * format_.unit_roundoff
    return {"error": error, "bound": lemma_4_19 + 2 * spread * format_.unit_roundoff, "lemma_4_19": lemma_4_19,
            "normal": jnp.all(jnp.where(mask, exact >= format_.min_normal, True), axis=0),
            "finite": jnp.all(jnp.isfinite(computed), axis=0)}
