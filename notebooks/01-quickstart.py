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
# # boundlab quick start
#
# Formats and bit-exact rounding, the paper's transformer run exactly and under emulated
# low-precision arithmetic (every operation rounded once, Model 4.1), and `analyze`: every
# Section 4 bound beside the error it bounds, for one network.
#
# `SIZE` is the knob: `"small"` runs in seconds; `"paper"` uses the paper's Figure 1 sizes
# (d = n = D = 20, L = 40).

# %%
SIZE = "small"  # or "paper"
d, n, D, L = (6, 5, 8, 3) if SIZE == "small" else (20, 20, 20, 40)

import jax

jax.config.update("jax_enable_x64", True)  # the exact reference is float64
import matplotlib.pyplot as plt
import numpy as np

import boundlab
from boundlab import Emulated, get_format, round_to
from boundlab.models.paper import compare, init
from boundlab.bounds import Statement

# %% [markdown]
# ## Formats
# A format is a precision t (significand bits, the hidden one included) and an exponent range;
# its unit roundoff is u = 2^-t. `t<N>` names a format with float64's exponent range.

# %%
for name in ["fp32", "bf16", "fp16", "fp8_e4m3", "fp8_e5m2", "t10"]:
    f = get_format(name)
    print(f"{name:9s} t = {f.precision:2d}  u = 2^-{f.precision:<2d} max = {f.max_finite:<11.5g} "
          f"smallest subnormal = {f.min_subnormal:.3g}")

# %% [markdown]
# ## Rounding
# `round_to` rounds float64 (or float32) values to a format in any mode, bit for bit as MPFR
# would, subnormals and overflow included. The first value lies just above a bf16 tie: rounding
# once goes up, while a float32 cast first would go down (notebook 02).

# %%
x = np.array([1 + 2.0**-8 + 2.0**-30, 0.1, 65519.0, 65520.0, 1e-7])
for mode in ["nearest", "zero", "up", "down"]:
    print(f"{mode:8s} fp16: {np.asarray(round_to(x, 'fp16', mode))}")
print("nearest  bf16:", np.asarray(round_to(x, "bf16")))

# %% [markdown]
# ## The transformer, exact and emulated
# `init` draws the paper's Figure 1 weights (stacked over L layers) and an input X (d x n,
# tokens as columns). `compare` runs the network under an emulated arithmetic and in float64
# (on the same rounded weights) and measures the componentwise error rho_c and the normwise one.

# %%
params, X = init(jax.random.key(0), "figure1", d=d, n=n, D=D, L=L)
precisions = [8, 12, 16, 20, 24]
errors = [compare(params, X, Emulated(f"t{t}")) for t in precisions]
u = [2.0**-t for t in precisions]
fig, ax = plt.subplots(figsize=(5, 3.5))
ax.loglog(u, [float(e.componentwise) for e in errors], "o-", label="componentwise rho_c")
ax.loglog(u, [float(e.normwise) for e in errors], "s-", label="normwise")
ax.loglog(u, u, "k--", label="u")
ax.set_xlabel("unit roundoff u = 2^-t")
ax.set_ylabel("relative error of the output")
ax.legend()
plt.show()

# %% [markdown]
# The error grows linearly in u: the first-order regime the paper's bounds describe.
#
# ## `analyze`: every bound beside the error it bounds
# One exact pass, one emulated pass, every Section 4 statement evaluated on the actual weights
# and intermediates, and the condition numbers (autodiff beside the closed forms).

# %%
report = boundlab.analyze(params, X, "fp16", conditions=SIZE == "small", first_order=SIZE != "small")
print(report.table())

# %% [markdown]
# Reading the table (the `autodiff` column, the first-order bound of the same part by automatic
# differentiation, is filled when `first_order=True`, the default; notebook 07 is about it):
# `coefficient` is the statement's constant (the bound is coefficient x u,
# plus an input-error term for the compositions), `bound` is coefficient x u, `measured` is the
# error of that module under fp16 emulation on this network, `bound/meas` is the slack. `valid`
# says whether the statement's hypotheses hold here (genericity, alpha-conditions, n u < 1),
# `holds` whether the measured error is below the bound. `report.to_dict()` has the same data
# keyed by the paper's statement names, with every term of every bound.

# %%
data = report.to_dict()
theorem = report.entry(Statement.THEOREM_4_30)
print("measured:", data["measured"]["network"])
print("Theorem 4.30 as printed:", theorem["bound"], " layer by layer:", theorem["layerwise"]["bound"])
