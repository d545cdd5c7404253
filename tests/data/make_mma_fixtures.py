"""Write tests/data/mma_fixtures.npz: MMA-Sim's results for every unit of boundlab.matrix_units.

Run once, by hand, where PyTorch and mmasim are installed (not needed by the tests):

    pip install torch==2.13.0 mmasim==2.1.1
    python tests/data/make_mma_fixtures.py

For each input format, 32 operand pairs of length K = 44 (ragged for every group length: the
last, shorter group is exercised) in eight kinds of rows: random values, wide exponent spreads,
cancelling products, subnormals of the input format, products of subnormals beside a zero
accumulator (where the exponent given to zero terms decides), zeros, values near the largest finite
number (overflow), and an accumulator that dominates or vanishes.  Operands and accumulators
are stored as float32 (every value of these formats is one), results as float32 (NaN canonical).
The units' parameters come from mmasim's own classes (nv_ptx.sim.MMA, WGMMA, TCGen05MMA,
amd.sim.MFMA for CDNA3), so
the test checks boundlab's parameter table as well as its arithmetic.
"""

import sys
import types
from pathlib import Path

import numpy as np
import torch

# mmasim.nv_ptx.sim imports the FMA model (float64 mma), which builds a C++ extension at import;
# the units here never use it
sys.modules["mmasim.arithmetic.fma"] = types.SimpleNamespace(MMA_FMA=None)
import mmasim  # noqa: E402
from mmasim.amd import MFMA  # noqa: E402
from mmasim.nv_ptx import MMA, WGMMA, TCGen05MMA  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from boundlab.matrix_units import UNITS  # noqa: E402

K, ROWS = 44, 32
TORCH = {"fp16": torch.float16, "bf16": torch.bfloat16, "tf32": torch.float32, "fp8_e4m3": torch.float8_e4m3fn,
         "fp8_e4m3fnuz": torch.float8_e4m3fnuz, "fp8_e5m2fnuz": torch.float8_e5m2fnuz,
         "fp8_e5m2": torch.float8_e5m2, "fp32": torch.float32}
PTX = {"fp16": "f16", "bf16": "bf16", "tf32": "tf32", "fp8_e4m3": "e4m3", "fp8_e5m2": "e5m2"}
ARCH = {"volta": "Volta", "turing": "Turing", "ampere": "Ampere", "ada": "Ada Lovelace", "hopper": "Hopper",
        "blackwell": "Blackwell"}
LIMITS = {"fp16": (65504.0, 2.0**-24), "bf16": (3.0e38, 2.0**-133), "tf32": (3.0e38, 2.0**-136),
          "fp8_e4m3": (448.0, 2.0**-9), "fp8_e5m2": (57344.0, 2.0**-16), "fp32": (3.0e38, 2.0**-149),
          "fp8_e4m3fnuz": (240.0, 2.0**-10), "fp8_e5m2fnuz": (57344.0, 2.0**-17)}
FNUZ = ("fp8_e4m3fnuz", "fp8_e5m2fnuz")  # CDNA3's FP8 inputs, drawn from a generator of their own


def to_format(x, fmt):
    """x (float64) rounded to the format (tf32: truncated from float32, as the hardware does)."""
    t = torch.tensor(np.asarray(x, np.float64)).to(TORCH[fmt])
    if fmt == "tf32":
        t = (t.view(torch.int32) >> 13 << 13).view(torch.float32)
    return t


def operands(fmt, rng):
    largest, smallest = LIMITS[fmt]
    a, b = rng.standard_normal((ROWS, K)), rng.standard_normal((ROWS, K))
    spread = {"fp8_e4m3": 5, "fp8_e5m2": 11, "fp16": 11, "fp8_e4m3fnuz": 5, "fp8_e5m2fnuz": 11}.get(fmt, 24)
    a[8:12] *= 2.0 ** rng.integers(-spread, spread, (4, K))  # wide exponent spreads
    b[8:12] *= 2.0 ** rng.integers(-spread, spread, (4, K))
    a[12:16, 1::2] = a[12:16, ::2]  # cancelling pairs of products, plus a few small terms
    b[12:16, 1::2] = -b[12:16, ::2]
    b[12:16, -4:] *= 2.0**-10
    a[16:20, ::3] = smallest * rng.integers(1, 4, (4, len(range(0, K, 3))))  # subnormals of the format
    b[18:20] = smallest * 2.0 ** rng.integers(0, 6, (2, K))  # tiny products only: where e_zero decides
    a[18:20] = smallest * 2.0 ** rng.integers(0, 6, (2, K))
    a[20:22] = 0.0  # zeros
    a[22:24, ::2] = 0.0
    a[24:28] = np.sign(a[24:28]) * largest * rng.uniform(0.5, 1.0, (4, K))  # near the largest: overflow
    b[24:28] = np.abs(b[24:28]) + 1.0
    return to_format(a, fmt), to_format(b, fmt)


