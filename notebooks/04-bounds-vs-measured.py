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
# # Section 4's bounds against the measured error
#
# Every statement of Section 4 evaluated on one network's actual weights and intermediates,
# beside the error of the same module measured under bit-exact emulation; then the errata,
# shown on their counterexamples.

# %%
SIZE = "small"  # or "paper"
d, n, D, L = (6, 5, 8, 3) if SIZE == "small" else (20, 20, 20, 40)
FORMAT = "fp16"

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import boundlab
from boundlab import bounds
from boundlab.condition import closed_forms, mixed
from boundlab.quantities import score_magnitude
from boundlab.models.paper import init, layer_norm, scores
from boundlab.bounds import Statement

# %%
params, X = init(jax.random.key(1), "figure4", d=d, n=n, D=D, L=L)
data = boundlab.analyze(params, X, FORMAT, conditions=False).to_dict()
statements = {name: entry for name, entry in data.items()
              if isinstance(entry, dict) and "coefficient" in entry and name != Statement.REMARK_4_18}
for name, entry in statements.items():
    print(f"{name:<28} bound {entry['bound']:.3e}  measured {entry['measured']:.3e}  "
          f"hypotheses {'hold' if entry['valid'] else 'FAIL'}  check: {entry['verdict']}")

# %% [markdown]
# ## Tightness per statement
# bound / measured: 1 would be tight; every bar is at least 1 where the hypotheses hold.

# %%
names = list(statements)
slack = [statements[name]["bound/measured"] for name in names]
fig, ax = plt.subplots(figsize=(7, 0.32 * len(names) + 1))
ax.barh(names, slack, color=["tab:green" if statements[m]["valid"] else "tab:gray" for m in names])
ax.set_xscale("log")
ax.axvline(1, color="k", lw=0.8)
ax.set_xlabel(f"bound / measured error under {FORMAT} (grey: hypotheses fail)")
ax.invert_yaxis()
plt.show()

# %% [markdown]
# The network as a whole: Theorem 4.30 as printed, its sigma_min-free variant and the tighter
# layer-by-layer composition, against the measured error of the output.

# %%
theorem = data[Statement.THEOREM_4_30]
print("measured rho_c of the output :", data["measured"]["network"])
print("Theorem 4.30 (as printed)    :", theorem["bound"])
print("sigma_min-free variant       :", theorem["sigma_min_free"]["bound"])
print("layer-by-layer composition   :", theorem["layerwise"]["bound"])

# %% [markdown]
# ## Erratum: Remark 4.18
# The remark bounds xi(S, X) = max_i |x_i|^T|W_k|^T|W_q||x_t| / (sqrt(d) |S_i|) by
# sigma_max(|W_k|^T|W_q|) / sigma_min(W_k^T W_q). With W_k = W_q = I and tokens (1, 1), (1, -1)
# a score vanishes, so xi is infinite while the right-hand side is 1.

# %%
I = jnp.eye(2)
X2 = jnp.array([[1.0, 1.0], [1.0, -1.0]])
S = scores(X2, I, I)
print("scores of the second query:", np.asarray(S[:, 1]))
print("xi(S, X_2) =", float(jnp.max(score_magnitude(X2, I, I)[:, 1] / jnp.abs(S[:, 1]))))
print("Remark 4.18's right-hand side =", float(bounds.remark_4_18(I, I).coefficient))

# %% [markdown]
# ## Erratum: Lemma 3.8, part 3
# The printed bound on the mixed condition number of the layer norm uses |c(x)^T x| / ||c(x)||^2,
# which is always 1; the proof gives |c(x)|^T|x| / ||c(x)||^2. At this x the printed bound is
# below the true condition number; the corrected one is not.

# %%
x = jnp.array([-3.996, -3.814, -3.859, -3.855, -3.858, -3.857, -3.860, -3.895])
forms = closed_forms.layer_norm(x)
print("kappa_c,inf by autodiff :", float(mixed(layer_norm, x).value))
print("bound as printed        :", float(forms.kappa_c_inf_bound_as_printed))
print("bound corrected         :", float(forms.kappa_c_inf_bound))
