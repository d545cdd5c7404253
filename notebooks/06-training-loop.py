# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Bounds inside a Flax training loop
#
# The paper's network as a Flax NNX module, trained with optax on scikit-learn's digits (each
# 8x8 image read as 8 row tokens); every few steps the in-loop diagnostics: Theorem 4.30's
# coefficient, the measured bf16 error under bit-exact emulation, Baek's fragility diagnostics.
# A second run adds the differentiable bound penalty. Needs `pip install "boundlab[train]"`.

# %%
SIZE = "small"  # or "paper": longer training, wider model
steps, every, width = (40, 10, 16) if SIZE == "small" else (500, 25, 32)

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from flax import nnx

from boundlab import Emulated
from boundlab.experiments.training_study import load_digits_tokens
from boundlab.analysis import diagnostics
from boundlab.models import SequenceClassifier, to_params
from boundlab.training import bound_penalty
from boundlab.models.paper import forward

(train_x, train_y), (test_x, test_y) = load_digits_tokens(test_samples=300)
held_out = jnp.asarray(test_x[:16])

# %% [markdown]
# ## The module is the paper's network
# The same weights run exactly or emulated by passing an arithmetic; the result is
# `boundlab.models.paper.forward` bit for bit.

# %%
model = SequenceClassifier(8, 8, 10, width, 2 * width, 2, rngs=nnx.Rngs(0))
X = model.tokens(held_out)[0]
low = model.transformer(X, arithmetic=Emulated("bf16"))
print("bit for bit forward:", bool(jnp.array_equal(low, forward(to_params(model.transformer), X, Emulated("bf16")))))

# %% [markdown]
# ## A training step with the penalty, and the diagnostics every few steps

# %%
transformation = optax.adamw(1e-2)


@nnx.jit(static_argnames="penalised")
def step(model, optimizer, images, labels, penalised):
    def loss_fn(model):
        loss = optax.softmax_cross_entropy_with_integer_labels(model(images), labels).mean()
        if penalised:
            loss = loss + 1e-3 * bound_penalty(model.transformer, model.tokens(images[:8]), u=2.0**-8)
        return loss

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


def train(penalised):
    model = SequenceClassifier(8, 8, 10, width, 2 * width, 2, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, transformation, wrt=nnx.Param)
    rng = np.random.default_rng(0)
    history = []
    for i in range(steps + 1):
        if i % every == 0:
            report = diagnostics(model.transformer, model.tokens(held_out), formats=("bf16",))
            history.append({"step": i, **report.scalars()})
        if i < steps:
            index = rng.choice(len(train_y), 64, replace=False)
            step(model, optimizer, jnp.asarray(train_x[index]), jnp.asarray(train_y[index]), penalised)
    accuracy = float(np.mean(np.argmax(np.asarray(model(jnp.asarray(test_x))), axis=-1) == test_y))
    return history, accuracy


runs = {label: train(penalised) for label, penalised in (("plain", False), ("penalised", True))}
for label, (_, accuracy) in runs.items():
    print(f"{label}: test accuracy {accuracy:.3f}")

# %%
fig, axes = plt.subplots(1, 3, figsize=(14, 3.5), layout="constrained")
for label, (history, _) in runs.items():
    steps_seen = [h["step"] for h in history]
    axes[0].plot(steps_seen, [h["log10_theorem_4_30_free"] for h in history], label=label)
    axes[1].semilogy(steps_seen, [h["error_normwise/bf16"] for h in history], label=label)
    axes[2].semilogy(steps_seen, [h["baek_predictor"] for h in history], label=label)
for axis, title in zip(axes, ["log10 Theorem 4.30 coefficient (sigma_min-free)", "measured bf16 error (normwise)",
                              "Baek's predictor"]):
    axis.set_title(title, fontsize=10)
    axis.set_xlabel("training step")
    axis.legend()
plt.show()

# %% [markdown]
# The flags say which hypotheses of the theorem hold on the held-out batch (here the
# alpha-conditions fail, so the theorem's bound is a diagnostic, not a guarantee). The full
# study, over widths, seeds and with correlations, is `boundlab train`.

# %%
last = runs["plain"][0][-1]
print({name: value for name, value in last.items() if name.startswith("flag/")})
