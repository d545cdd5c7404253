"""The matrix units boundlab knows (``UNITS``: NVIDIA tensor cores from Volta to Blackwell, AMD
matrix cores), with MMA-Sim's parameters, and ``get_unit(name, **recipe)``."""

from __future__ import annotations

from boundlab.matrix_units.unit import MatrixUnit


def _nvidia_units() -> dict:
    """The T-FDPA parameters of MMA-Sim's nv_ptx/sim.py, per architecture and instruction."""
    F = {"volta": 23, "turing": 24, "ampere": 24, "ada": 24, "hopper": 25, "blackwell": 25}
    group_bytes = {"volta": 8, "turing": 16, "ampere": 16, "ada": 16, "hopper": 32, "blackwell": 32}
    e_zero = {"volta": (-19, -131), "turing": (-20, -132), "ampere": (-20, -132), "ada": (-20, -132),
              "hopper": (-21, -133), "blackwell": (-21, -133)}  # (fp16 accumulator, fp32 accumulator)
    width = {"fp16": 2, "bf16": 2, "tf32": 4, "fp8_e4m3": 1, "fp8_e5m2": 1}
    inputs = {"volta": ("fp16",), "turing": ("fp16",), "ampere": ("fp16", "bf16", "tf32"),
              "ada": ("fp16", "bf16", "tf32", "fp8_e4m3", "fp8_e5m2"), "hopper": ("fp16", "bf16", "tf32"),
              "blackwell": ("fp16", "bf16", "tf32")}
    units = {}
    for arch in F:
        for fmt in inputs[arch]:
            for acc in ("fp32", "fp16"):
                if acc == "fp16" and fmt in ("bf16", "tf32"):
                    continue  # no such instruction
                f, rule = F[arch], "RNE-FP16" if acc == "fp16" else "RZ-FP32"
                if arch == "ada" and fmt.startswith("fp8"):
                    f, rule = 13, "RNE-FP16" if acc == "fp16" else "RZ-E8M13"
                name = f"{arch}-mma-{fmt}-{acc}"
                units[name] = MatrixUnit(name, fmt, acc, f, group_bytes[arch] // width[fmt], rule,
                                         e_zero[arch][acc == "fp32"])
    for arch, instruction in (("hopper", "wgmma"), ("blackwell", "tcgen05")):
        for fmt in ("fp16", "bf16", "tf32", "fp8_e4m3", "fp8_e5m2"):
            for acc in ("fp32", "fp16"):
                if acc == "fp16" and fmt in ("bf16", "tf32"):
                    continue
                fp8 = fmt.startswith("fp8") and instruction == "wgmma"  # Hopper's FP8 path keeps 13 bits
                rule = "RNE-FP16" if acc == "fp16" else "RZ-E8M13" if fp8 else "RZ-FP32"
                name = f"{arch}-{instruction}-{fmt}-{acc}"
                units[name] = MatrixUnit(name, fmt, acc, 13 if fp8 else 25, 32 // width[fmt], rule,
                                         -21 if acc == "fp16" else -133)
    return units


def _amd_units() -> dict:
    """AMD CDNA3 (MI300) MFMA, float32 accumulator (MMA-Sim's amd/sim.py): fp16, bf16 and xf32
    (tf32) inputs by TR-FDPA with F = 24, F2 = 31, round to nearest into float32, L = 8 (4 for
    xf32); the FP8 inputs (the FNUZ formats fp8_e4m3fnuz and fp8_e5m2fnuz) by GTR-FDPA with
    F = 24, F2 = 31, L = 16."""
    source = "MMA-Sim (arXiv 2511.10909), mmasim 2.1.1: amd/sim.py (CDNA3)"
    units = {}
    for fmt in ("fp16", "bf16", "tf32", "fp8_e4m3fnuz", "fp8_e5m2fnuz"):
        fp8 = fmt.startswith("fp8")
        group = 16 if fp8 else 4 if fmt == "tf32" else 8
        name = f"cdna3-mfma-{fmt}-fp32"
        units[name] = MatrixUnit(name, fmt, "fp32", 24, group, "RNE-FP32", -999, source,
                                 kind="GTR-FDPA" if fp8 else "TR-FDPA", F2=31)
    return units


UNITS = {**_nvidia_units(), **_amd_units()}


def get_unit(name: str | MatrixUnit, **recipe) -> MatrixUnit:
    """A named unit (``UNITS``: e.g. ``"hopper-wgmma-fp8_e4m3-fp32"``), or the unit itself, with
    an optional recipe (``promote_every=128``, ``split_k``, ``scaling``: ``MatrixUnit.recipe``)."""
    if isinstance(name, MatrixUnit):
        return name.recipe(**recipe) if recipe else name
    if not isinstance(name, str) or name not in UNITS:
        family = "-".join(str(name).split("-")[:2])
        known = sorted(n for n in UNITS if n.startswith(family + "-"))
        if known:
            choices = ", ".join(n[len(family) + 1:] for n in known)
            raise ValueError(f"matrix unit {family} has no {name!r}: it takes <inputs>-<accumulator> among {choices}")
        families = sorted({"-".join(n.split("-")[:2]) for n in UNITS})
        raise ValueError(f"unknown matrix unit {name!r}; boundlab knows the families {', '.join(families)} "
                         f"(names <family>-<inputs>-<accumulator>, e.g. hopper-wgmma-fp8_e4m3-fp32)")
    return UNITS[name].recipe(**recipe) if recipe else UNITS[name]