def accumulators(acc, rng):
    c = rng.standard_normal(ROWS) * 4
    c[18:22] = 0.0
    c[28:30] *= 2.0**20  # the accumulator dominates
    c[30:32] *= 2.0**-20  # it vanishes beside the products
    if acc == "fp16":
        c[28:30] = np.sign(c[28:30]) * 30000.0
    return to_format(c, acc)


def reference(name, unit):
    arch, instruction, fmt, acc = name.split("-")
    if arch == "cdna3":
        return MFMA("CDNA3", {"fp16": "f32_32x32x8_f16", "bf16": "f32_32x32x8_bf16", "tf32": "f32_16x16x8_xf32",
                              "fp8_e4m3fnuz": "f32_32x32x16_fp8_fp8", "fp8_e5m2fnuz": "f32_32x32x16_bf8_bf8"}[fmt])
    d, t = ("f32" if acc == "fp32" else "f16"), PTX[fmt]
    if instruction == "mma":
        k = {"volta": 4, "turing": 8}.get(arch, {"tf32": 8, "fp8_e4m3": 32, "fp8_e5m2": 32}.get(fmt, 16))
        shape = {"volta": "m8n8k4"}.get(arch, f"m16n8k{k}")
        return MMA(ARCH[arch], f"{shape}.{d}.{t}.{t}.{d}")
    if instruction == "wgmma":
        k = {"tf32": 8, "fp8_e4m3": 32, "fp8_e5m2": 32}.get(fmt, 16)
        return WGMMA("Hopper", f"m64n8k{k}.{d}.{t}.{t}")
    kind = {"tf32": "tf32", "fp16": "f16", "bf16": "f16"}.get(fmt, "f8f6f4")
    k = {"tf32": 8, "fp8_e4m3": 32, "fp8_e5m2": 32}.get(fmt, 16)
    return TCGen05MMA("Blackwell", f"m64n8k{k}.kind::{kind}.{d}.{t}.{t}")


def main():
    rng = np.random.default_rng(2511)
    arrays = {"K": np.asarray(K), "mmasim_version": np.asarray(getattr(mmasim, "__version__", "2.1.1"))}
    inputs = {fmt: operands(fmt, rng) for fmt in PTX}
    accs = {acc: accumulators(acc, rng) for acc in ("fp32", "fp16")}
    fnuz_rng = np.random.default_rng(2512)  # the earlier operands and accumulators stay as they were
    inputs |= {fmt: operands(fmt, fnuz_rng) for fmt in FNUZ}
    for fmt, (a, b) in inputs.items():
        arrays[f"a/{fmt}"], arrays[f"b/{fmt}"] = a.float().numpy(), b.float().numpy()
    for acc, c in accs.items():
        arrays[f"c/{acc}"] = c.float().numpy()
    for name, unit in sorted(UNITS.items()):
        op = reference(name, unit)
        a, b = inputs[unit.inputs]
        d = op.dpa(a, b, accs[unit.accumulator])
        arrays[f"d/{name}"] = d.float().numpy()
        arithmetic = op.arithmetic_op
        print(f"{name}: {arithmetic.__class__.__name__} F={arithmetic.F} F2={getattr(arithmetic, 'F2', '-')} "
              f"L={arithmetic.L_max} rho={arithmetic.rho} e_zero={getattr(arithmetic, 'e_zero', '-')}")
    np.savez_compressed(Path(__file__).with_name("mma_fixtures.npz"), **arrays)


if __name__ == "__main__":
    main()
