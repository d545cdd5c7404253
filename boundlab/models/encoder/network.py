"""A general transformer encoder family, every operation through an arithmetic policy.

Beside the paper's network (single head, pre-norm, ReLU, causal; ``boundlab.models.paper``) this
family covers the models people run: multi-head attention with biases and an output projection,
GELU (exact erf form and tanh form) or ReLU, post-norm (BERT) or pre-norm (GPT-2) blocks, layer
norms with an epsilon and an affine map, causal or bidirectional attention with a padding mask,
token/position/type embeddings and mean pooling.  It is built from the block library
(``boundlab.models.blocks``), as the paper's network is, so ``Exact()`` runs it in float64, ``Emulated(fmt)`` rounds every scalar operation (Model 4.1),
and ``boundlab.emulate``/``first_order`` see the same sequence of operations when it is traced
with ``Exact()``: ``emulate(lambda *a: encode(*a, arithmetic=Exact()), Emulated(f))`` equals
``encode(..., arithmetic=Emulated(f))`` bit for bit.

Tokens are columns, as in the paper: one sequence is X in R^{d x n}; batches are mapped with
``jax.vmap`` (``encode_batch``).  The parts are the block library's (``boundlab.models.blocks``,
where the order of every operation is written out): ``linear``, ``affine_layer_norm``,
``activation`` (GELU in its erf or tanh form, or ReLU), ``grouped_query_attention`` with as many
key/value heads as query heads, biases and a padding mask; this module adds the embeddings
(word + position + type, then the norm) and mean pooling over the valid tokens,
fl(fl(sum_valid x_t) / n_valid).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from jax import lax

from boundlab.accumulation import fold_key
from boundlab.arithmetic import Exact
from boundlab.models.blocks import ACTIVATIONS, activation, affine_layer_norm, attention_mask, grouped_query_attention, linear

NORM_POSITIONS = ("post", "pre")
LAYER_KEYS = ("Wq", "bq", "Wk", "bk", "Wv", "bv", "Wo", "bo", "ln1_gamma", "ln1_beta", "W1", "b1", "W2", "b2",
              "ln2_gamma", "ln2_beta")
EMBEDDING_KEYS = ("word", "position", "type", "ln_gamma", "ln_beta")


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """The shape and the variant of an encoder (hashable: a static argument under ``jit``).

    d: model width; heads: attention heads (d_h = d / heads); ffn: hidden width of the
    feed-forward block; layers: number of blocks; norm: ``"post"`` (BERT: x <- N(x + F(x))) or
    ``"pre"`` (x <- x + F(N(x)); such stacks usually end with one more ``layer_norm``, which the
    caller applies); activation: one of ``ACTIVATIONS``; causal:
    causal attention mask (else bidirectional); eps: the layer norms' epsilon; max_shift: softmax
    subtracts each column's maximum first.
    """

    d: int
    heads: int
    ffn: int
    layers: int
    norm: str = "post"
    activation: str = "gelu"
    causal: bool = False
    eps: float = 1e-12
    max_shift: bool = True

    def __post_init__(self):
        for name in ("d", "heads", "ffn", "layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"EncoderConfig.{name} must be a positive int, got {value!r}")
        if self.d % self.heads:
            raise ValueError(f"d = {self.d} is not a multiple of heads = {self.heads}")
        if self.norm not in NORM_POSITIONS:
            raise ValueError(f"norm must be one of {NORM_POSITIONS}, got {self.norm!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if not self.eps >= 0:
            raise ValueError(f"eps must be >= 0, got {self.eps!r}")

    @property
    def head_dim(self) -> int:
        return self.d // self.heads


def check_params(params: dict, config: EncoderConfig) -> None:
    """Raise ValueError naming the first array whose name or shape does not fit ``config``."""
    d, F, L = config.d, config.ffn, config.layers
    want = {"Wq": (L, d, d), "bq": (L, d), "Wk": (L, d, d), "bk": (L, d), "Wv": (L, d, d), "bv": (L, d),
            "Wo": (L, d, d), "bo": (L, d), "ln1_gamma": (L, d), "ln1_beta": (L, d), "W1": (L, F, d),
            "b1": (L, F), "W2": (L, d, F), "b2": (L, d), "ln2_gamma": (L, d), "ln2_beta": (L, d)}
    layers = params.get("layers")
    if not isinstance(layers, dict):
        raise ValueError("params must hold a dict 'layers' of stacked per-layer arrays")
    for name, shape in want.items():
        if name not in layers:
            raise ValueError(f"params['layers'] lacks {name!r} (expected shape {shape})")
        if tuple(jnp.shape(layers[name])) != shape:
            raise ValueError(f"params['layers'][{name!r}] has shape {tuple(jnp.shape(layers[name]))}, "
                             f"expected {shape} for {config}")
    emb = params.get("embeddings")
    if emb is not None:
        for name in EMBEDDING_KEYS:
            if name not in emb:
                raise ValueError(f"params['embeddings'] lacks {name!r}")
            if jnp.shape(emb[name])[-1] != d:
                raise ValueError(f"params['embeddings'][{name!r}] has width {jnp.shape(emb[name])[-1]}, expected {d}")


# -- layers (the block library's, configured) ----------------------------------------------------
def multi_head_attention(X, layer, mask, config: EncoderConfig, arithmetic=Exact(), key=None,
                         return_internals: bool = False):
    """Multi-head self-attention with biases and output projection: W_o concat_h(V_h psi(S_h)) + b_o,
    S_h[i, t] = k_{h,i}^T q_{h,t} / sqrt(d_h) over the keys visible in ``mask`` (n x n):
    ``blocks.grouped_query_attention`` with as many key/value heads as query heads.

    ``return_internals`` also gives the scores and the softmax matrices, (heads, n, n) each.
    """
    return grouped_query_attention(X, layer["Wq"], layer["Wk"], layer["Wv"], layer["Wo"], config.heads, config.heads,
                                   arithmetic, key, mask=mask, bq=layer["bq"], bk=layer["bk"], bv=layer["bv"],
                                   bo=layer["bo"], max_shift=config.max_shift, return_internals=return_internals)


def head_attention(X, Wq, bq, Wk, bk, Wv, bv):
    """One head's attention, exact and bidirectional, on the valid tokens X (d x n):
    V psi(K^T Q / sqrt(d_h)) (d_h x n), with K = W_k X + b_k and so on (the function whose
    condition number the real-model study takes)."""
    dh = Wq.shape[0]
    S = (Wk @ X + bk[:, None]).T @ (Wq @ X + bq[:, None]) / math.sqrt(dh)
    return (Wv @ X + bv[:, None]) @ jax.nn.softmax(S, axis=0)


def feed_forward(X, layer, config: EncoderConfig, arithmetic=Exact(), key=None):
    """W_2 act(W_1 x + b_1) + b_2 for each column (eq. 2 with GELU or ReLU)."""
    with jax.named_scope("ffn_in"):
        hidden = linear(layer["W1"], layer["b1"], X, arithmetic, fold_key(key, 0))
    with jax.named_scope("activation"):
        active = activation(hidden, config.activation, arithmetic, fold_key(key, 1))
    with jax.named_scope("ffn_out"):
        return linear(layer["W2"], layer["b2"], active, arithmetic, fold_key(key, 2))


def block(X, layer, mask, config: EncoderConfig, arithmetic=Exact(), key=None):
    """One encoder block: post-norm x <- N_2(h + F(h)), h = N_1(x + A(x)) (BERT), or pre-norm
    x <- h + F(N_2(h)), h = x + A(N_1(x)) (eq. 6 with multi-head attention and affine norms)."""
    eps = config.eps

    def norm(Y, which, k):
        with jax.named_scope(f"norm{which}"):
            return affine_layer_norm(Y, layer[f"ln{which}_gamma"], layer[f"ln{which}_beta"], eps, arithmetic, k)

    def residual(Y, Z, k):
        with jax.named_scope("residual"):
            return arithmetic.add(Y, Z, k)

    if config.norm == "post":
        with jax.named_scope("attention"):
            attended = multi_head_attention(X, layer, mask, config, arithmetic, fold_key(key, 0))
        h = norm(residual(X, attended, fold_key(key, 1)), 1, fold_key(key, 2))
        with jax.named_scope("feed_forward"):
            fed = feed_forward(h, layer, config, arithmetic, fold_key(key, 3))
        return norm(residual(h, fed, fold_key(key, 4)), 2, fold_key(key, 5))
    with jax.named_scope("attention"):
        attended = multi_head_attention(norm(X, 1, fold_key(key, 2)), layer, mask, config, arithmetic, fold_key(key, 0))
    h = residual(X, attended, fold_key(key, 1))
    with jax.named_scope("feed_forward"):
        fed = feed_forward(norm(h, 2, fold_key(key, 5)), layer, config, arithmetic, fold_key(key, 3))
    return residual(h, fed, fold_key(key, 4))


def embed(embeddings, ids, types, eps: float, arithmetic=Exact(), key=None):
    """N(word[ids] + position[0:n] + type[types]) as columns (d, n); the table rows are operands
    (rounded into the format once), the two additions and the norm are rounded."""
    n = ids.shape[0]
    words = jnp.take(embeddings["word"], ids, axis=0).T
    positions = embeddings["position"][:n].T
    kinds = jnp.take(embeddings["type"], types, axis=0).T
    total = arithmetic.add(arithmetic.add(words, positions, fold_key(key, 0)), kinds, fold_key(key, 1))
    return affine_layer_norm(total, embeddings["ln_gamma"], embeddings["ln_beta"], eps, arithmetic, fold_key(key, 2))


def mean_pool(X, valid, arithmetic=Exact(), key=None):
    """fl(fl(sum over valid t of x_t) / n_valid): the sentence embedding of mean pooling."""
    total = arithmetic.sum(jnp.where(valid[None, :], X, 0), axis=1, key=fold_key(key, 0))
    count = arithmetic.cast(jnp.sum(valid).astype(X.dtype))  # an operand: exact up to 2^t
    return arithmetic.div(total, count, fold_key(key, 1))


def encode(params, ids, valid, config: EncoderConfig, arithmetic=Exact(), key=None, types=None,
           return_layers: bool = False, unroll_layers: bool = True):
    """One sequence through the encoder: token ids (n,) and a validity mask (n,) (padding False).

    Returns the mean-pooled embedding (d,) of the last hidden state, and with ``return_layers``
    also the hidden states (L + 1, d, n): the embedding output and each block's output.  With
    ``unroll_layers`` (default) the layers run in a Python loop, each in
    ``jax.named_scope("layer<l>")``, so that ``first_order`` and the mixed-precision advisor see
    every layer's operations as their own sites; otherwise in a ``lax.scan`` (one compiled
    layer: much faster to compile, the same numbers).
    """
    types = jnp.zeros_like(ids) if types is None else types
    with jax.named_scope("embeddings"):
        X = embed(params["embeddings"], ids, types, config.eps, arithmetic, fold_key(key, 0))
    mask = attention_mask(valid, config.causal)
    if unroll_layers:
        states = [X]
        for index in range(config.layers):
            layer = jax.tree.map(lambda a, i=index: a[i], params["layers"])
            with jax.named_scope(f"layer{index + 1}"):
                X = block(X, layer, mask, config, arithmetic, fold_key(key, index + 1))
            states.append(X)
        states = jnp.stack(states)
    else:
        def step(Y, item):
            index, layer = item
            Y = block(Y, layer, mask, config, arithmetic, fold_key(key, index + 1))
            return Y, Y

        first = X
        X, rest = lax.scan(step, X, (jnp.arange(config.layers), params["layers"]))
        states = jnp.concatenate([first[None], rest])
    with jax.named_scope("pooling"):
        pooled = mean_pool(X, valid, arithmetic, fold_key(key, config.layers + 1))
    return (pooled, states) if return_layers else pooled


def encode_batch(params, ids, valid, config: EncoderConfig, arithmetic=Exact(), key=None, types=None,
                 return_layers: bool = False, unroll_layers: bool = True):
    """``encode`` mapped over a batch: ids and valid (B, n); pooled (B, d) (and states (B, L+1, d, n)).
    Stochastic rounding uses fold_in(key, b) for sequence b."""
    B = ids.shape[0]
    types = jnp.zeros_like(ids) if types is None else types
    keys = None if key is None else jax.vmap(lambda b: jax.random.fold_in(key, b))(jnp.arange(B))

    def one(i, v, t, k):
        return encode(params, i, v, config, arithmetic, k, t, return_layers, unroll_layers)

    return jax.vmap(one, in_axes=(0, 0, 0, None if keys is None else 0))(ids, valid, types, keys)
