"""Error bounds of a matrix unit's dot products: the constants of one step, a rigorous bound of a
chained dot product (``dot_error_bound``), and the first-order error of a product
(``first_order_error``)."""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from boundlab.formats import get_format
from boundlab.matrix_units.catalogue import get_unit
from boundlab.matrix_units.chain import check_length, layout
from boundlab.matrix_units.scaling import scales
from boundlab.matrix_units.unit import MatrixUnit

WRITE_BACK_UNITS = {  # (relative error delta, absolute error mu in the subnormal range) of rho
    "RZ-FP32": (2.0**-23, 2.0**-149), "RZ-E8M13": (2.0**-13, 2.0**-139), "RNE-FP16": (2.0**-11, 2.0**-25),
    "RNE-FP32": (2.0**-24, 2.0**-150)}


def step_constants(unit: MatrixUnit, L: int, M):
    """(eta, delta, mu') of one step of L products (see ``dot_error_bound``); M = max_i
    max(|a_i|, |b_i|) bounds what subnormal inputs can do to the alignment."""
    delta, mu = WRITE_BACK_UNITS[unit.write_back]
    emin = get_format(unit.inputs).emin
    if unit.kind != "T-FDPA":  # products against their largest, the sum and c against the larger
        eta = L * 2.0**-unit.F + 2.0 ** -(unit.F2 + 1) + 2.0**-unit.F
        if unit.kind == "GTR-FDPA":  # the even and odd sums floored against the larger of the two
            eta = eta + 2 * 2.0**-unit.F
        delta = (1 + 2.0**-unit.F2) * (1 + delta) - 1  # the floor to F2 bits, then rho
        nu = jnp.maximum(2.0**emin * M, 2.0 ** max(2 * emin, -126))
        return eta, delta, mu + 2.0 ** (-126 - unit.F2) + (1 + delta) * eta * nu
    eta = (L + 1) * 2.0**-unit.F
    nu = jnp.maximum(2.0**emin * M, 2.0 ** max(2 * emin, unit.e_zero, get_format(unit.accumulator).emin))
    return eta, delta, mu + (1 + delta) * eta * nu


