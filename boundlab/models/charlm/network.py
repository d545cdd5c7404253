"""A small character-level causal language model, and Baek's training-time diagnostics of it.

The model (GPT-2's block, pre-norm, tokens as columns as in the paper), built from the block library
(``boundlab.models.blocks``: ``affine_layer_norm``, ``grouped_query_attention`` with as many
key/value heads as query heads, ``perceptron``) in ``Native()`` arithmetic: for ids (n,),
X_0 = E[ids]^T + P[:n]^T (d x n); each layer l

    h = X + W_o concat_h(V_h psi(S_h)),  S_h = K_h^T Q_h / sqrt(d_h),  [Q; K; V] = W_{q,k,v} N_1(X)
    X <- h + W_2 relu(W_1 N_2(h) + b_1) + b_2

with multi-head causal attention (the masked softmax psi of eq. 4, with or without the column
maximum subtracted first: ``max_shift``) and layer norms with an epsilon and an affine map,
N(x) = gamma (x - mu) / sqrt(nu + eps) + beta (nu the biased variance); the logits are
R N_f(X_L) (V x n).  The epsilons are an input, not a constant (``eps``: one per layer norm,
2 L + 1 of them, in the order N_1, N_2 of layer 1, ..., N_f), so that a policy can change them
during training without recompiling.  In ``Native()`` arithmetic every operation is one plain
``jax.numpy`` primitive in the parameters' dtype: ``boundlab.emulate`` rounds each of them
(Model 4.1) in the forward and the backward pass.  ``CharLM`` (``boundlab.models.charlm.module``)
is the NNX module of the same function.

The text is the descriptions of scikit-learn's bundled datasets (``corpus``: about 15 000
characters of English and tables that ship with scikit-learn), read as characters.

``diagnostics`` evaluates, on the exact (float64) intermediates of a batch, per layer Baek's
softmax sensitivity kappa_softmax (``boundlab.fragility.softmax_sensitivity``, the largest over
heads, query columns and sequences) and per layer norm sigma_med (the median over the batch's
tokens of the standard deviation of the norm's input) and Baek's indicator
rho_LN = sigma_med^2 / eps * d * u.  ``epsilon_policy`` is Baek's LayerNorm-epsilon tweak: where
rho_LN exceeds rho_star, raise eps to the value that makes rho_LN = rho_star (that is,
sigma_med^2 d u / rho_star), never above ``cap`` and never below the current eps (his abstract:
rho_star = 0.6, cap = 1e-2).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from boundlab.runtime import draws
from boundlab.fragility import layer_norm_indicators, softmax_sensitivity, spread
from boundlab.arithmetic import Native
from boundlab.models.blocks import affine_layer_norm, grouped_query_attention, perceptron
from boundlab.quantities import causal_mask

SOURCES = ("load_digits", "load_iris", "load_wine", "load_breast_cancer", "load_diabetes", "load_linnerud")


def corpus() -> str:
    """The descriptions (``DESCR``) of scikit-learn's bundled datasets, concatenated (needs
    scikit-learn: ``pip install "boundlab[train]"``)."""
    try:
        import sklearn.datasets as datasets
    except ImportError as error:  # pragma: no cover - the train extra installs it
        raise ImportError('the character-level model reads scikit-learn\'s dataset descriptions: '
                          'pip install "boundlab[train]"') from error
    return "\n".join(getattr(datasets, name)().DESCR for name in SOURCES)


@dataclasses.dataclass(frozen=True)
class CharLMConfig:
    """Shape of the model: width d, attention heads, feed-forward width, layers, context n,
    and the softmax variant (``max_shift``: subtract each column's maximum first, as libraries
    do; without it exp overflows once a score passes log(max_finite): 11.09 in fp16)."""

    d: int = 32
    heads: int = 2
    ffn: int = 64
    layers: int = 2
    context: int = 32
    max_shift: bool = True

    def __post_init__(self):
        for name in ("d", "heads", "ffn", "layers", "context"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"CharLMConfig.{name} must be a positive int, got {value!r}")
        if self.d % self.heads:
            raise ValueError(f"d = {self.d} is not a multiple of heads = {self.heads}")

    @property
    def norms(self) -> int:
        """Number of layer norms (each has its own epsilon): 2 per layer and the final one."""
        return 2 * self.layers + 1


class Vocabulary:
    """The sorted characters of a text; ``encode`` maps a string to int32 ids."""

    def __init__(self, text: str):
        self.chars = "".join(sorted(set(text)))
        self._index = {c: i for i, c in enumerate(self.chars)}

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        return np.array([self._index[c] for c in text], dtype=np.int32)


def windows(ids: np.ndarray, context: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` random windows of context + 1 ids (inputs and their next characters)."""
    if len(ids) <= context + 1:
        raise ValueError(f"the text has {len(ids)} characters, too few for windows of {context + 1}")
    starts = rng.integers(0, len(ids) - context - 1, size=count)
    return np.stack([ids[s:s + context + 1] for s in starts])


