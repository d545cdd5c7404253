"""Hugging Face's Llama in NumPy float64 (tokens as columns), written from its formulas
(``modeling_llama.py``: RMSNorm, rotate-half RoPE, repeat_kv, SwiGLU, tied embeddings): the
independent reference of the block library's decoder parts and of the decoder family."""

import numpy as np


def hf_rms_norm(x, gain, eps):
    return gain[:, None] * (x / np.sqrt(np.mean(x**2, axis=0) + eps))


def hf_rotary(x, positions, base):
    inv = 1.0 / base ** (np.arange(0, x.shape[0], 2) / x.shape[0])
    angles = np.concatenate([inv, inv])[:, None] * positions[None, :]
    half = x.shape[0] // 2
    rotated = np.concatenate([-x[half:], x[:half]])
    return x * np.cos(angles) + rotated * np.sin(angles)


def hf_attention(x, wq, wk, wv, wo, heads, kv_heads, base):
    dh, positions = wq.shape[0] // heads, np.arange(x.shape[1])
    out = []
    for h in range(heads):
        g = h // (heads // kv_heads)
        q = hf_rotary(wq[h * dh:(h + 1) * dh] @ x, positions, base)
        k = hf_rotary(wk[g * dh:(g + 1) * dh] @ x, positions, base)
        s = k.T @ q / np.sqrt(dh)
        s = np.where(np.arange(x.shape[1])[:, None] <= np.arange(x.shape[1])[None, :], s, -np.inf)
        p = np.exp(s - s.max(axis=0))
        out.append((wv[g * dh:(g + 1) * dh] @ x) @ (p / p.sum(axis=0)))
    return wo @ np.concatenate(out)


def hf_swiglu(x, gate, up, down):
    g = gate @ x
    return down @ (g / (1 + np.exp(-g)) * (up @ x))


def hf_decoder(params, ids, heads, kv_heads, base, eps):
    """Logits (V, n) of the whole decoder (``boundlab.models.decoder`` layout, NumPy arrays)."""
    layers = params["layers"]
    x = params["embed"][ids].T
    for index in range(layers["Wq"].shape[0]):
        w = {name: value[index] for name, value in layers.items()}
        h = x + hf_attention(hf_rms_norm(x, w["attn_norm"], eps), w["Wq"], w["Wk"], w["Wv"], w["Wo"], heads, kv_heads, base)
        x = h + hf_swiglu(hf_rms_norm(h, w["ffn_norm"], eps), w["W_gate"], w["W_up"], w["W_down"])
    return params["embed"] @ hf_rms_norm(x, params["final_norm"], eps)
