# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Your own model, part by part
#
# A transformer written the way a Flax user writes one (plain `nnx.Linear` maps, RMS norms,
# causal multi-head attention, GELU), taken through every tool of `boundlab`: which parts it has
# (`find_structure`), how wrong each part's result is in bf16 and fp16, which parts the
# first-order bound blames, their condition numbers and Baek's fragility diagnostics
# (`model_diagnostics`), a training loop with the differentiable bound penalty and the
# diagnostics inside the jitted step, and a report on disk (`write_report`).

# %%
SIZE = "small"  # or "large": a wider, deeper model and more steps
width, layers, steps = (8, 1, 5) if SIZE == "small" else (64, 4, 300)

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from flax import nnx

from boundlab.analysis import ModelMetric, model_diagnostics, write_report

from boundlab.training import bound_penalty
from boundlab.structure import find_structure


class RMSNorm(nnx.Module):
    def __init__(self, d, eps=1e-6):
        self.scale, self.eps = nnx.Param(jnp.ones(d, jnp.float32)), eps

    def __call__(self, x):
        return x / jnp.sqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.eps) * self.scale[...]


class Attention(nnx.Module):
    def __init__(self, d, heads, rngs):
        self.qkv, self.out, self.heads = nnx.Linear(d, 3 * d, rngs=rngs), nnx.Linear(d, d, rngs=rngs), heads

    def __call__(self, x):
        n, d = x.shape[-2:]
        q, k, v = jnp.split(self.qkv(x), 3, axis=-1)
        heads = lambda t: t.reshape(t.shape[:-1] + (self.heads, d // self.heads)).swapaxes(-2, -3)
        q, k, v = heads(q), heads(k), heads(v)
        scores = q @ k.swapaxes(-1, -2) / jnp.sqrt(float(d // self.heads))
        p = jax.nn.softmax(jnp.where(jnp.tril(jnp.ones((n, n), bool)), scores, -1e9), axis=-1)
        return self.out((p @ v).swapaxes(-2, -3).reshape(x.shape))


class Block(nnx.Module):
    def __init__(self, d, rngs):
        self.norm1, self.attn, self.norm2 = RMSNorm(d), Attention(d, 4, rngs), RMSNorm(d)
        self.up, self.down = nnx.Linear(d, 4 * d, rngs=rngs), nnx.Linear(4 * d, d, rngs=rngs)

    def __call__(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.down(jax.nn.gelu(self.up(self.norm2(x))))


class GPT(nnx.Module):
    def __init__(self, d, layers, rngs):
        self.blocks = nnx.List([Block(d, rngs) for _ in range(layers)])
        self.head = nnx.Linear(d, d, rngs=rngs)

    def __call__(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(x)


model = GPT(width, layers, nnx.Rngs(0))
x = jax.random.normal(jax.random.key(1), (4, 8, width), jnp.float32)  # 4 sequences of 8 tokens

# %% [markdown]
# ## What the model is made of
#
# Found from the traced program by the operations that define each part, not by class names:
# a softmax between two products is attention, a square root of a mean of squares is a norm
# (its epsilon read from the program), an activation between two products is a perceptron.
# The final linear map is none of these, and the report says so.

# %%
print(find_structure(model, x).summary())

# %% [markdown]
# ## Every diagnostic, part by part

# %%
result = model_diagnostics(model, x, formats=("bf16", "fp16"))
columns = ["part", "condition", "error_normwise/bf16", "error_normwise/fp16", "share/bf16"]
print(" | ".join(columns))
for row in result.table():
    print(" | ".join(f"{row[c]:.3g}" if isinstance(row[c], float) else str(row[c]) for c in columns))
print({k: float(v) for k, v in result.output.items()})

# %%
ranking = result.ranking("bf16")
figure, axis = plt.subplots(figsize=(7, 3))
axis.barh([name for name, _, _ in ranking][::-1], [fraction for _, _, fraction in ranking][::-1])
axis.set_xlabel("fraction of the first-order bound (bf16)")
axis.set_title("Where the rounding error comes from")
plt.show()

# %% [markdown]
# ## Training with the penalty and the diagnostics in the step
#
# `bound_penalty(model, x)` is log10 of C in ||y^ - y||_1 <= C u ||y||_1 + O(u^2), the
# first-order bound over every rounding; it is differentiable. The diagnostics run inside the
# same jitted step (compiled once; here the measured errors and Baek's diagnostics, the
# first-order shares and condition numbers were above) and `ModelMetric` keeps the worst over
# the run.

# %%
optimizer = nnx.Optimizer(model, optax.sgd(1e-2), wrt=nnx.Param)
target = jnp.roll(x, 1, axis=-1)


@nnx.jit
def step(model, optimizer, x):
    loss = lambda m: jnp.mean((m(x) - target) ** 2) + 1e-3 * bound_penalty(m, x)
    value, grads = nnx.value_and_grad(loss)(model)
    optimizer.update(model, grads)
    return value, model_diagnostics(model, x, formats=("bf16", "fp16"), first_order=False, condition=False)


history = []
for i in range(steps):
    value, result = step(model, optimizer, x)
    metric = ModelMetric(result) if i == 0 else metric
    metric.update(diagnostics=result)
    history.append((float(value), float(result.at_output("bf16").error_normwise), float(result.at_output("fp16").error_normwise)))
history = np.array(history)
figure, axes = plt.subplots(1, 2, figsize=(9, 3))
axes[0].plot(history[:, 0])
axes[0].set_title("loss + 1e-3 penalty")
axes[1].semilogy(history[:, 1], label="bf16")
axes[1].semilogy(history[:, 2], label="fp16")
axes[1].legend()
axes[1].set_title("measured normwise error of the output")
plt.show()
print("worst bf16 error over the run:", float(metric.compute()["output/error_normwise/bf16"]))

# %% [markdown]
# ## The report

# %%
paths = write_report(model_diagnostics(model, x, formats=("bf16", "fp16")), "my-model-report")
print(open(paths["report"]).read()[:1500])
