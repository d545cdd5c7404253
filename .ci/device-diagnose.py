"""Two questions for a lent GPU (run by .ci/device-check): what lax.scan's equation parameters are
in the machine's jax (boundlab.emulate's interpreter reads num_consts/num_carry, which jax 0.11.2
no longer gave), and whether the matrix-unit kernel, compiled, is bit for bit the XLA path
(it was not, in the first compiled run), entry by entry and twice (a race would move)."""
import sys, pathlib
sys.path.insert(0, "tests")
import jax, jax.numpy as jnp, numpy as np
from jax import lax
jax.config.update("jax_enable_x64", True)
# 1. jax's scan equation parameters in this version (boundlab.emulation's interpreter reads them)
jaxpr = jax.make_jaxpr(lambda w, c, xs: lax.scan(lambda c, x: (c * w + x, c - x), c, xs))(2.0, 1.0, jnp.arange(3.0))
for eqn in jaxpr.eqns:
    print("EQN", eqn.primitive.name, "invars", len(eqn.invars), "outvars", len(eqn.outvars))
    for k, v in eqn.params.items():
        print("   ", k, "=", repr(v)[:300])
jaxpr = jax.make_jaxpr(lambda w, c: lax.fori_loop(0, 3, lambda i, c: c * w, c))(2.0, 1.0)
print("FORI", [(e.primitive.name, sorted(e.params)) for e in jaxpr.eqns])
# 2. the unit kernel on the GPU vs the XLA path: mismatches per unit and recipe, twice
from boundlab.kernels.unit_matmul import product
from boundlab.matrix_units import UNITS, recipe_dot, get_unit
fixtures = np.load(pathlib.Path("tests/data/mma_fixtures.npz"))
for recipe in ({}, {"promote_every": 16}, {"split_k": 2}):
    for name in ("ada-mma-fp8_e4m3-fp32", "turing-mma-fp16-fp16", "cdna3-mfma-bf16-fp32", "hopper-wgmma-fp8_e4m3-fp32"):
        unit = get_unit(name, **(recipe if UNITS[name].group <= 16 else {}))
        a = fixtures[f"a/{unit.inputs}"][:12].astype(np.float64)
        bt = fixtures[f"b/{unit.inputs}"][5:14].astype(np.float64)
        want = np.asarray(recipe_dot(unit, a[:, None, :], bt[None, :, :], jnp.zeros((12, 9), jnp.float64)))
        runs = [np.asarray(product(a, bt, unit, block_m=8, block_n=8)) for _ in range(2)]
        bad = [np.argwhere(~((r == want) | (np.isnan(r) & np.isnan(want)))) for r in runs]
        same = np.array_equal(runs[0], runs[1], equal_nan=True)
        print("UNIT", name, recipe, "mismatches", [len(b) for b in bad], "deterministic", same)
        for i, j in bad[0][:4]:
            print("     ", (int(i), int(j)), "got", runs[0][i, j].hex(), "want", want[i, j].hex())
