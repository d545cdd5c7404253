"""The block library (boundlab.models.blocks) against independent references: NumPy float64
implementations of Hugging Face's Llama and BERT formulas for the exact values, ``emulate`` of
plain ``jax.numpy`` code in the documented order for the rounded ones (bit for bit), ``Native()``
as that plain program and ``emulate`` of it as the emulated arithmetic, and the structure the
parts must have (grouped heads are shared heads, causality, padding, rotary embeddings depend on
relative positions only)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from llama_reference import hf_attention, hf_rms_norm, hf_rotary, hf_swiglu
from tolerances import relative_difference, relative_tolerance

from boundlab import Emulated, Exact, emulate
from boundlab.arithmetic import Native
from boundlab.models.blocks import (activation, affine_layer_norm, attention_mask, gated_perceptron,
                                    grouped_query_attention, linear, rotary, rotary_angles, scaled_rms_norm)

RNG = np.random.default_rng(7)
d, n, H, H_KV, DH, HIDDEN = 8, 5, 4, 2, 4, 12
X = RNG.standard_normal((d, n))
GAIN = 1 + 0.1 * RNG.standard_normal(d)
WQ, WK, WV = (RNG.standard_normal((rows, d)) / np.sqrt(d) for rows in (H * DH, H_KV * DH, H_KV * DH))
WO = RNG.standard_normal((d, H * DH)) / np.sqrt(H * DH)
GATE, UP = (RNG.standard_normal((HIDDEN, d)) / np.sqrt(d) for _ in range(2))
DOWN = RNG.standard_normal((d, HIDDEN)) / np.sqrt(HIDDEN)
BASE = 1e5  # SmolLM2's rotary base


def test_exact_parts_are_the_reference_formulas():
    tolerance = relative_tolerance("fp64", 2**8)
    cases = [(scaled_rms_norm(X, GAIN, 1e-5), hf_rms_norm(X, GAIN, 1e-5)),
             (rotary(X, jnp.arange(n), BASE), hf_rotary(X, np.arange(n), BASE)),
             (grouped_query_attention(X, WQ, WK, WV, WO, H, H_KV, rope_base=BASE), hf_attention(X, WQ, WK, WV, WO, H, H_KV, BASE)),
             (gated_perceptron(X, GATE, UP, DOWN), hf_swiglu(X, GATE, UP, DOWN))]
    for got, want in cases:
        scale = np.max(np.abs(want))
        assert np.max(np.abs(np.asarray(got) - want)) <= tolerance * scale


# -- the same order in plain jax.numpy, rounded by emulate ------------------------------------------
def plain_rms_norm(x, gain):
    return gain[:, None] * (x / jnp.sqrt(jnp.sum(x * x, axis=0) / x.shape[0] + 1e-5))


def plain_rotary(x, cos, sin):
    half = x.shape[0] // 2
    return jnp.concatenate([x[:half] * cos - x[half:] * sin, x[half:] * cos + x[:half] * sin])


def plain_swiglu(x, gate, up, down):
    g = gate @ x
    return down @ ((g * jax.nn.sigmoid(g)) * (up @ x))


@pytest.mark.parametrize("fmt", ["bf16", "fp16", "t10"])
def test_rounded_parts_round_in_the_documented_order(fmt):
    arithmetic = Emulated(fmt)
    cos, sin = rotary_angles(jnp.arange(n), d, BASE)
    cases = [(scaled_rms_norm(arithmetic.cast(X), arithmetic.cast(GAIN), 1e-5, arithmetic),
              emulate(plain_rms_norm, arithmetic)(X, GAIN)),
             (rotary(arithmetic.cast(X), jnp.arange(n), BASE, arithmetic), emulate(plain_rotary, arithmetic)(X, cos, sin)),
             (gated_perceptron(*(arithmetic.cast(a) for a in (X, GATE, UP, DOWN)), arithmetic),
              emulate(plain_swiglu, arithmetic)(X, GATE, UP, DOWN))]
    for got, want in cases:
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    # and they are rounded: not the exact values
    assert not np.array_equal(np.asarray(cases[0][0], np.float64), np.asarray(scaled_rms_norm(X, GAIN, 1e-5)))


def test_grouped_heads_are_shared_heads_and_the_mask_is_causal():
    # H_kv = H with each group's weights repeated is the same attention as H_kv < H
    repeat = np.repeat(np.arange(H_KV), H // H_KV)
    wk_full = WK.reshape(H_KV, DH, d)[repeat].reshape(H * DH, d)
    wv_full = WV.reshape(H_KV, DH, d)[repeat].reshape(H * DH, d)
    grouped = grouped_query_attention(X, WQ, WK, WV, WO, H, H_KV, rope_base=BASE)
    full = grouped_query_attention(X, WQ, wk_full, wv_full, WO, H, H, rope_base=BASE)
    np.testing.assert_array_equal(np.asarray(grouped), np.asarray(full))
    later = X.copy()
    later[:, -1] += 1.0  # the last token changes no earlier output
    changed = grouped_query_attention(later, WQ, WK, WV, WO, H, H_KV, rope_base=BASE)
    np.testing.assert_array_equal(np.asarray(changed)[:, :-1], np.asarray(grouped)[:, :-1])
    with pytest.raises(ValueError, match="query heads over"):
        grouped_query_attention(X, WQ, WK, WV, WO, 3, H_KV)


def test_rotary_scores_depend_on_relative_positions_only():
    q, k = X[:4], X[4:]
    scores = lambda shift: rotary(k, jnp.arange(n) + shift, BASE).T @ rotary(q, jnp.arange(n) + shift, BASE)  # noqa: E731
    assert np.max(relative_difference(scores(0), scores(37))) <= relative_tolerance("fp64", 2**10)


def test_the_parts_work_under_jit_vmap_and_grad():
    batch = np.stack([X, 2 * X, -X])
    attend = jax.jit(jax.vmap(lambda x: grouped_query_attention(x, WQ, WK, WV, WO, H, H_KV, Exact(), rope_base=BASE)))
    out = attend(batch)
    np.testing.assert_allclose(np.asarray(out[1]), hf_attention(2 * X, WQ, WK, WV, WO, H, H_KV, BASE),
                               rtol=0, atol=relative_tolerance("fp64", 2**8) * np.max(np.abs(out[1])))
    grad = jax.grad(lambda w: jnp.sum(gated_perceptron(X, w, UP, DOWN) ** 2))(GATE)
    step = 2.0**-20  # central differences: error O(step^2) plus round-off O(u / step)
    plus, minus = GATE.copy(), GATE.copy()
    plus[0, 0] += step
    minus[0, 0] -= step
    finite = (np.sum(hf_swiglu(X, plus, UP, DOWN) ** 2) - np.sum(hf_swiglu(X, minus, UP, DOWN) ** 2)) / (2 * step)
    assert abs(float(grad[0, 0]) - finite) <= relative_tolerance("fp64", 2**30) * max(1.0, abs(finite))
    stochastic = grouped_query_attention(Emulated("bf16", mode="stochastic").cast(X), WQ, WK, WV, WO, H, H_KV,
                                         Emulated("bf16", mode="stochastic"), key=jax.random.key(0), rope_base=BASE)
    assert np.all(np.isfinite(np.asarray(stochastic)))


# -- the encoder's parts: BERT's formulas, Native() as the plain program ---------------------------
BIASES = [0.1 * RNG.standard_normal(rows) for rows in (H * DH, H * DH, H * DH, d)]
WK_FULL, WV_FULL = (RNG.standard_normal((H * DH, d)) / np.sqrt(d) for _ in range(2))
GAMMA, BETA = 1 + 0.1 * RNG.standard_normal(d), 0.1 * RNG.standard_normal(d)
VALID = np.array([True, True, True, False, True])


def bert_attention(x, valid):
    """Hugging Face's BertSelfAttention + BertSelfOutput's dense map (padding keys masked)."""
    bq, bk, bv, bo = BIASES
    q, k, v = WQ @ x + bq[:, None], WK_FULL @ x + bk[:, None], WV_FULL @ x + bv[:, None]
    heads = []
    for h in range(H):
        rows = slice(h * DH, (h + 1) * DH)
        s = np.where(valid[:, None], k[rows].T @ q[rows] / np.sqrt(DH), -np.inf)
        p = np.exp(s - s.max(axis=0))
        heads.append(v[rows] @ (p / p.sum(axis=0)))
    return WO @ np.concatenate(heads) + bo[:, None]


def encoder_attention(x, arithmetic):
    bq, bk, bv, bo = BIASES
    return grouped_query_attention(x, WQ, WK_FULL, WV_FULL, WO, H, H, arithmetic, mask=attention_mask(VALID, False),
                                   bq=bq, bk=bk, bv=bv, bo=bo)


def test_the_encoder_parts_are_berts_formulas():
    tolerance = relative_tolerance("fp64", 2**8)
    textbook_norm = GAMMA[:, None] * (X - X.mean(0)) / np.sqrt(X.var(0) + 1e-3) + BETA[:, None]
    erf_gelu = 0.5 * X * (1 + np.vectorize(__import__("math").erf)(X / np.sqrt(2)))
    tanh_gelu = 0.5 * X * (1 + np.tanh(np.sqrt(2 / np.pi) * (X + 0.044715 * X**3)))
    cases = [(affine_layer_norm(X, GAMMA, BETA, 1e-3), textbook_norm),
             (affine_layer_norm(X, GAMMA, BETA, jnp.asarray(1e-3)), textbook_norm),  # an epsilon as an array
             (activation(X, "gelu"), erf_gelu), (activation(X, "gelu_tanh"), tanh_gelu),
             (linear(WQ, BIASES[0], X), WQ @ X + BIASES[0][:, None]),
             (encoder_attention(X, Exact()), bert_attention(X, VALID))]
    for got, want in cases:
        assert np.max(np.abs(np.asarray(got) - want)) <= tolerance * np.max(np.abs(want))
    np.testing.assert_array_equal(attention_mask(VALID, True), np.tril(np.ones((n, n), bool)).T & VALID[:, None])
    with pytest.raises(ValueError, match="activation must be one of"):
        activation(X, "swish")


def test_native_is_the_plain_program_and_emulating_it_is_the_emulated_arithmetic(x64_off):
    # Native(): no x64 needed, the inputs' dtype kept, and the value of the same order in jax.numpy
    x32, gamma32, beta32 = (jnp.asarray(a, jnp.float32) for a in (X, GAMMA, BETA))
    native = affine_layer_norm(x32, gamma32, beta32, 1e-3, Native())
    c = x32 - jnp.sum(x32, axis=0) / d
    plain = gamma32[:, None] * (c / jnp.sqrt(jnp.sum(c * c, axis=0) / d + 1e-3)) + beta32[:, None]
    assert native.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(native), np.asarray(plain))
    assert activation(jnp.asarray(X, jnp.bfloat16), "gelu_tanh", Native()).dtype == jnp.bfloat16
    with pytest.raises(ValueError, match="no unit roundoff"):
        Native().unit_roundoff


@pytest.mark.parametrize("fmt", ["bf16", "fp8_e4m3"])
def test_emulating_the_native_parts_is_the_emulated_arithmetic_bit_for_bit(fmt):
    arithmetic = Emulated(fmt)
    parts = [lambda x, a: affine_layer_norm(x, a.cast(GAMMA), a.cast(BETA), 1e-3, a),
             lambda x, a: activation(x, "gelu", a), lambda x, a: activation(x, "gelu_tanh", a)]
    for part in parts:
        np.testing.assert_array_equal(np.asarray(emulate(lambda x: part(x, Native()), arithmetic)(X)),
                                      np.asarray(part(arithmetic.cast(X), arithmetic)))
    def attend(x, a, wq, wk, wv, wo, bq, bk, bv, bo):
        return grouped_query_attention(x, wq, wk, wv, wo, H, H, a, mask=attention_mask(VALID, False), bq=bq, bk=bk,
                                       bv=bv, bo=bo)

    operands = (WQ, WK_FULL, WV_FULL, WO, *BIASES)  # emulate rounds them on entry, as cast does
    np.testing.assert_array_equal(np.asarray(emulate(lambda x, *w: attend(x, Native(), *w), arithmetic)(X, *operands)),
                                  np.asarray(attend(arithmetic.cast(X), arithmetic, *map(arithmetic.cast, operands))))
