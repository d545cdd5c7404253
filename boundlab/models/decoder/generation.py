"""A decoder's KV cache, in a chosen storage format, and generation under ``lax.scan``.

The cache holds, per layer and key/value head, the rotated keys and the values of every position
seen so far (``empty_cache``: ``K``, ``V`` (L, H_kv, d_h, m), ``positions`` (m,), -1 for an empty
slot, and the scales).  ``forward_cached`` runs ``network.block``'s operations for new tokens at
positions start, ..., start + n - 1 against the cache: their keys and values are written into it
and their queries attend to every filled slot at a position <= their own.  Masked and empty slots
contribute exact zeros that are added after the visible terms, so with the cache stored as
computed (``CacheFormat()``) and a fixed summation order (``Emulated``) the logits are bit for bit
those of ``network.forward`` on the whole sequence; under ``Exact()`` XLA's float64 dot products
of other shapes may differ in their last bits.

Storage formats (``CacheFormat``), as serving systems store their caches:

* ``CacheFormat()``: the arithmetic's own numbers;
* ``CacheFormat("bf16")``: each stored entry rounded to nearest bf16 (saturating);
* ``CacheFormat("fp8_e4m3", scaled=True)``: per layer and key/value head a scale
  s = amax / 448 from the prompt (static after the prompt, as calibrated scales are; 1 for an
  all-zero head), entries stored as q = RN_sat(x / s) (x / s in the container, then one rounding
  to the format, saturating) and read back as fl(q s) in the arithmetic.

``generate`` prefills the prompt and then produces one token per step under ``lax.scan`` (one
compiled step): greedy (``temperature=0``) or sampled from softmax(logits / temperature) with
``sample_key``.  Rounding keys (stochastic rounding) are folded per step.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from boundlab.accumulation import fold_key
from boundlab.arithmetic import Exact
from boundlab.formats import get_format
from boundlab.models.blocks import attend, rotary_table
from boundlab.models.decoder.network import (DecoderConfig, _attention_out, _feed_forward, _project,
                                             causal_positions_mask, embed, readout)
from boundlab.rounding import round_to


@dataclasses.dataclass(frozen=True)
class CacheFormat:
    """How the KV cache stores keys and values (module docstring): ``fmt`` None (as computed) or a
    format name; ``scaled``: per layer and key/value head scales from the prompt's amax."""

    fmt: str | None = None
    scaled: bool = False

    def __post_init__(self):
        if self.fmt is None and self.scaled:
            raise ValueError("CacheFormat(scaled=True) needs a storage format, e.g. CacheFormat('fp8_e4m3', scaled=True)")
        if self.fmt is not None:
            get_format(self.fmt)  # an unknown name fails here

    def __str__(self) -> str:
        return "as computed" if self.fmt is None else self.fmt + (" per-head scales" if self.scaled else "")


def empty_cache(config: DecoderConfig, length: int, dtype) -> dict:
    """A cache for ``length`` positions: zeros, every slot empty (position -1), scales 1."""
    shape = (config.layers, config.kv_heads, config.head_dim, length)
    scales = jnp.ones((config.layers, config.kv_heads), dtype)
    return {"K": jnp.zeros(shape, dtype), "V": jnp.zeros(shape, dtype),
            "positions": jnp.full((length,), -1, jnp.int32), "scale_K": scales, "scale_V": scales}


def _scale(X, fmt, valid):
    """amax / max_finite per head of X (H_kv, d_h, n) over the valid columns (n,); 1 where a head
    is all zero."""
    amax = jnp.max(jnp.where(valid, jnp.abs(X), 0), axis=(1, 2))
    return jnp.where(amax > 0, amax / get_format(fmt).max_finite, 1).astype(X.dtype)


def _store(X, scale, cache_format: CacheFormat):
    if cache_format.fmt is None:
        return X
    fmt = get_format(cache_format.fmt, overflow="saturate")
    if cache_format.scaled:
        X = X / scale[:, None, None]
    return round_to(X, fmt)


def _read(stored, scale, cache_format: CacheFormat, arithmetic, key):
    if not cache_format.scaled:
        return stored
    return arithmetic.mul(stored, scale[:, None, None], key)