def init_params(config: CharLMConfig, vocab: int, key, dtype=jnp.float64) -> dict:
    """GPT-2's initialisation: N(0, 0.02^2) matrices and embeddings (the two residual
    projections W_o, W_2 scaled by 1/sqrt(2 L)), zero biases, layer-norm scales 1, shifts 0."""
    L, d, F = config.layers, config.d, config.ffn
    keys = iter(jax.random.split(key, 10))
    residual = 0.02 / math.sqrt(2 * L)

    def normal(scale, *shape):
        return scale * draws.normal(next(keys), shape, dtype)

    layers = {"Wq": normal(0.02, L, d, d), "Wk": normal(0.02, L, d, d), "Wv": normal(0.02, L, d, d),
              "Wo": normal(residual, L, d, d), "W1": normal(0.02, L, F, d), "b1": jnp.zeros((L, F), dtype),
              "W2": normal(residual, L, d, F), "b2": jnp.zeros((L, d), dtype),
              "gamma": jnp.ones((L, 2, d), dtype), "beta": jnp.zeros((L, 2, d), dtype)}
    return {"embed": normal(0.02, vocab, d), "position": normal(0.01, config.context, d), "layers": layers,
            "final_gamma": jnp.ones((d,), dtype), "final_beta": jnp.zeros((d,), dtype),
            "readout": normal(0.02, vocab, d)}


def forward(params, ids, eps, config: CharLMConfig, return_internals: bool = False):
    """Logits (V, n) of one sequence of ids (n,), n <= context; with ``return_internals`` also a
    dict: each layer norm's input (norms, d, n) and per layer the scores (zero where masked) and
    the softmax matrices (L, heads, n, n)."""
    n, H = ids.shape[0], config.heads
    native = Native()
    X = params["embed"][ids].T + params["position"][:n].T
    norm_inputs, scores, probabilities = [], [], []
    for index in range(config.layers):
        layer = jax.tree.map(lambda a, i=index: a[i], params["layers"])
        N1 = affine_layer_norm(X, layer["gamma"][0], layer["beta"][0], eps[2 * index], native)
        attended, S, P = grouped_query_attention(N1, layer["Wq"], layer["Wk"], layer["Wv"], layer["Wo"], H, H, native,
                                                 max_shift=config.max_shift, return_internals=True)
        h = X + attended
        N2 = affine_layer_norm(h, layer["gamma"][1], layer["beta"][1], eps[2 * index + 1], native)
        norm_inputs += [X, h]
        scores.append(jnp.where(causal_mask(n), S, 0))
        probabilities.append(P)
        X = h + perceptron(N2, layer["W1"], layer["b1"], layer["W2"], layer["b2"], native)
    norm_inputs.append(X)
    logits = params["readout"] @ affine_layer_norm(X, params["final_gamma"], params["final_beta"], eps[-1], native)
    if not return_internals:
        return logits
    return logits, {"norm_inputs": jnp.stack(norm_inputs), "scores": jnp.stack(scores),
                    "softmax": jnp.stack(probabilities)}


def loss(params, batch, config: CharLMConfig):
    """Mean cross entropy of the next character; ``batch = (windows (B, n + 1), eps (norms,))``."""
    import optax

    windows_, eps = batch
    logits = jax.vmap(lambda ids: forward(params, ids, eps, config))(windows_[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(jnp.swapaxes(logits, 1, 2), windows_[:, 1:]).mean()


@jax.jit
def _spread(norm_inputs):
    """sigma_med per norm: ``fragility.spread`` of the batch's tokens pooled; norm_inputs (B, norms, d, n)."""
    B, norms, d, n = norm_inputs.shape
    columns = jnp.moveaxis(norm_inputs, 0, 2).reshape(norms, d, B * n)
    return jax.vmap(lambda X: spread(X, "layer"))(columns)


def diagnostics(params, ids, eps, config: CharLMConfig, u: float) -> dict:
    """Baek's diagnostics on the exact (float64) intermediates of a batch of ids (B, n):
    ``kappa_softmax`` (L,), the largest over sequences, heads and query columns of
    lambda_max(diag(p) - p p^T) ||s|| / ||p||; ``sigma_med`` and ``rho_LN`` = sigma_med^2 / eps d u
    (norms,; ``fragility.layer_norm_indicators``).  The forward is compiled once per config."""
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
    eps = jnp.asarray(eps, jnp.float64)
    _, inside = _internals(params, jnp.asarray(ids), eps, config)
    sigma = _spread(inside["norm_inputs"])
    return {"kappa_softmax": _sensitivity(inside["scores"], inside["softmax"]), "sigma_med": sigma,
            "rho_LN": layer_norm_indicators(sigma, config.d, eps, float(u))[1]}


@jax.jit
def _sensitivity(scores, probabilities):
    """(B, L, H, n, n) -> (L,): the largest softmax sensitivity per layer."""
    per = jax.vmap(jax.vmap(jax.vmap(softmax_sensitivity)))(
        jnp.moveaxis(scores, 1, 0), jnp.moveaxis(probabilities, 1, 0))  # (L, B, H)
    return jnp.max(per.reshape(per.shape[0], -1), axis=1)


@functools.partial(jax.jit, static_argnames="config")
def _internals(params, ids, eps, config):
    return jax.vmap(lambda i: forward(params, i, eps, config, return_internals=True))(ids)


def epsilon_policy(eps, sigma_med, d: int, u: float, rho_star: float = 0.6, cap: float = 1e-2):
    """Baek's LayerNorm-epsilon tweak: where rho_LN = sigma_med^2 / eps d u exceeds rho_star, the
    epsilon that brings it to rho_star, sigma_med^2 d u / rho_star, capped at ``cap``; an epsilon
    is never lowered (nor raised above ``cap`` by the policy)."""
    eps = jnp.asarray(eps, jnp.float64)
    target = jnp.minimum(jnp.asarray(sigma_med, jnp.float64) ** 2 * d * u / rho_star, cap)
    return jnp.maximum(eps, target)
