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
# # Any JAX function: `emulate` and `first_order`
#
# `boundlab.emulate(f, arithmetic)` runs any JAX function with every floating-point operation
# rounded as the paper's Model 4.1 says; `boundlab.first_order(f, arithmetic)` bounds the error
# of every output entry to first order, sum_i |dy/dv_i| u |v_i| over the rounding sites v_i, by
# automatic differentiation, with a probabilistic version and a ranking of the sites.

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

jax.config.update("jax_enable_x64", True)
import boundlab
from boundlab import Emulated, bounds
from boundlab.errors import ratio
from boundlab.models.paper import init
from boundlab.models.paper.plain import plain_forward

# %% [markdown]
# ## A model that is not the paper's: a GELU MLP with a residual and a layer norm

# %%
def model(params, x):
    W1, W2 = params
    with jax.named_scope("mlp"):
        h = jax.nn.gelu(W1 @ x, approximate=False)
        y = x + W2 @ h
    with jax.named_scope("norm"):
        y = y - jnp.mean(y)
        return y / jnp.sqrt(jnp.mean(y * y) + 1e-5)


keys = jax.random.split(jax.random.key(0), 3)
params = (jax.random.normal(keys[0], (32, 16)) / 4, jax.random.normal(keys[1], (16, 32)) / 6)
x = jax.random.normal(keys[2], (16,))
bf16 = Emulated("bf16")
y_hat = boundlab.emulate(model, bf16)(params, x)
record = boundlab.first_order(model, bf16)(params, x)
error = jnp.abs(y_hat - record.value)
print("largest error", float(error.max()), " largest first-order bound", float(record.bound.max()))
print("every entry within its bound:", bool(jnp.all(error <= record.bound)))
print("by scope:", {k: f"{v:.3g}" for k, v in record.by_scope().items()})
for site, share in record.ranking(4):
    print(f"{share:.3g}  {site.label()}")

# %%
order = np.argsort(np.asarray(record.bound))
plt.figure(figsize=(7, 3.5))
plt.semilogy(np.asarray(record.bound)[order], label="first-order bound")
plt.semilogy(np.asarray(record.probabilistic)[order], label="probabilistic (99 %)")
plt.semilogy(np.asarray(error)[order], ".", label="measured |bf16 - exact|")
plt.xlabel("output entry (sorted by bound)")
plt.ylabel("absolute error")
plt.legend(fontsize=8, bbox_to_anchor=(1.02, 1), loc="upper left")
plt.title("GELU MLP + layer norm in bf16")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## The paper's transformer: measured <= first-order <= Theorem 4.30, layer by layer

# %%
t = 24
arith = Emulated(f"t{t}", unroll=0)
u = 2.0**-t
params, X = init(jax.random.key(1), "figure1", d=6, n=6, D=6, L=6)
params, X = jax.tree.map(lambda a: jnp.asarray(arith.cast(a), jnp.float64), (params, X))
layers = lambda p, x: plain_forward(p, x, return_layers=True)  # noqa: E731
emulated = boundlab.emulate(layers, arith)(tuple(params), X)
record = boundlab.first_order(layers, arith)(tuple(params), X)
measured = jax.vmap(lambda a, b: jnp.max(ratio(jnp.abs(a - b), jnp.abs(b))))(emulated, record.value)
first = jax.vmap(lambda b, v: jnp.max(ratio(b, jnp.abs(v))))(record.bound, record.value)
theorem = bounds.theorem_4_30(params, X, norm="layer", u=u)
layerwise = np.asarray(theorem.terms["layerwise_per_layer"]) * u
print("Theorem 4.30 hypotheses hold:", bool(theorem.valid))
L = np.arange(1, 7)
plt.figure(figsize=(7, 3.5))
plt.semilogy(L, measured, "o-", label="measured rho_c")
plt.semilogy(L, first, "s-", label="autodiff first-order")
plt.semilogy(L, layerwise, "^-", label="Theorem 4.30, layer by layer")
plt.xlabel("layer")
plt.ylabel("relative error rho_c (absolute)")
plt.legend()
plt.title(f"d = n = D = 6, t = {t}")
plt.show()

# %% [markdown]
# ## The probabilistic bound under stochastic rounding

# %%
sr = Emulated("t10", mode="stochastic", unroll=0)
f = lambda p, x: plain_forward(p, x)  # noqa: E731
small_params, small_X = init(jax.random.key(2), "figure1", d=4, n=4, D=4, L=2)
record = boundlab.first_order(f, sr, confidence=0.99)(tuple(small_params), small_X)
runs = jax.vmap(lambda k: boundlab.emulate(f, sr)(tuple(small_params), small_X, key=k))(
    jax.random.split(jax.random.key(3), 200))
scaled = np.asarray(jnp.abs(runs - record.value) / record.probabilistic).ravel()
print(f"fraction within the 99 % bound: {np.mean(scaled <= 1):.4f}")
plt.figure(figsize=(6, 3))
plt.hist(scaled, bins=40)
plt.axvline(1, color="black")
plt.xlabel("|error| / probabilistic bound")
plt.ylabel("(run, entry) pairs")
plt.show()