def forward_cached(params, ids, cache, start, config: DecoderConfig, arithmetic=Exact(), key=None,
                   cache_format: CacheFormat = CacheFormat(), calibrate: bool = False, positions=None):
    """Logits (V, n) of new tokens ids (n,) written into cache slots start, ..., start + n - 1,
    and the cache with their keys and values (module docstring).  ``positions`` (n,): the tokens'
    positions (default start, ..., start + n - 1); a negative position marks a padding token, which
    no query sees and which sees nothing (its column is finite garbage).  ``calibrate``: set the
    cache's scales from these tokens (the prompt; padding tokens excluded)."""
    n = ids.shape[0]
    start = jnp.asarray(start, jnp.int32)
    if positions is None:
        positions = start + jnp.arange(n, dtype=jnp.int32)
    positions = jnp.asarray(positions, jnp.int32)
    zero = jnp.zeros((), jnp.int32)
    slots = lax.dynamic_update_slice(cache["positions"], positions, (start,))
    mask = causal_positions_mask(slots, positions)
    table = rotary_table(cache["positions"].shape[0], config.head_dim, config.rope_base)  # host constants
    angles = tuple(jnp.take(t, jnp.maximum(positions, 0), axis=1) for t in table)  # a gather: exact
    X = embed(params, ids)

    def step(Y, item):
        index, layer, K_all, V_all, sK, sV = item
        k = fold_key(key, index + 1)
        Q, K, V = _project(Y, layer, positions, config, arithmetic, k, angles)
        if calibrate and cache_format.scaled:
            sK, sV = (_scale(A, cache_format.fmt, positions >= 0) for A in (K, V))
        K_all = lax.dynamic_update_slice(K_all, _store(K, sK, cache_format), (zero, zero, start))
        V_all = lax.dynamic_update_slice(V_all, _store(V, sV, cache_format), (zero, zero, start))
        K_read = _read(K_all, sK, cache_format, arithmetic, fold_key(k, 20))
        V_read = _read(V_all, sV, cache_format, arithmetic, fold_key(k, 21))
        with jax.named_scope("attention"):
            O, _, _ = attend(Q, K_read, V_read, mask, arithmetic, fold_key(k, 1), config.max_shift)
        h = _attention_out(Y, O, layer, arithmetic, k)
        return _feed_forward(h, layer, config, arithmetic, k), (K_all, V_all, sK, sV)

    X, (K, V, sK, sV) = lax.scan(step, X, (jnp.arange(config.layers), params["layers"], cache["K"], cache["V"],
                                           cache["scale_K"], cache["scale_V"]))
    logits = readout(params, X, config, arithmetic, fold_key(key, config.layers + 1))
    return logits, {"K": K, "V": V, "positions": slots, "scale_K": sK, "scale_V": sV}


def _cache_dtype(params, arithmetic):
    """The arithmetic's container, or the parameters' dtype for ``Native()``."""
    try:
        return arithmetic.dtype
    except ValueError:  # Native(): no container of its own
        return jnp.result_type(*jax.tree.leaves(params))


def _sample_key(key, index):
    return None if key is None else jax.random.fold_in(key, index)


def _choose(logits, temperature: float, sample_key):
    if temperature == 0:
        return jnp.argmax(logits).astype(jnp.int32)
    return jax.random.categorical(sample_key, jnp.asarray(logits, jnp.float64) / temperature).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("steps", "config", "arithmetic", "temperature", "cache_format",
                                             "return_logits"))
