"""The decoder family (the Llama architecture: SmolLM2, Llama, Mistral, Qwen without biases), every
operation through an arithmetic policy, built from the block library (``boundlab.models.blocks``).

For token ids (n,) at positions p (default 0, ..., n - 1), tokens as columns as in the paper:

    X_0 = E[ids]^T                                                  (d x n, the embedding's rows)
    h   = X + W_o concat_h(V_g psi(S_h)),  S_h = K_g^T Q_h / sqrt(d_h)   (causal, GQA, RoPE)
          [Q; K; V] = [W_q; W_k; W_v] R_1(X), Q and K rotated at p
    X  <- h + W_down (silu(W_gate R_2(h)) * W_up R_2(h))            (SwiGLU)
    logits = E R_f(X_L)                                             (V x n, tied embeddings)

with R_i(x) = g_i * x / sqrt(mean(x^2) + eps) (``blocks.scaled_rms_norm``), group g = h // (H / H_kv)
(``blocks.attend``), the softmax with each column's maximum subtracted (``max_shift``, as the
reference implementations do) over the keys i <= t; the order of every operation is written out in
``boundlab.models.blocks``.  ``Exact()`` runs it in float64, ``Emulated(fmt)`` rounds every scalar
operation (Model 4.1), ``Native()`` is the plain program ``boundlab.emulate`` and ``first_order``
take: ``emulate(lambda *a: forward(*a, arithmetic=Native()), Emulated(f))`` equals
``forward(..., arithmetic=Emulated(f))`` bit for bit (with the default positions and in
``forward_cached``, whose rotary angles are host constants, ``blocks.rotary_table``, rounded once
in both; angles of positions passed to ``forward`` are computed in the program, which ``emulate``
rounds operation by operation).  The parameters are the caller's operands (``cast_params``
rounds them into a format once).

Layers run under ``lax.scan`` by default (one compiled layer whatever the depth: 30 for SmolLM2);
``unroll_layers=True`` runs them in a Python loop, each in ``jax.named_scope("layer<l>")``, so that
``first_order`` and the mixed-precision advisor see every layer's operations as sites of their own.

``forward_cached`` is the same computation for new tokens against a KV cache (``decoder.cache``);
``generate`` (``decoder.generation``) runs it under ``lax.scan`` over the steps.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from boundlab.accumulation import fold_key
from boundlab.arithmetic import Exact
from boundlab.models.blocks import attend, gated_perceptron, linear, project_qkv, rotary_table, scaled_rms_norm
from boundlab.runtime import draws

LAYER_KEYS = ("attn_norm", "Wq", "Wk", "Wv", "Wo", "ffn_norm", "W_gate", "W_up", "W_down")


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    """The shape of a Llama-architecture decoder (hashable: a static argument under ``jit``).

    d: model width; heads: query heads (d_h = d / heads); kv_heads: key/value heads (grouped-query
    attention, dividing heads); ffn: the gated perceptron's hidden width; layers; vocab; rope_base:
    the rotary embedding's base; eps: the RMS norms' epsilon; tied: the logits use the embedding
    (else a separate ``readout``); max_shift: the softmax subtracts each column's maximum first.
    """

    d: int
    heads: int
    kv_heads: int
    ffn: int
    layers: int
    vocab: int
    rope_base: float = 10000.0
    eps: float = 1e-5
    tied: bool = True
    max_shift: bool = True

    def __post_init__(self):
        for name in ("d", "heads", "kv_heads", "ffn", "layers", "vocab"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"DecoderConfig.{name} must be a positive int, got {value!r}")
        if self.d % self.heads or (self.d // self.heads) % 2:
            raise ValueError(f"d = {self.d} must be heads = {self.heads} times an even head size (rotary pairs)")
        if self.heads % self.kv_heads:
            raise ValueError(f"kv_heads = {self.kv_heads} must divide heads = {self.heads} (grouped-query attention)")
        if not self.eps > 0:
            raise ValueError(f"eps must be > 0 (an RMS norm of a zero vector is 0/0 otherwise), got {self.eps!r}")
        if not self.rope_base > 1:
            raise ValueError(f"rope_base must be > 1, got {self.rope_base!r}")

    @property
    def head_dim(self) -> int:
        return self.d // self.heads


def param_shapes(config: DecoderConfig) -> dict:
    """The shape of every parameter, in the pytree ``forward`` takes."""
    L, d, F, V = config.layers, config.d, config.ffn, config.vocab
    kv = config.kv_heads * config.head_dim
    shapes = {"embed": (V, d), "final_norm": (d,),
              "layers": {"attn_norm": (L, d), "Wq": (L, d, d), "Wk": (L, kv, d), "Wv": (L, kv, d), "Wo": (L, d, d),
                         "ffn_norm": (L, d), "W_gate": (L, F, d), "W_up": (L, F, d), "W_down": (L, d, F)}}
    if not config.tied:
        shapes["readout"] = (V, d)
    return shapes


def check_params(params: dict, config: DecoderConfig) -> None:
    """Raise ValueError naming the first array whose name or shape does not fit ``config``."""
    def walk(want, have, where):
        if not isinstance(have, dict):
            raise ValueError(f"params{where} must be a dict")
        for name, shape in want.items():
            if name not in have:
                raise ValueError(f"params{where} lacks {name!r}")
            if isinstance(shape, dict):
                walk(shape, have[name], f"{where}[{name!r}]")
            elif tuple(jnp.shape(have[name])) != shape:
                raise ValueError(f"params{where}[{name!r}] has shape {tuple(jnp.shape(have[name]))}, expected {shape} "
                                 f"for {config}")

    walk(param_shapes(config), params, "")


def init_params(config: DecoderConfig, key, dtype=jnp.float64) -> dict:
    """Random weights (Llama's initialisation: N(0, 0.02^2) matrices and embedding, norm gains 1)."""
    shapes = param_shapes(config)
    leaves, tree = jax.tree.flatten(shapes, is_leaf=lambda s: isinstance(s, tuple))
    keys = jax.random.split(key, len(leaves))
    names = [jax.tree_util.keystr(path) for path, _ in jax.tree.flatten_with_path(
        shapes, is_leaf=lambda s: isinstance(s, tuple))[0]]
    values = [jnp.ones(shape, dtype) if "norm" in name else 0.02 * draws.normal(k, shape, dtype)
              for name, shape, k in zip(names, leaves, keys)]
    return jax.tree.unflatten(tree, values)


def cast_params(params: dict, arithmetic) -> dict:
    """The parameters rounded into the arithmetic's format once (Model 4.1's operands)."""
    return jax.tree.map(arithmetic.cast, params)


# -- one layer ------------------------------------------------------------------------------------
def _norm(X, gain, config, arithmetic, key, which):
    with jax.named_scope(f"norm{which}"):
        return scaled_rms_norm(X, gain, config.eps, arithmetic, key)


def _residual(X, Y, arithmetic, key):
    with jax.named_scope("residual"):
        return arithmetic.add(X, Y, key)


def _feed_forward(h, layer, config, arithmetic, key):
    N2 = _norm(h, layer["ffn_norm"], config, arithmetic, fold_key(key, 3), 2)
    with jax.named_scope("feed_forward"):
        fed = gated_perceptron(N2, layer["W_gate"], layer["W_up"], layer["W_down"], arithmetic, fold_key(key, 4))
    return _residual(h, fed, arithmetic, fold_key(key, 5))


def _project(X, layer, positions, config, arithmetic, key, angles=None):
    N1 = _norm(X, layer["attn_norm"], config, arithmetic, fold_key(key, 0), 1)
    with jax.named_scope("attention"):
        return project_qkv(N1, layer["Wq"], layer["Wk"], layer["Wv"], config.heads, config.kv_heads, arithmetic,
                           fold_key(key, 1), positions, config.rope_base, angles=angles)


def _attention_out(X, O, layer, arithmetic, key):
    with jax.named_scope("attention"), jax.named_scope("output"):
        attended = linear(layer["Wo"], None, O, arithmetic, fold_key(fold_key(key, 1), 7))
    return _residual(X, attended, arithmetic, fold_key(key, 2))


def block(X, layer, positions, mask, config: DecoderConfig, arithmetic=Exact(), key=None, angles=None):
    """One decoder layer on the columns of X (d x n) at ``positions`` (n,) with the attention
    ``mask`` (n x n): h = X + A(R_1(X)), X <- h + F(R_2(h)) (module docstring); ``angles``: the
    rotary (cos, sin) of the positions (``blocks.rotary_table``)."""
    Q, K, V = _project(X, layer, positions, config, arithmetic, key, angles)
    with jax.named_scope("attention"):
        O, _, _ = attend(Q, K, V, mask, arithmetic, fold_key(key, 1), config.max_shift)
    h = _attention_out(X, O, layer, arithmetic, key)
    return _feed_forward(h, layer, config, arithmetic, key)


def embed(params, ids):
    """X_0 = E[ids]^T (d x n): the embedding's rows, operands (no operation)."""
    return jnp.take(params["embed"], ids, axis=0).T


def readout(params, X, config: DecoderConfig, arithmetic=Exact(), key=None):
    """logits = E R_f(X) (V x n), with the readout matrix when the embeddings are not tied."""
    with jax.named_scope("final_norm"):
        N = scaled_rms_norm(X, params["final_norm"], config.eps, arithmetic, fold_key(key, 0))
    with jax.named_scope("logits"):
        return arithmetic.matmul(params["embed"] if config.tied else params["readout"], N, fold_key(key, 1))


def causal_positions_mask(key_positions, query_positions):
    """mask[i, t]: key i (at ``key_positions[i]``, negative for an empty cache slot) is visible to
    query t: 0 <= key position <= query position."""
    kp, qp = key_positions[:, None], query_positions[None, :]
    return (kp >= 0) & (kp <= qp)


def forward(params, ids, config: DecoderConfig, arithmetic=Exact(), key=None, positions=None,
            return_layers: bool = False, unroll_layers: bool = False):
    """Logits (V, n) of one sequence of ids (n,) (module docstring); with ``return_layers`` also
    the hidden states (L + 1, d, n): the embedding and each layer's output."""
    n = ids.shape[0]
    angles = None
    if positions is None:  # the angles as host constants, operands rounded once (blocks.rotary_table)
        positions, angles = np.arange(n), rotary_table(n, config.head_dim, config.rope_base)
    positions = jnp.asarray(positions)
    mask = causal_positions_mask(positions, positions)
    X = embed(params, ids)
    if unroll_layers:
        states = [X]
        for index in range(config.layers):
            layer = jax.tree.map(lambda a, i=index: a[i], params["layers"])
            with jax.named_scope(f"layer{index + 1}"):
                X = block(X, layer, positions, mask, config, arithmetic, fold_key(key, index + 1), angles=angles)
            states.append(X)
        states = jnp.stack(states)
    else:
        def step(Y, item):
            index, layer = item
            Y = block(Y, layer, positions, mask, config, arithmetic, fold_key(key, index + 1), angles=angles)
            return Y, Y

        first = X
        X, rest = lax.scan(step, X, (jnp.arange(config.layers), params["layers"]))
        states = jnp.concatenate([first[None], rest])
    logits = readout(params, X, config, arithmetic, fold_key(key, config.layers + 1))
    return (logits, states) if return_layers else logits


def forward_batch(params, ids, config: DecoderConfig, arithmetic=Exact(), key=None, return_layers: bool = False,
                  unroll_layers: bool = False):
    """``forward`` mapped over sequences ids (B, n): logits (B, V, n); stochastic rounding uses
    fold_in(key, b) for sequence b."""
    keys = None if key is None else jax.vmap(lambda b: jax.random.fold_in(key, b))(jnp.arange(ids.shape[0]))

    def one(sequence, k):
        return forward(params, sequence, config, arithmetic, k, None, return_layers, unroll_layers)

    return jax.vmap(one, in_axes=(0, None if keys is None else 0))(ids, keys)


def attention_maps(params, states, config: DecoderConfig, arithmetic=Exact()):
    """Every layer's scores S and softmax P (L, H, n keys, n queries), from the layers' inputs
    ``states[:-1]`` (the hidden states of ``forward(..., return_layers=True)``: with the exact
    states and ``Exact()``, the very S and P the exact forward computes)."""
    n = states.shape[-1]
    positions, angles = np.arange(n), rotary_table(n, config.head_dim, config.rope_base)
    mask = causal_positions_mask(jnp.asarray(positions), jnp.asarray(positions))

    def one(item):
        X, layer = item
        Q, K, V = _project(X, layer, positions, config, arithmetic, None, angles)
        _, S, P = attend(Q, K, V, mask, arithmetic, None, config.max_shift)
        return S, P

    return lax.map(one, (states[:-1], params["layers"]))


def next_token_loss(logits, ids):
    """Mean cross entropy (nats) of each next token: logits (V, n) of ids (n,), the targets ids[1:]
    (float64 log-softmax of the logits as given)."""
    logp = jax.nn.log_softmax(jnp.asarray(logits, jnp.float64)[:, :-1], axis=0)
    return -jnp.mean(jnp.take_along_axis(logp, ids[None, 1:], axis=0))
