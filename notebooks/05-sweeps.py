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
# # The paper's Figures 1-4 as sweeps
#
# Each figure is a jit-compiled, vmapped sweep over initialisations, in chunks, sharded over
# every device JAX sees. Here at a small size; `SIZE = "paper"` runs the paper's (minutes to
# tens of minutes on a CPU, seconds on an accelerator).

# %%
SIZE = "small"  # or "paper"

import json
import tempfile
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)
from IPython.display import Image, display

from boundlab.experiments import Figure1, Figure2, Figure3, Figure4, figure1, figure2, figure3, figure4, write

small = {  # tiny: seconds (the test suite's sizes); "paper" is the real thing
    1: Figure1(d=4, n=4, D=4, L=3, inits=8, precisions=(20, 24), bound_samples=8, first_order_samples=0,
               chunk=8),  # the autodiff three-way comparison: notebook 07
    2: Figure2(d=4, n=4, D=4, depths=(1, 2), lambdas=(0.5, 1.0, 2.0), inits=5, precisions=(10, 16), chunk=8),
    3: Figure3(d=4, n=4, scales=(0.25, 0.5, 1.0, 2.0), inits=6, precisions=(10, 16), chunk=8),
    4: Figure4(d=4, n=4, D=4, L=3, inits=6, precisions=(10, 16), bound_samples=0, chunk=8),
}
configs = small if SIZE == "small" else {number: cls() for number, cls in ((1, Figure1), (2, Figure2), (3, Figure3), (4, Figure4))}
runners = {1: figure1, 2: figure2, 3: figure3, 4: figure4}
out = Path(tempfile.mkdtemp(prefix="boundlab-figures-"))

# %%
results = {}
for number, config in configs.items():
    results[number] = runners[number](config, progress=False)
    paths = write(results[number], out / f"figure{number}")
    display(Image(filename=paths["png"], width=800))

# %% [markdown]
# ## Reading `summary.json`
# Next to each PNG: the raw errors as CSV and `summary.json` with the fitted quantities.
# Figure 3's headline is the fitted growth of the error with the input norm
# (error ~ a + b ||x||^p); Figure 1's has per-precision statistics of the errors per layer and
# the Theorem 4.30 bound beside them on the sampled networks.

# %%
summary = json.loads((out / "figure3" / "summary.json").read_text())
print(json.dumps(summary["headline"], indent=1)[:800])
summary1 = json.loads((out / "figure1" / "summary.json").read_text())
print(sorted(summary1))

# %% [markdown]
# ## Sharding a sweep over devices and hosts
# The sweeps place each chunk of initialisations on a `jax.sharding.Mesh` over `jax.devices()`:
# on one machine with several accelerators nothing needs to change. To try it on a CPU, start
# Python with `XLA_FLAGS=--xla_force_host_platform_device_count=4` (before JAX is imported).
# Across hosts, run the same command on every host under a launcher that sets
# `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID` and call
# `jax.distributed.initialize()` first; `jax.devices()` then lists every host's devices. Results
# do not depend on the chunk size or the number of devices: each initialisation's key is
# `fold_in(key, index)`.

# %%
print("devices this sweep ran on:", jax.devices())