def generate(params, prompt, steps: int, config: DecoderConfig, arithmetic=Exact(), key=None, temperature: float = 0.0,
             sample_key=None, cache_format: CacheFormat = CacheFormat(), return_logits: bool = False, length=None):
    """``steps`` new tokens (steps,) after the prompt ids (n0,): the prompt in one cached forward,
    then one token per step under ``lax.scan`` (module docstring); with ``return_logits`` also the
    logits (steps, V) each token was chosen from.  ``length`` (an int or a traced scalar, default
    n0): only the first ``length`` ids are the prompt, the rest padding (``pad_prompts``); the
    tokens are those of ``generate(prompt[:length])``, bit for bit where the sums run in index
    order (recursive accumulation: the padding's exact zeros change no partial sum)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0: greedy), got {temperature}")
    if temperature > 0 and sample_key is None:
        raise ValueError("sampling (temperature > 0) needs sample_key=")
    n0 = prompt.shape[0]
    length = jnp.asarray(n0 if length is None else length, jnp.int32)
    cache = empty_cache(config, n0 + steps, _cache_dtype(params, arithmetic))
    slots = jnp.arange(n0, dtype=jnp.int32)
    logits, cache = forward_cached(params, prompt, cache, 0, config, arithmetic, fold_key(key, 0), cache_format,
                                   calibrate=True, positions=jnp.where(slots < length, slots, -1))
    first = jnp.take(logits, length - 1, axis=1)
    token = _choose(first, temperature, _sample_key(sample_key, 0))

    def step(carry, index):
        token, cache = carry
        logits, cache = forward_cached(params, token[None], cache, n0 + index, config, arithmetic,
                                       fold_key(key, index + 1), cache_format, positions=(length + index)[None])
        new = _choose(logits[:, 0], temperature, _sample_key(sample_key, index + 1))
        return (new, cache), (new, logits[:, 0])

    _, (tokens, chosen_from) = lax.scan(step, (token, cache), jnp.arange(steps - 1, dtype=jnp.int32))
    tokens = jnp.concatenate([token[None], tokens])
    all_logits = jnp.concatenate([first[None], chosen_from])
    return (tokens, all_logits) if return_logits else tokens


def pad_prompts(prompts, pad: int | None = None):
    """Prompts of different lengths as one array (B, n_max) and their lengths (B,) for
    ``generate_batch``: each padded at its end with its own last token or with ``pad`` (the
    padding is never seen: any token id of the vocabulary will do)."""
    prompts = [np.asarray(p, np.int32).ravel() for p in prompts]
    if not prompts or any(p.size == 0 for p in prompts):
        raise ValueError("pad_prompts takes one or more non-empty prompts")
    width = max(p.size for p in prompts)
    padded = [np.concatenate([p, np.full(width - p.size, p[-1] if pad is None else pad, np.int32)]) for p in prompts]
    return jnp.asarray(np.stack(padded)), jnp.asarray([p.size for p in prompts], jnp.int32)


def generate_batch(params, prompts, lengths, steps: int, config: DecoderConfig, arithmetic=Exact(), key=None,
                   temperature: float = 0.0, sample_key=None, cache_format: CacheFormat = CacheFormat(),
                   return_logits: bool = False):
    """``generate`` of each padded prompt (B, n_max) of ``lengths`` (B,) (``pad_prompts``): one
    compiled program for the batch, (B, steps) tokens.  Rounding and sampling keys are folded per
    prompt (fold_in(key, b)).  The batch may be sharded over devices (``jax.sharding``): the
    computation per prompt is the same on any device."""
    B = prompts.shape[0]
    fold = (lambda k: None if k is None else jax.vmap(lambda b: jax.random.fold_in(k, b))(jnp.arange(B)))

    def one(prompt, length, k, s):
        return generate(params, prompt, steps, config, arithmetic, k, temperature, s, cache_format, return_logits,
                        length)

    keys, samples = fold(key), fold(sample_key)
    return jax.vmap(one, in_axes=(0, 0, None if keys is None else 0, None if samples is None else 0))(
        prompts, lengths, keys, samples)


def shard_prompts(prompts, lengths, devices=None):
    """The padded prompts (B, n_max) and their lengths (B,) placed across ``devices`` (default all)
    along the batch axis (``jax.sharding.NamedSharding``), for ``generate_batch``: each device
    generates for its prompts.  The batch is padded to a multiple of the device count by repeating
    the last prompt; keep the first B rows of the result.  The tokens are those of one device (the
    same program per prompt; tests/test_decoder.py checks it on 4 host devices)."""
    devices = list(jax.devices() if devices is None else devices)
    B = prompts.shape[0]
    if lengths.shape != (B,):
        raise ValueError(f"lengths has shape {lengths.shape}, expected ({B},) for prompts of shape {prompts.shape}")
    extra = -B % len(devices)
    if extra:
        prompts = jnp.concatenate([prompts, jnp.repeat(prompts[-1:], extra, axis=0)])
        lengths = jnp.concatenate([lengths, jnp.repeat(lengths[-1:], extra)])
    sharding = NamedSharding(Mesh(np.asarray(devices), ("prompts",)), PartitionSpec("prompts"))
    return jax.device_put(prompts, sharding), jax.device_put(lengths, sharding)
