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
# # Condition numbers: autodiff beside the closed forms
#
# Section 3 of the paper gives closed forms (or bounds) for the condition numbers of each part
# of a block. boundlab computes every condition number of Lemma 3.3 from the Jacobian
# (`jax.jacfwd`) and sets the closed forms beside it, so each lemma is checked where it is used.

# %%
SIZE = "small"  # or "paper"
d, n, D = (6, 5, 8) if SIZE == "small" else (20, 20, 20)

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from boundlab.condition import closed_forms, componentwise, condition_report, format_report, mixed
from boundlab.models.paper import init, layer_norm, rms_norm

# %% [markdown]
# ## One vector: RMS norm (Lemma 3.6) and layer norm (Lemma 3.8)
# kappa_cc, the componentwise condition number, equals the closed form for the RMS norm; for the
# layer norm the lemma gives bounds.

# %%
x = jnp.array([1.0, -2.0, 3.0, 0.5])
print("RMS norm   kappa_cc autodiff:", float(componentwise(rms_norm, x).value),
      " closed form (Lemma 3.6):", float(closed_forms.rms_norm(x).kappa_cc))
ln = closed_forms.layer_norm(x)
print("layer norm kappa_cc autodiff:", float(componentwise(layer_norm, x).value),
      " bound (Lemma 3.8, corrected):", float(ln.kappa_cc_bound))

# %% [markdown]
# ## Every part of a block, side by side
# `condition_report` evaluates each part of one layer at its actual inputs (the maximum over
# tokens where a part acts per token): `=` rows are equalities, `<=` rows bounds.

# %%
params, X = init(jax.random.key(0), "figure1", d=d, n=n, D=D, L=1)
layer = jax.tree.map(lambda a: a[0], params)
rows = condition_report(layer, X, "layer")
print(format_report(rows))

# %% [markdown]
# ## How loose are the bounds?
# closed form / autodiff per quantity (1 for the equalities).

# %%
fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1))
labels = [f"{r.statement}: {r.quantity}" for r in rows]
ax.barh(labels, [r.ratio for r in rows], color=["tab:blue" if r.relation == "=" else "tab:orange" for r in rows])
ax.set_xscale("log")
ax.set_xlabel("closed form / autodiff (blue: equality, orange: bound)")
ax.invert_yaxis()
plt.show()

# %% [markdown]
# ## Non-generic cases
# The condition numbers divide by the output: a zero output component makes kappa_cc infinite
# (the paper's x/0 = inf), and a constant vector has no layer norm at all. boundlab says so
# with inf and a `generic` flag rather than a finite number.

# %%
print("layer norm of a constant vector: generic =", bool(closed_forms.layer_norm(jnp.ones(4)).generic))
y = jnp.array([2.0, 1.0, 3.0])  # mean 2: c(y)_1 = 0, so N(y)_1 = 0
print("layer norm with a zero output: kappa_cc autodiff =", float(componentwise(layer_norm, y).value),
      ", closed-form bound =", float(closed_forms.layer_norm(y).kappa_cc_bound))
print("mixed condition number there (finite):", float(mixed(layer_norm, y).value))
