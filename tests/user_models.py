"""Small user models written as a Flax user would, shared by the tests of ``boundlab.structure``
and of the diagnostics on any model: nnx.MultiHeadAttention blocks, a GPT-style model built
from plain nnx.Linear, and a model with no attention at all."""

import jax
import jax.numpy as jnp
from flax import nnx


class MHABlock(nnx.Module):
    """Pre-norm: x + MHA(LN(x)), then x + fc2(gelu(fc1(LN(x))))."""

    def __init__(self, d, heads, rngs):
        self.ln1 = nnx.LayerNorm(d, epsilon=1e-6, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(heads, d, decode=False, rngs=rngs)
        self.ln2 = nnx.LayerNorm(d, epsilon=1e-6, rngs=rngs)
        self.fc1 = nnx.Linear(d, 2 * d, rngs=rngs)
        self.fc2 = nnx.Linear(2 * d, d, rngs=rngs)

    def __call__(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.fc2(jax.nn.gelu(self.fc1(self.ln2(x))))


class Mine(nnx.Module):
    """Two nnx.MultiHeadAttention blocks and a linear head; tokens are rows (batch, n, d)."""

    def __init__(self, d=8, heads=2, layers=2, *, rngs):
        self.blocks = nnx.List([MHABlock(d, heads, rngs) for _ in range(layers)])
        self.head = nnx.Linear(d, 3, rngs=rngs)

    def __call__(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(x)


class Attention(nnx.Module):
    """Causal multi-head attention from plain nnx.Linear maps."""

    def __init__(self, d, heads, rngs):
        self.q, self.k = nnx.Linear(d, d, rngs=rngs), nnx.Linear(d, d, rngs=rngs)
        self.v, self.o = nnx.Linear(d, d, rngs=rngs), nnx.Linear(d, d, rngs=rngs)
        self.heads = heads

    def __call__(self, x):
        n, d = x.shape[-2:]

        def split(t):
            return t.reshape(t.shape[:-1] + (self.heads, d // self.heads)).swapaxes(-2, -3)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        s = q @ k.swapaxes(-1, -2) / jnp.sqrt(float(d // self.heads))
        p = jax.nn.softmax(jnp.where(jnp.tril(jnp.ones((n, n), bool)), s, -1e30), axis=-1)
        return self.o((p @ v).swapaxes(-2, -3).reshape(x.shape))


class RMS(nnx.Module):
    def __init__(self, d, eps=1e-6):
        self.scale, self.eps = nnx.Param(jnp.ones(d, jnp.float32)), eps

    def __call__(self, x):
        return x / jnp.sqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.eps) * self.scale[...]


class GPTBlock(nnx.Module):
    def __init__(self, d, heads, rngs):
        self.n1, self.attn, self.n2 = RMS(d), Attention(d, heads, rngs), RMS(d)
        self.up, self.down = nnx.Linear(d, 4 * d, rngs=rngs), nnx.Linear(4 * d, d, rngs=rngs)

    def __call__(self, x):
        x = x + self.attn(self.n1(x))
        return x + self.down(jax.nn.relu(self.up(self.n2(x))))


class GPT(nnx.Module):
    """Pre-norm GPT-style stack (RMS norms, causal attention, ReLU perceptrons), plain nnx.Linear."""

    def __init__(self, d=8, heads=2, layers=2, *, rngs):
        self.blocks = nnx.List([GPTBlock(d, heads, rngs) for _ in range(layers)])

    def __call__(self, x):
        for block in self.blocks:
            x = block(x)
        return x


class MLP(nnx.Module):
    """No attention: a tanh perceptron."""

    def __init__(self, d=8, *, rngs):
        self.a, self.b = nnx.Linear(d, 16, rngs=rngs), nnx.Linear(16, 2, rngs=rngs)

    def __call__(self, x):
        return self.b(jnp.tanh(self.a(x)))
