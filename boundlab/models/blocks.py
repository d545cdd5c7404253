"""The block library: the paper's transformer parts (Section 2.2) and the parts of decoder LLMs
(Llama: RMS norm with epsilon and gain, rotary position embeddings, grouped-query attention, the
gated perceptron), each evaluated in a given arithmetic.

Tokens are columns: X in R^{d x n}.  Every function takes an ``arithmetic`` (``Exact()`` or
``Emulated(...)``) and, for stochastic rounding, a PRNG ``key``.  The order of operations is the
one the proofs of Section 4 analyse, so that the bounds speak about the computation run here:

* RMS norm (8), proof of Lemma 4.6: R(x)_i = fl( fl(sqrt(d) x_i) / fl(||x||_2) ), with
  ||x||_2 = fl(sqrt( recursive sum of fl(x_j^2) )).  The constant sqrt(d) is rounded to the
  format once (it is an operand), which the paper treats as exact.
* centring, proof of Lemma 4.10: c(x)_i = fl(x_i - fl(fl(sum_j x_j) / d)).
* layer norm (1), proof of Lemma 4.11: N(x) = R(c(x)), the RMS norm of the centred vector
  (equal to (x - mu e) / sqrt(nu) with the biased variance nu, as written in (1)).
* perceptron (2), Lemma 4.3.3 and proof of Lemma 4.14: fl(fl(A_1 x) + b_1) (bias added after
  the product), ReLU (exact), fl(fl(A_2 y) + b_2).
* similarity scores (3), proof of Lemma 4.17: q_t = fl(W_q x_t), k_i = fl(W_k x_i),
  S_i = fl( fl(k_i^T q_t) / fl(sqrt(d)) ): one scaling of each dot product.
* softmax (4), as written (no max shift unless asked): e_i = fl(exp(s_i)),
  sigma = recursive sum of e_i, psi_i = fl(e_i / sigma).
* attention (5), proof of Lemma 4.21: column t is fl(W_v fl(X_t psi_t)).

Decoder parts, in the order the reference implementations (Hugging Face's Llama) evaluate them:

* scaled RMS norm: y_i = fl(g_i fl(x_i / fl(sqrt(fl(fl(sum_j fl(x_j^2)) / d) + eps)))), the sum
  recursive; d and eps are operands (rounded once);
* rotary embedding of a head's vectors (d_h x n) at positions p, pairs (i, i + d_h/2) ("rotate
  half"): y_i = fl(fl(x_i c) - fl(x_{i+h} s)), y_{i+h} = fl(fl(x_{i+h} c) + fl(x_i s)) with
  c = cos(p theta_i), s = sin(p theta_i), theta_i = base^(-2i/d_h), computed in float64 and
  rounded once (operands, like sqrt(d));
* grouped-query attention: H query heads share H_kv key/value heads (head h uses group
  h // (H / H_kv)); per head S = fl(fl(K^T Q) / fl(sqrt(d_h))) with Q, K rotated when asked,
  the causal softmax with its maximum subtracted (as libraries do), O_h = fl(V_h P_h), and the
  output fl(W_o [O_1; ...; O_H]);
* gated perceptron (SwiGLU): fl(W_down fl(silu(fl(W_gate x)) * fl(W_up x))), silu(z) =
  fl(z fl(logistic(z))) with the logistic evaluated in float64 and rounded once.

Parts of the encoder family and the character model (BERT, GPT-2; ``boundlab.models.encoder``,
``boundlab.models.charlm``):

* linear map, Lemma 4.3.3's order: fl(fl(W x) + b), W in PyTorch's (out, in) layout;
* affine layer norm with an epsilon: c = c(x) (centring above), v = fl(fl(sum_j fl(c_j^2)) / d),
  N = fl(c / fl(sqrt(fl(v + eps)))), then fl(fl(gamma N) + beta); with eps = 0 the paper's
  R(c(x)) (eq. 1) before the affine map;
* GELU, erf form: fl(fl(0.5 x) fl(1 + fl(erf(fl(x / fl(sqrt 2)))))); tanh form:
  fl(fl(0.5 x) fl(1 + fl(tanh(fl(c fl(x + fl(0.044715 fl(fl(x x) x)))))))), c = sqrt(2/pi); erf
  and tanh evaluated in float64 and rounded once (``Policy.apply``);
* attention with biases and a padding mask is ``grouped_query_attention`` with H_kv = H: biases
  added after each product, fl(fl(W_q x) + b_q), and the output fl(fl(W_o y) + b_o).

Every function also runs in ``Native()`` arithmetic: plain ``jax.numpy`` in the inputs' dtype,
one primitive per operation above, which is the program ``boundlab.emulate`` rounds (Model 4.1)
and the one a model is trained or served with natively.

Causal attention is computed for all columns at once with masked entries set to exact zeros,
which add nothing and change no rounding: the result is bit for bit that of the column-by-
column recursion.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from boundlab.runtime.compilation import compiled
from boundlab.accumulation import fold_key
from boundlab.arithmetic import Exact
from boundlab.quantities import causal_mask

ACTIVATIONS = ("gelu", "gelu_tanh", "relu")


def sqrt_dim(d: int, arithmetic) -> jax.Array:
    """fl(sqrt(d)): the constant of (3) and (8) as a format number (rounded to nearest).

    sqrt(d) is computed in float64 and rounded once more to the format, which equals the
    correctly rounded value for every format boundlab emulates (p = 53 >= 2t + 2).
    """
    return arithmetic.cast(math.sqrt(d))


@compiled(static_argnames=('arithmetic',))
def rms_norm(X, arithmetic=Exact(), key=None):
    """R(x) = sqrt(d) x / ||x||_2 (eq. 8), for each column of X (or a vector x in R^d)."""
    d = X.shape[0]
    squares = arithmetic.mul(X, X, fold_key(key, 0))
    norm = arithmetic.sqrt(arithmetic.sum(squares, axis=0, key=fold_key(key, 1)), fold_key(key, 2))
    scaled = arithmetic.mul(sqrt_dim(d, arithmetic), X, fold_key(key, 3))
    return arithmetic.div(scaled, norm, fold_key(key, 4))


@compiled(static_argnames=('arithmetic',))
def centring(X, arithmetic=Exact(), key=None):
    """c(x) = x - mu(x) e with the sample mean mu (Lemma 3.7), for each column of X."""
    d = X.shape[0]
    total = arithmetic.sum(X, axis=0, key=fold_key(key, 0))
    mean = arithmetic.div(total, arithmetic.cast(float(d)), fold_key(key, 1))
    return arithmetic.sub(X, mean, fold_key(key, 2))


@compiled(static_argnames=('arithmetic',))
def layer_norm(X, arithmetic=Exact(), key=None):
    """N(x) = (x - mu e) / sqrt(nu) (eq. 1, biased variance), evaluated as R(c(x))."""
    return rms_norm(centring(X, arithmetic, fold_key(key, 0)), arithmetic, fold_key(key, 1))


NORMS = {"layer": layer_norm, "rms": rms_norm}


@compiled(static_argnames=('arithmetic', 'return_hidden'))
def perceptron(X, A1, b1, A2, b2, arithmetic=Exact(), key=None, return_hidden=False):
    """M(x) = A_2 relu(A_1 x + b_1) + b_2 (eq. 2) for each column of X.

    ``return_hidden`` also gives L_1(x) = fl(fl(A_1 x) + b_1) before the ReLU (Lemma 4.14's
    genericity condition is about it).
    """
    hidden = arithmetic.add(arithmetic.matmul(A1, X, fold_key(key, 0)), b1[:, None], fold_key(key, 1))
    active = jnp.maximum(hidden, 0)
    out = arithmetic.add(arithmetic.matmul(A2, active, fold_key(key, 2)), b2[:, None], fold_key(key, 3))
    return (out, hidden) if return_hidden else out


@compiled(static_argnames=('arithmetic',))
def scores(X, Wq, Wk, arithmetic=Exact(), key=None):
    """Similarity scores (3) of every query: S[i, t] = (W_k x_i)^T (W_q x_t) / sqrt(d), i <= t.

    Column t is S(X_t) in R^t padded with zeros (entries i > t are not part of (3)).
    """
    d, n = X.shape
    queries = arithmetic.matmul(Wq, X, fold_key(key, 0))
    keys_ = arithmetic.matmul(Wk, X, fold_key(key, 1))
    products = arithmetic.matmul(keys_.T, queries, fold_key(key, 2))
    S = arithmetic.div(products, sqrt_dim(d, arithmetic), fold_key(key, 3))
    return jnp.where(causal_mask(n), S, 0)


@compiled(static_argnames=('arithmetic', 'max_shift'))
def softmax(S, arithmetic=Exact(), key=None, mask=None, max_shift=False):
    """psi(s)_i = exp(s_i) / sum_j exp(s_j) (eq. 4) down each column of S.

    ``mask`` (same shape, boolean) restricts each column to its visible entries; masked
    entries of the result are 0.  ``max_shift`` subtracts each column's maximum first (not the
    paper's algorithm, but what libraries do; it avoids overflow of exp).
    """
    if mask is None:
        mask = jnp.ones(S.shape, dtype=bool)
    S = jnp.where(mask, S, 0)
    if max_shift:
        column_max = jnp.max(jnp.where(mask, S, -jnp.inf), axis=0)
        S = jnp.where(mask, arithmetic.sub(S, column_max, fold_key(key, 0)), 0)
    E = jnp.where(mask, arithmetic.exp(S, fold_key(key, 1)), 0)
    total = arithmetic.sum(E, axis=0, key=fold_key(key, 2))
    return jnp.where(mask, arithmetic.div(E, total, fold_key(key, 3)), 0)


@compiled(static_argnames=('arithmetic', 'max_shift', 'return_internals'))
def attention(X, Wq, Wk, Wv, arithmetic=Exact(), key=None, max_shift=False, return_internals=False):
    """Causal single-head self-attention (5): column t is W_v X_t psi(S(X_t)).

    ``return_internals`` also gives the score matrix and the softmax matrix (column t holds
    S(X_t) and psi(S(X_t)), zero below the diagonal's complement i > t).
    """
    n = X.shape[1]
    S = scores(X, Wq, Wk, arithmetic, fold_key(key, 0))
    P = softmax(S, arithmetic, fold_key(key, 1), mask=causal_mask(n), max_shift=max_shift)
    mixed = arithmetic.matmul(X, P, fold_key(key, 2))  # column t: X_t psi_t
    out = arithmetic.matmul(Wv, mixed, fold_key(key, 3))
    return (out, S, P) if return_internals else out


@compiled(static_argnames=('arithmetic',))
def scaled_rms_norm(X, gain, eps, arithmetic=Exact(), key=None):
    """Llama's RMS norm of each column: g * x / sqrt(mean(x^2) + eps) (see the module docstring for
    the order).  ``eps`` > 0 keeps a zero column finite (its output is zero)."""
    return _scaled_rms(X, gain, eps, arithmetic, key)


def _scaled_rms(X, gain, eps, arithmetic, key):
    """``scaled_rms_norm`` inline (also the affine layer norm's normalisation of the centred x)."""
    d = X.shape[0]
    squares = arithmetic.mul(X, X, fold_key(key, 0))
    mean = arithmetic.div(arithmetic.sum(squares, axis=0, key=fold_key(key, 1)), arithmetic.cast(float(d)),
                          fold_key(key, 2))
    root = arithmetic.sqrt(arithmetic.add(mean, arithmetic.cast(eps), fold_key(key, 3)), fold_key(key, 4))
    return arithmetic.mul(gain[:, None], arithmetic.div(X, root, fold_key(key, 5)), fold_key(key, 6))


def rotary_angles(positions, head_dim: int, base: float):
    """(cos, sin), each (head_dim / 2, n), of the angles p theta_i, theta_i = base^(-2i/d_h), in
    float64 (exact inputs of the rotation; the arithmetic rounds them once).  Computed in the
    traced program: under ``boundlab.emulate`` its operations are rounded too; pass
    ``rotary_table``'s host values as ``angles=`` where they must be operands."""
    if head_dim % 2:
        raise ValueError(f"rotary embeddings need an even head size, not {head_dim}")
    theta = jnp.asarray(base, jnp.float64) ** (-jnp.arange(0, head_dim, 2, dtype=jnp.float64) / head_dim)
    angles = theta[:, None] * jnp.asarray(positions, jnp.float64)[None, :]
    return jnp.cos(angles), jnp.sin(angles)


def rotary_table(length: int, head_dim: int, base: float):
    """(cos, sin) of the angles of positions 0, ..., length - 1, (head_dim / 2, length) each, in
    NumPy float64 on the host: constants of the program, so ``boundlab.emulate`` rounds each of
    them once into the format (as ``arithmetic.cast`` does), exactly as ``rotary``'s arithmetic
    does; gather columns with traced positions for a cache (a gather is exact)."""
    if head_dim % 2:
        raise ValueError(f"rotary embeddings need an even head size, not {head_dim}")
    theta = float(base) ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    angles = theta[:, None] * np.arange(length, dtype=np.float64)[None, :]
    return np.cos(angles), np.sin(angles)


@compiled(static_argnames=('arithmetic', 'base'))
def rotary(X, positions=None, base: float = 10000.0, arithmetic=Exact(), key=None, angles=None):
    """The rotary position embedding of a head's vectors X (d_h x n) at ``positions`` (n,), the
    "rotate half" pairing (i, i + d_h/2) of Hugging Face's Llama (module docstring); ``angles``:
    their (cos, sin) (d_h/2 x n each, e.g. from ``rotary_table``) instead of ``positions``."""
    half = X.shape[0] // 2
    if angles is None:
        angles = rotary_angles(positions, X.shape[0], base)
    cos, sin = (arithmetic.cast(v).astype(X.dtype) for v in angles)
    x1, x2 = X[:half], X[half:]
    first = arithmetic.sub(arithmetic.mul(x1, cos, fold_key(key, 0)), arithmetic.mul(x2, sin, fold_key(key, 1)),
                           fold_key(key, 2))
    second = arithmetic.add(arithmetic.mul(x2, cos, fold_key(key, 3)), arithmetic.mul(x1, sin, fold_key(key, 4)),
                            fold_key(key, 5))
    return jnp.concatenate([first, second], axis=0)


def _per_head(fn, stacked, key):
    """``fn(part, key)`` over the leading axis under ``vmap``, each head with a key of its own
    (stochastic rounding) or None."""
    if key is None:
        return jax.vmap(lambda part: fn(part, None))(stacked)
    return jax.vmap(fn)(stacked, jnp.stack([fold_key(key, index) for index in range(stacked.shape[0])]))


@compiled(static_argnames=('arithmetic', 'heads', 'kv_heads', 'rope_base', 'causal', 'max_shift', 'return_internals'))
def grouped_query_attention(X, Wq, Wk, Wv, Wo, heads: int, kv_heads: int, arithmetic=Exact(), key=None,
                            positions=None, rope_base: float | None = None, causal: bool = True, mask=None,
                            bq=None, bk=None, bv=None, bo=None, max_shift: bool = True,
                            return_internals: bool = False):
    """Grouped-query self-attention of the columns of X (d x n): Wq (H d_h x d), Wk and Wv
    (H_kv d_h x d), Wo (d x H d_h); ``heads`` = H query heads over ``kv_heads`` = H_kv groups
    (H_kv = H: multi-head attention; H_kv = 1: multi-query).  With ``rope_base``, queries and keys
    are rotated at ``positions`` (default 0, ..., n - 1).  ``causal``: token t sees tokens <= t;
    ``mask`` (n x n, mask[i, t]: key i visible to query t; see ``attention_mask``) replaces that
    choice.  Optional biases ``bq``, ``bk``, ``bv`` (H d_h, H_kv d_h, H_kv d_h) and ``bo`` (d),
    each added after its product (BERT's linear maps).  ``max_shift``: the softmax subtracts each
    column's maximum first (libraries do; the paper's eq. 4 does not).  ``return_internals`` also
    gives the scores S and the softmax matrices P, (H, n, n) each (S unmasked).

    The two halves are ``project_qkv`` and ``attend`` (a decoder's KV cache stores what the first
    gives and hands it to the second)."""
    n = X.shape[1]
    Q, K, V = project_qkv(X, Wq, Wk, Wv, heads, kv_heads, arithmetic, key, positions, rope_base, bq, bk, bv)
    if mask is None:
        mask = causal_mask(n) if causal else jnp.ones((n, n), bool)
    O, S, P = attend(Q, K, V, mask, arithmetic, key, max_shift)
    with jax.named_scope("output"):
        out = linear(Wo, bo, O, arithmetic, fold_key(key, 7))
    return (out, S, P) if return_internals else out


def project_qkv(X, Wq, Wk, Wv, heads: int, kv_heads: int, arithmetic=Exact(), key=None, positions=None,
                rope_base: float | None = None, bq=None, bk=None, bv=None, angles=None):
    """The queries (H, d_h, n), keys and values (H_kv, d_h, n) of ``grouped_query_attention``: the
    three linear maps, then the rotary embedding of queries and keys at ``positions`` (default
    0, ..., n - 1) when ``rope_base`` is given (``angles``: their (cos, sin), see ``rotary``)."""
    d, n = X.shape
    if heads % kv_heads or Wq.shape[0] % heads or Wk.shape != Wv.shape or Wk.shape[0] * heads != Wq.shape[0] * kv_heads:
        raise ValueError(f"grouped-query attention: {heads} query heads over {kv_heads} key/value heads need "
                         f"Wq (H d_h x d) = {Wq.shape} and Wk, Wv (H_kv d_h x d) = {Wk.shape}, {Wv.shape}")
    dh = Wq.shape[0] // heads
    positions = jnp.arange(n) if positions is None else positions
    with jax.named_scope("query"):
        Q = linear(Wq, bq, X, arithmetic, fold_key(key, 0)).reshape(heads, dh, n)
    with jax.named_scope("key"):
        K = linear(Wk, bk, X, arithmetic, fold_key(key, 1)).reshape(kv_heads, dh, n)
    with jax.named_scope("value"):
        V = linear(Wv, bv, X, arithmetic, fold_key(key, 2)).reshape(kv_heads, dh, n)
    if rope_base is not None:
        with jax.named_scope("rotary"):
            Q = _per_head(lambda q, k: rotary(q, positions, rope_base, arithmetic, k, angles), Q, fold_key(key, 10))
            K = _per_head(lambda q, k: rotary(q, positions, rope_base, arithmetic, k, angles), K, fold_key(key, 11))
    return Q, K, V


def attend(Q, K, V, mask, arithmetic=Exact(), key=None, max_shift: bool = True):
    """Each query head against its group's keys: S_h = fl(fl(K_g^T Q_h) / fl(sqrt(d_h))) (m keys x
    n queries), P_h the softmax of each column over the keys visible in ``mask`` (m x n), and
    O = [V_g P_h]_h stacked (H d_h, n); Q (H, d_h, n), K and V (H_kv, d_h, m) with H_kv dividing
    H (head h uses group h // (H / H_kv)).  Returns (O, S, P)."""
    heads, dh, n = Q.shape
    kv_heads = K.shape[0]
    if kv_heads != heads:
        group = jnp.arange(heads) // (heads // kv_heads)
        K, V = K[group], V[group]  # each query head with its group's keys and values
    with jax.named_scope("scores"):
        products = arithmetic.matmul(jnp.swapaxes(K, 1, 2), Q, fold_key(key, 3))  # (H, m keys, n queries)
        S = arithmetic.div(products, sqrt_dim(dh, arithmetic), fold_key(key, 4))
    with jax.named_scope("softmax"):
        P = _per_head(lambda s, k: softmax(s, arithmetic, k, mask=mask, max_shift=max_shift), S, fold_key(key, 5))
    with jax.named_scope("mix"):
        O = arithmetic.matmul(V, P, fold_key(key, 6)).reshape(heads * dh, n)
    return O, S, P


def attention_mask(valid, causal: bool) -> jax.Array:
    """mask[i, t]: key i is visible to query t (a valid key, i.e. not padding; and i <= t when
    ``causal``), for ``grouped_query_attention(mask=...)``."""
    n = valid.shape[0]
    mask = jnp.broadcast_to(valid[:, None], (n, n))
    if causal:
        mask = mask & causal_mask(n)
    return mask


def linear(W, b, X, arithmetic=Exact(), key=None):
    """fl(fl(W X) + b) for each column of X (Lemma 4.3.3's order: the bias after the product);
    fl(W X) when ``b`` is None."""
    product = arithmetic.matmul(W, X, fold_key(key, 0))
    return product if b is None else arithmetic.add(product, b[:, None], fold_key(key, 1))


def affine_layer_norm(X, gamma, beta, eps=0.0, arithmetic=Exact(), key=None):
    """gamma * (x - mu e) / sqrt(nu + eps) + beta for each column (eq. 1 with an epsilon and an
    affine map, BERT's and GPT-2's; nu the biased variance; order in the module docstring).  A
    Python ``eps`` = 0 evaluates the paper's R(c(x)) (``layer_norm``); ``eps`` may be an array (a
    traced value: an epsilon that a policy changes during training without recompiling)."""
    if isinstance(eps, (int, float)) and eps == 0:
        scaled = arithmetic.mul(gamma[:, None], layer_norm(X, arithmetic, fold_key(key, 0)), fold_key(key, 8))
    else:  # the scaled RMS norm of the centred vector: the same operations in the same order
        scaled = _scaled_rms(centring(X, arithmetic, fold_key(key, 1)), gamma, eps, arithmetic, fold_key(key, 2))
    return arithmetic.add(scaled, beta[:, None], fold_key(key, 9))


def gelu(X, arithmetic=Exact(), key=None, approximate: bool = False):
    """GELU(x) = x Phi(x) = 0.5 x (1 + erf(x / sqrt 2)) (``approximate``: the tanh form
    0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), Hendrycks and Gimpel 2016); x^3 is two
    rounded products."""
    half = arithmetic.mul(arithmetic.cast(0.5), X, fold_key(key, 0))
    if approximate:
        cube = arithmetic.mul(arithmetic.mul(X, X, fold_key(key, 1)), X, fold_key(key, 2))
        inner = arithmetic.add(X, arithmetic.mul(arithmetic.cast(0.044715), cube, fold_key(key, 3)), fold_key(key, 4))
        arg = arithmetic.mul(arithmetic.cast(math.sqrt(2 / math.pi)), inner, fold_key(key, 5))
        phi = arithmetic.apply(jnp.tanh, arg, key=fold_key(key, 6))
    else:
        arg = arithmetic.div(X, arithmetic.cast(math.sqrt(2.0)), fold_key(key, 7))
        phi = arithmetic.apply(lax.erf, arg, key=fold_key(key, 8))
    return arithmetic.mul(half, arithmetic.add(arithmetic.cast(1.0), phi, fold_key(key, 9)), fold_key(key, 10))


def activation(X, kind: str, arithmetic=Exact(), key=None):
    """One of ``ACTIVATIONS``: ReLU (exact), GELU in its erf or its tanh form."""
    if kind == "relu":
        return jnp.maximum(X, 0)  # exact
    if kind not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {kind!r}")
    return gelu(X, arithmetic, key, approximate=kind == "gelu_tanh")


@compiled(static_argnames=('arithmetic',))
def gated_perceptron(X, W_gate, W_up, W_down, arithmetic=Exact(), key=None):
    """The SwiGLU perceptron of each column: W_down (silu(W_gate x) * (W_up x))."""
    gate = arithmetic.matmul(W_gate, X, fold_key(key, 0))
    up = arithmetic.matmul(W_up, X, fold_key(key, 1))
    silu = arithmetic.mul(gate, arithmetic.apply(jax.nn.sigmoid, gate, key=fold_key(key, 2)), fold_key(key, 3))
    return arithmetic.matmul(W_down, arithmetic.mul(silu, up, fold_key(key, 4)), fold_key(key, 5))
