"""The errors users of a language model feel: a computed run's next-token logits against the exact
(float64) ones, and where a greedy generation first departs from the exact one.

For logits L (V x n) of ids (n,), the exact distributions p_t = softmax(L[:, t]) and the computed
ones q_t = softmax(L_hat[:, t]), both evaluated in float64 from the logits as given:

* ``logits_error``: ||L_hat[:, t] - L[:, t]||_2 / ||L[:, t]||_2 per token (the paper's normwise
  relative error, Section 3.1, of the model's output: ``boundlab.errors.relative_normwise``);
* ``kl``: KL(p_t || q_t) = sum_i p_ti (log p_ti - log q_ti) per token, in nats;
* ``top1``: argmax L_hat[:, t] = argmax L[:, t] per token;
* ``loss`` and ``loss_exact``: the mean cross entropy of the next tokens ids[1:] under q and p
  (``boundlab.models.decoder.next_token_loss``; ``perplexity`` = exp(loss));
* ``finite``: every computed logit is finite (else the numbers above are NaN where they meet it).

``first_divergence(computed, exact)``: the first step at which two token sequences differ (their
length when they never do).  Pure functions of arrays: they work under ``jit`` and ``vmap``.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from boundlab.errors import relative_normwise
from boundlab.models.decoder.network import next_token_loss


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["logits_error", "kl", "top1", "loss", "loss_exact", "finite"], meta_fields=[])
@dataclasses.dataclass(frozen=True)
class NextTokenErrors:
    """Per-token errors of computed logits against exact ones (module docstring)."""

    logits_error: jax.Array
    kl: jax.Array
    top1: jax.Array
    loss: jax.Array
    loss_exact: jax.Array
    finite: jax.Array

    @property
    def perplexity(self) -> jax.Array:
        return jnp.exp(self.loss)

    @property
    def perplexity_exact(self) -> jax.Array:
        return jnp.exp(self.loss_exact)

    def summary(self) -> dict:
        """Plain numbers for a report (outside ``jit``): medians and maxima over the tokens."""
        return {"logits_error_median": float(jnp.median(self.logits_error)),
                "logits_error_max": float(jnp.max(self.logits_error)),
                "kl_mean": float(jnp.mean(self.kl)), "kl_max": float(jnp.max(self.kl)),
                "top1_agreement": float(jnp.mean(self.top1)), "perplexity": float(self.perplexity),
                "perplexity_exact": float(self.perplexity_exact), "finite": bool(self.finite)}


@jax.jit
def next_token_errors(computed, exact, ids) -> NextTokenErrors:
    """``NextTokenErrors`` of computed logits (V, n) against exact ones (V, n) of ids (n,)."""
    computed, exact = jnp.asarray(computed, jnp.float64), jnp.asarray(exact, jnp.float64)
    logq, logp = jax.nn.log_softmax(computed, axis=0), jax.nn.log_softmax(exact, axis=0)
    kl = jnp.sum(jnp.exp(logp) * (logp - logq), axis=0)
    error = relative_normwise(computed, exact, axis=0)
    top1 = jnp.argmax(computed, axis=0) == jnp.argmax(exact, axis=0)
    return NextTokenErrors(error, kl, top1, next_token_loss(computed, ids), next_token_loss(exact, ids),
                           jnp.all(jnp.isfinite(computed)))


@jax.jit
def first_divergence(computed, exact) -> jax.Array:
    """The first index at which two token sequences (steps,) differ; steps when they agree."""
    differs = computed != exact
    return jnp.where(jnp.any(differs), jnp.argmax(differs), differs.shape[-1])
