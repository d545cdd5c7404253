"""The arithmetic of GPU matrix-multiply units (tensor cores), bit for bit.

A matrix unit does not round each product and partial sum (Model 4.1).  Per instruction it
multiplies a group of L products exactly, aligns them and the accumulator c to the largest
exponent among them, truncates each aligned term to F fractional bits, adds them exactly in a
fused adder, and writes the sum back with its own rounding rho; a dot product of length K chains
ceil(K / L) such steps through the accumulator (the T-FDPA model of MMA-Sim: Zhang et al.,
"MMA-Sim", arXiv 2511.10909, whose PyTorch reference ``mmasim`` 2.1.1 the fixtures in
``tests/data/mma_fixtures.npz`` come from; ``tests/data/make_mma_fixtures.py`` writes them).
In exact terms, one step computes

    d = rho( sum_{i <= L} trunc_F(a_i b_i / 2^E) 2^E + trunc_F(c / 2^E) 2^E ),
    E = max(exponents of a_i b_i and c; a zero term counts as e_zero),

with trunc_F(x) = sign(x) floor(|x| 2^F) 2^-F, and rho one of: round toward zero into float32
(``"RZ-FP32"``), toward zero with 13 fractional bits and float32's exponent range (``"RZ-E8M13"``,
the FP8 path of Ada and Hopper's wgmma: DeepSeek-V3's "about 14 bits"), round to nearest into
float16 (``"RNE-FP16"``), or into float32 (``"RNE-FP32"``).

Values are held in float64 (each input a number of its format, as everywhere in boundlab), where
every step above is exact: a product of two significands of <= 24 bits, shifted and truncated to
F <= 25 fractional bits, is an integer multiple of 2^-F below 2^2, and a group of at most 33 of
them sums without rounding.  Vectorised, jit- and vmap-friendly; the chain is a ``lax.scan``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax import lax

from boundlab.formats import get_format

WRITE_BACKS = ("RZ-FP32", "RZ-E8M13", "RNE-FP16", "RNE-FP32")


@dataclasses.dataclass(frozen=True)
class MatrixUnit:
    """One matrix-multiply instruction's arithmetic (see the module docstring).

    ``inputs``: the format of A and B (``fp16``, ``bf16``, ``tf32``, ``fp8_e4m3``, ``fp8_e5m2``);
    ``accumulator``: ``fp32`` or ``fp16`` (C and D); ``F``: fractional bits kept after alignment;
    ``group``: products fused per step (L); ``write_back``: rho; ``e_zero``: the exponent a zero
    term is given when the largest exponent is found; ``source``: where the parameters come from.
    """

    name: str
    inputs: str
    accumulator: str
    F: int
    group: int
    write_back: str
    e_zero: int
    source: str = "MMA-Sim (arXiv 2511.10909), mmasim 2.1.1: nv_ptx/sim.py"

    def __post_init__(self):
        if self.write_back not in WRITE_BACKS:
            raise ValueError(f"write_back must be one of {WRITE_BACKS}, got {self.write_back!r}")
        if not 1 <= self.F <= 30 or self.group < 1:
            raise ValueError(f"F must be in [1, 30] and group >= 1, got F = {self.F}, group = {self.group}")
        get_format(self.inputs)  # a clear error for an unknown format
        if self.accumulator not in ("fp32", "fp16"):
            raise ValueError(f"accumulator must be fp32 or fp16, got {self.accumulator!r}")


def _pow2(e):
    return jnp.ldexp(jnp.ones_like(e, dtype=jnp.float64), e)


def _split(x, e_subnormal: int):
    """(s, e) with x = s 2^e, 1 <= |s| < 2 for normal x, e = e_subnormal for subnormal and zero x."""
    mantissa, exponent = jnp.frexp(x)
    s, e = mantissa * 2.0, exponent - 1
    sub = e < e_subnormal
    s = jnp.where(sub, s * _pow2(jnp.where(sub, e - e_subnormal, 0)), s)
    e = jnp.where(sub | (s == 0), e_subnormal, e)
    return s, e


def _write_back(total, e_max, rule: str):
    """rho(total 2^e_max), as a float64 holding the float32 or float16 result."""
    value = total * _pow2(e_max)
    if rule == "RNE-FP32":
        return value.astype(jnp.float32).astype(jnp.float64)
    bits, e_subnormal, dtype = {"RZ-FP32": (23, -126, jnp.float32), "RZ-E8M13": (13, -126, jnp.float32),
                                "RNE-FP16": (10, -14, jnp.float16)}[rule]
    s, e = _split(value, e_subnormal)
    scaled = s * 2.0**bits
    s = (jnp.round(scaled) if rule == "RNE-FP16" else jnp.trunc(scaled)) * 2.0**-bits
    # exact now, or beyond the range: the conversion gives inf, as the hardware model does
    return (s * _pow2(e)).astype(dtype).astype(jnp.float64)


def _step(unit: MatrixUnit, a, b, c, present=None):
    """One fused step: a, b (..., L) and c (...) -> d (...); ``present`` (L,) masks the padding of
    a last, shorter group (absent terms take no part, not even as zeros)."""
    e_in = get_format(unit.inputs).emin
    s_a, e_a = _split(a, e_in)
    s_b, e_b = _split(b, e_in)
    s_c, e_c = _split(c, get_format(unit.accumulator).emin)
    s = jnp.concatenate([s_a * s_b, s_c[..., None]], axis=-1)
    e = jnp.concatenate([e_a + e_b, e_c[..., None]], axis=-1)
    e = jnp.where(s == 0, unit.e_zero, e)
    if present is not None:
        e = jnp.where(jnp.concatenate([present, jnp.ones((1,), bool)]), e, -(2**20))
    e_max = jnp.max(e, axis=-1)
    terms = jnp.trunc(s * _pow2(e - e_max[..., None] + unit.F)) * 2.0**-unit.F
    return _write_back(jnp.sum(terms, axis=-1), e_max, unit.write_back) + 0.0  # -0 becomes +0


def dot(unit: MatrixUnit, a, b, c=None):
    """The unit's dot product of a and b (..., K) added to c (..., default 0): the chain of
    ceil(K / group) fused steps through the accumulator.  Inputs are taken as numbers of the
    unit's formats (round them first: ``boundlab.round_to``); the result is a float64 array
    holding float32 (or float16) values."""
    a, b = jnp.asarray(a, jnp.float64), jnp.asarray(b, jnp.float64)
    K = a.shape[-1]
    c = jnp.zeros(a.shape[:-1], jnp.float64) if c is None else jnp.asarray(c, jnp.float64)
    L = min(K, unit.group)
    steps = -(-K // L)
    pad = steps * L - K  # the last group is shorter: its padding is masked out of the step
    a = jnp.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, pad)])
    b = jnp.pad(b, [(0, 0)] * (b.ndim - 1) + [(0, pad)])
    a_steps = jnp.moveaxis(a.reshape(a.shape[:-1] + (steps, L)), -2, 0)
    b_steps = jnp.moveaxis(b.reshape(b.shape[:-1] + (steps, L)), -2, 0)

    present = jnp.arange(steps * L).reshape(steps, L) < K

    def body(carry, abp):
        return _step(unit, abp[0], abp[1], carry, abp[2] if pad else None), None

    result, _ = lax.scan(body, c, (a_steps, b_steps, present))
    return result


def promoted_dot(unit: MatrixUnit, a, b, c=None, every: int = 128):
    """DeepSeek-V3's promotion (arXiv 2412.19437, Section 3.3.2): the unit accumulates ``every``
    products (N_C = 128 there) from zero, and each such partial result is added into a float32
    total with round to nearest (on the CUDA cores); c starts the total."""
    if not isinstance(every, int) or every < 1:
        raise ValueError(f"every must be a positive int, got {every!r}")
    a, b = jnp.asarray(a, jnp.float64), jnp.asarray(b, jnp.float64)
    K = a.shape[-1]
    total = jnp.zeros(a.shape[:-1], jnp.float64) if c is None else jnp.asarray(c, jnp.float64)
    for start in range(0, K, every):  # K / every promotions: a few, unrolled
        part = dot(unit, a[..., start:start + every], b[..., start:start + every])
        total = (total + part).astype(jnp.float32).astype(jnp.float64)  # exact sum of two floats, then RN
    return total


def matmul(unit: MatrixUnit, A, B, C=None):
    """D = A B + C (A: (m, K), B: (K, n), C: (m, n)) as the unit computes it, every entry a
    chained dot product (``dot``)."""
    A, B = jnp.asarray(A, jnp.float64), jnp.asarray(B, jnp.float64)
    C = jnp.zeros((A.shape[0], B.shape[1]), jnp.float64) if C is None else C
    return dot(unit, A[:, None, :], B.T[None, :, :], C)


_WRITE_BACK_UNITS = {  # (relative error delta, absolute error mu in the subnormal range) of rho
    "RZ-FP32": (2.0**-23, 2.0**-149), "RZ-E8M13": (2.0**-13, 2.0**-139), "RNE-FP16": (2.0**-11, 2.0**-25),
    "RNE-FP32": (2.0**-24, 2.0**-150)}


def dot_error_bound(unit: MatrixUnit, a, b, c=None, every: int | None = None):
    """A deterministic bound on |d - (a^T b + c)| for ``dot`` (``every``: ``promoted_dot``) on
    these operands (..., K); no overflow assumed (the hypothesis of Model 4.1 too).

    One step (L products and the accumulator, aligned to 2^E, E the largest exponent among them)
    loses less than 2^(E - F) per aligned term to truncation.  2^E <= max |term| when that term's
    factors are normal; a subnormal factor, a zero term (exponent e_zero) or a subnormal
    accumulator can make 2^E larger, but never larger than nu = max(2^emin M, 2^(2 emin), 2^e_zero,
    2^emin_acc), M = max_i max(|a_i|, |b_i|), emin that of the inputs' format.  So the step's sum
    is off by at most eta (|d_prev| + G) + (L + 1) 2^-F nu, eta = (L + 1) 2^-F, G = sum over the
    group of |a_i b_i|; the write-back adds a relative delta (2^-23 for RZ-FP32, 2^-13 for
    RZ-E8M13, 2^-11 for RNE-FP16, 2^-24 for RNE-FP32) and an absolute mu in the subnormal range.
    With kappa = eta + delta (1 + eta) and mu' = mu + (1 + delta) (L + 1) 2^-F nu, the error after
    j steps obeys B_j <= B_(j-1) + kappa (A_j + B_(j-1)) + mu', A_j = |c| + sum so far of |a_i b_i|,
    so after s = ceil(K / L) steps

        |d - (a^T b + c)| <= ((1 + kappa)^s - 1) A + s (1 + kappa)^(s - 1) mu':

    Lemma 4.3's gamma_K u |a|^T |b| with kappa in place of u and the number of steps s in place
    of K.  With promotion every N_C products, each chunk has this bound (c = 0; linear in its A,
    so the chunks' bounds add up to the same form in A), and the float32 round-to-nearest
    additions of the m partials add gamma_m (|c| + A + chunk errors), u = 2^-24, and m 2^-150.
    """
    a, b = jnp.asarray(a, jnp.float64), jnp.asarray(b, jnp.float64)
    c = jnp.zeros(a.shape[:-1], jnp.float64) if c is None else jnp.asarray(c, jnp.float64)
    K = a.shape[-1]
    delta, mu = _WRITE_BACK_UNITS[unit.write_back]
    emin, emin_acc = get_format(unit.inputs).emin, get_format(unit.accumulator).emin
    L = min(K, unit.group)
    eta = (L + 1) * 2.0**-unit.F
    kappa = eta + delta * (1 + eta)
    M = jnp.max(jnp.maximum(jnp.abs(a), jnp.abs(b)), axis=-1)
    nu = jnp.maximum(2.0**emin * M, 2.0 ** max(2 * emin, unit.e_zero, emin_acc))
    mu = mu + (1 + delta) * (L + 1) * 2.0**-unit.F * nu
    A = jnp.sum(jnp.abs(a * b), axis=-1)

    def chain(steps, total):
        return ((1 + kappa) ** steps - 1) * total + steps * (1 + kappa) ** (steps - 1) * mu

    if every is None:
        return chain(-(-K // L), A + jnp.abs(c)) * (1 + 2.0**-50)  # the bound's own float64 rounding
    chunks = -(-K // every)
    steps = -(-min(every, K) // min(every, K, unit.group))  # steps of the longest chunk
    chunk_errors = ((1 + kappa) ** steps - 1) * A + chunks * steps * (1 + kappa) ** (steps - 1) * mu
    gamma = chunks * 2.0**-24 / (1 - chunks * 2.0**-24)
    return (chunk_errors + gamma * (jnp.abs(c) + A + chunk_errors) + chunks * 2.0**-150) * (1 + 2.0**-50)


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


UNITS = _nvidia_units()


def get_unit(name: str | MatrixUnit) -> MatrixUnit:
    """A named unit (``UNITS``: e.g. ``"hopper-wgmma-fp8_e4m3-fp32"``), or the unit itself."""
    if isinstance(name, MatrixUnit):
        return name
    if name not in UNITS:
        raise ValueError(f"unknown matrix unit {name!r}; boundlab knows {', '.join(sorted(UNITS))}")
    return UNITS[name]


matmul_jit = jax.jit(matmul, static_argnums=0)