def dot_error_bound(unit: MatrixUnit, a, b, c=None, every: int | None = None):
    """A deterministic bound on |d - (a^T b + c)| for ``dot`` with the unit's recipe (``every``:
    promotion every that many products, as ``promoted_dot``) on these operands (..., K); no
    overflow assumed (the hypothesis of Model 4.1 too).

    One T-FDPA step (L products and the accumulator, aligned to 2^E, E the largest exponent among
    them) loses less than 2^(E - F) per aligned term to truncation.  2^E <= max |term| when that
    term's factors are normal; a subnormal factor, a zero term (exponent e_zero) or a subnormal
    accumulator can make 2^E larger, but never larger than nu = max(2^emin M, 2^(2 emin),
    2^e_zero, 2^emin_acc), M = max_i max(|a_i|, |b_i|), emin that of the inputs' format.  So the
    step's sum is off by at most eta (|d_prev| + G) + eta nu, eta = (L + 1) 2^-F, G = sum over the
    group of |a_i b_i|; the write-back adds a relative delta (2^-23 for RZ-FP32, 2^-13 for
    RZ-E8M13, 2^-11 for RNE-FP16, 2^-24 for RNE-FP32) and an absolute mu in the subnormal range.
    (TR-FDPA: eta = L 2^-F + 2^-(F2+1) + 2^-F, the products' truncation against their largest and
    the floors of their sum and of c against the larger; delta = (1 + 2^-F2)(1 + 2^-24) - 1;
    GTR-FDPA adds 2 2^-F for the floors of the even and odd sums.)
    With kappa = eta + delta (1 + eta) and mu' = mu + (1 + delta) eta nu, the error after j steps
    obeys B_j <= B_(j-1) + kappa (A_j + B_(j-1)) + mu', A_j = |c| + sum so far of |a_i b_i|, so
    after s = ceil(K / L) steps

        |d - (a^T b + c)| <= ((1 + kappa)^s - 1) A + s (1 + kappa)^(s - 1) mu':

    Lemma 4.3's gamma_K u |a|^T |b| with kappa in place of u and the number of steps in place of
    K.  With promotion or split-K, each of the m chunks has this bound (c = 0; linear in its A,
    so the chunks' bounds add up to the same form in A, s the longest chunk's steps), and the
    float32 round-to-nearest additions (at most m + S of them on any path) add
    gamma_(m+S) (|c| + A + chunk errors), u = 2^-24, and (m + S) 2^-150.
    """
    unit = get_unit(unit)
    if every is not None:
        unit = unit.recipe(promote_every=every, split_k=unit.split_k)
    a, b = jnp.asarray(a, jnp.float64), jnp.asarray(b, jnp.float64)
    c = jnp.zeros(a.shape[:-1], jnp.float64) if c is None else jnp.asarray(c, jnp.float64)
    K = a.shape[-1]
    check_length(unit, K)
    L = min(K, unit.group)
    M = jnp.max(jnp.maximum(jnp.abs(a), jnp.abs(b)), axis=-1)
    eta, delta, mu = step_constants(unit, L, M)
    kappa = eta + delta * (1 + eta)
    A = jnp.sum(jnp.abs(a * b), axis=-1)
    if unit.promote_every is None and unit.split_k == 1:
        s = -(-K // L)
        return (((1 + kappa) ** s - 1) * (A + jnp.abs(c)) + s * (1 + kappa) ** (s - 1) * mu) * (1 + 2.0**-50)
    slices, per_slice, length = layout(unit, K)
    chunks = slices * per_slice
    s = -(-min(length, K) // L)  # steps of the longest chunk
    chunk_errors = ((1 + kappa) ** s - 1) * A + chunks * s * (1 + kappa) ** (s - 1) * mu
    adds = chunks + slices
    gamma = adds * 2.0**-24 / (1 - adds * 2.0**-24)
    return (chunk_errors + gamma * (jnp.abs(c) + A + chunk_errors) + adds * 2.0**-150) * (1 + 2.0**-50)


def first_order_error(unit: MatrixUnit, A, B):
    """The first-order error bound, entrywise, of ``product(unit, A, B)`` against A B (exact
    A, B (..., m, K), (..., K, n)): the local error model of a dot product computed by the unit,
    as ``boundlab.first_order`` uses it.

        e = q + sum over chunks [ sum over steps j (eta (|S_(j-1)| + G_j) + delta |S_j| + mu')
                                   + u32 |T_c| ] (+ u32 (|T| + |D|) for the float32 dequantisation),

    S_j the exact partial sums of a chunk after j steps, G_j the step's sum of |a_i b_i|, T_c
    the exact running total after chunk c (the float32 promotion or split-K additions), and q the
    operands' own rounding into the input format: (u |A| + s_A h) |B| + |A| (u |B| + s_B h), u the
    input format's unit roundoff, h half its smallest subnormal, s the scales (1 without
    scaling).  Terms of order u^2 are left out: this is a first-order estimate (flags in
    ``first_order`` say when underflow or overflow void it), not ``dot_error_bound``."""
    unit = get_unit(unit)
    A, B = jnp.asarray(A, jnp.float64), jnp.asarray(B, jnp.float64)
    K = A.shape[-1]
    check_length(unit, K)
    fmt = get_format(unit.inputs)
    u, h = fmt.unit_roundoff, fmt.min_subnormal / 2
    hi = lax.Precision.HIGHEST
    absA, absB = jnp.abs(A), jnp.abs(B)
    if unit.scaling is None:
        sa = sb = jnp.ones((), jnp.float64)
        qA, qB = u * absA + h, u * absB + h
    else:
        sa = scales(A, fmt, A.ndim - 1, unit)
        sb = scales(jnp.swapaxes(B, -1, -2), fmt, B.ndim - 1, unit)
        if unit.scaling == "block":
            qA = u * absA + h * jnp.repeat(sa, unit.scale_block, axis=-1)[..., :K]
            qB = u * absB + h * jnp.swapaxes(jnp.repeat(sb, unit.scale_block, axis=-1)[..., :K], -1, -2)
        else:
            qA, qB = u * absA + h * sa, u * absB + h * sb
    q = jnp.matmul(qA, absB, precision=hi) + jnp.matmul(absA, qB, precision=hi)

    slices, per_slice, length = layout(unit, K)
    chunks = slices * per_slice
    L = min(length, unit.group)  # as ``chain`` groups each chunk (length is a multiple of L)
    steps = -(-length // L)
    total_len = chunks * steps * L
    pad = total_len - K
    Ap = jnp.pad(A, [(0, 0)] * (A.ndim - 1) + [(0, pad)])
    Bp = jnp.pad(B, [(0, 0)] * (B.ndim - 2) + [(0, pad), (0, 0)])
    Ag = Ap.reshape(A.shape[:-1] + (chunks, steps, L))
    Bg = Bp.reshape(B.shape[:-2] + (chunks, steps, L, B.shape[-1]))
    G_signed = jnp.einsum("...mcsl,...csln->...mncs", Ag, Bg, precision=hi)
    G = jnp.einsum("...mcsl,...csln->...mncs", jnp.abs(Ag), jnp.abs(Bg), precision=hi)
    S = jnp.cumsum(G_signed, axis=-1)  # within each chunk
    S_prev = S - G_signed
    M = jnp.maximum(jnp.max(absA, axis=-1)[..., :, None], jnp.max(absB, axis=-2)[..., None, :])
    eta, delta, mu = step_constants(unit, L, M)
    chain = jnp.sum(eta * (jnp.abs(S_prev) + G) + delta * jnp.abs(S), axis=(-1, -2)) + (chunks * steps) * mu
    e = q + chain
    if unit.promote_every is not None or unit.split_k > 1:
        totals = jnp.cumsum(S[..., -1], axis=-1)  # the exact running total after each chunk
        e = e + 2.0**-24 * jnp.sum(jnp.abs(totals), axis=-1) + chunks * 2.0**-150
        if unit.split_k > 1:  # the slices' own totals (before the final additions)
            e = e + 2.0**-24 * jnp.sum(jnp.abs(totals), axis=-1)
    if unit.scaling is not None:  # fl32(s_a s_b) and the product with it, per chunk or once
        e = e + 2 * 2.0**-24 * (jnp.sum(jnp.abs(S[..., -1]), axis=-1) if unit.scaling == "block"
                                else jnp.abs(jnp.sum(S[..., -1], axis=-1)))
    return e
