"""An independent NumPy implementation of the paper's module coefficients and the per-layer
factors of Lemma 4.29 / Theorem 4.30, written from the statements with explicit loops (it shares
no code with boundlab): the reference that ``analyze`` is checked against."""

import math

import numpy as np


def layer_norm(x):
    mu = x.mean()
    return (x - mu) / math.sqrt(((x - mu) ** 2).mean())


def rms_norm(x):
    return math.sqrt(len(x)) * x / math.sqrt((x * x).sum())


def softmax(s):
    e = np.exp(s)
    return e / e.sum()


def div(a, b):
    """a / b with x/0 = inf, 0/0 = 0."""
    if b != 0:
        return a / b
    return math.inf if a != 0 else 0.0


def block(X, p, norm):
    """Exact block: returns (Z, Y, per-token details)."""
    N = layer_norm if norm == "layer" else rms_norm
    d, n = X.shape
    Z = np.stack([N(X[:, t]) for t in range(n)], axis=1)
    A = np.zeros((d, n))
    for t in range(n):
        s = np.array([(p["Wk"] @ Z[:, i]) @ (p["Wq"] @ Z[:, t]) / math.sqrt(d) for i in range(t + 1)])
        A[:, t] = p["Wv"] @ (Z[:, : t + 1] @ softmax(s))
    Y = X + A
    out = np.zeros((d, n))
    for t in range(n):
        h = p["A1"] @ N(Y[:, t]) + p["b1"]
        out[:, t] = Y[:, t] + p["A2"] @ np.maximum(h, 0) + p["b2"]
    return Z, A, Y, out


def xi_attention(Z, p):
    d, n = Z.shape
    worst = 0.0
    for t in range(n):
        s = np.array([(p["Wk"] @ Z[:, i]) @ (p["Wq"] @ Z[:, t]) / math.sqrt(d) for i in range(t + 1)])
        psi = softmax(s)
        top = np.abs(p["Wv"]) @ (np.abs(Z[:, : t + 1]) @ psi)
        bottom = np.abs(p["Wv"] @ (Z[:, : t + 1] @ psi))
        worst = max(worst, max(div(a, b) for a, b in zip(top, bottom)))
    return worst


def xi_perceptron(x, p):
    h = p["A1"] @ x + p["b1"]
    omega = h > 0
    m = p["A2"] @ np.maximum(h, 0) + p["b2"]
    top = np.abs(p["A2"][:, omega]) @ (np.abs(p["A1"][omega]) @ np.abs(x) + np.abs(p["b1"][omega])) + np.abs(p["b2"])
    return max(div(a, b) for a, b in zip(top, np.abs(m))), int(omega.sum())


def centred_ratio(x, norm1=False):
    c = x - x.mean()
    return div(np.abs(x).sum() if norm1 else np.abs(x).max(), np.abs(c).min())


def module_coefficients(X, p, norm):
    """Lemma 4.6 or 4.11 (max over the block's two normalisations), 4.3, 4.10, 4.14, 4.17, 4.19,
    4.21, Corollaries 4.9, 4.12, 4.16, 4.20, 4.23, Remarks 4.13, 4.22 and Lemmas 4.25-4.28 at one
    layer's exact input X: the coefficient (in units of u) of each."""
    d, n = X.shape
    Z, A, Y, _ = block(X, p, norm)
    N = layer_norm if norm == "layer" else rms_norm
    out = {}
    tokens = [X[:, t] for t in range(n)] + [Y[:, t] for t in range(n)]
    if norm == "rms":
        out["Lemma 4.6"] = d / 2 + 3
    else:
        out["Lemma 4.11"] = max(d / 2 + 5 + 2 * centred_ratio(x, norm1=True) for x in tokens)
    out["Lemma 4.14"] = max(xi * (d + omega + 2) for xi, omega in (xi_perceptron(N(Y[:, t]), p) for t in range(n)))
    B = np.abs(p["Wk"]).T @ np.abs(p["Wq"])
    xi_s, s_inf = [], []
    for t in range(n):
        s = [(p["Wk"] @ Z[:, i]) @ (p["Wq"] @ Z[:, t]) / math.sqrt(d) for i in range(t + 1)]
        xi_s.append(max(div(np.abs(Z[:, i]) @ B @ np.abs(Z[:, t]) / math.sqrt(d), abs(s[i])) for i in range(t + 1)))
        s_inf.append(max(abs(v) for v in s))
    out["Lemma 4.17"] = (3 * d + 1) * max(xi_s)
    # Lemma 4.3 (part 3) on L_1 at N(y_t): max_i ((d + 1) |A_1||x| + |b_1|)_i / |A_1 x + b_1|_i
    lemma_4_3 = []
    for t in range(n):
        x = N(Y[:, t])
        y = p["A1"] @ x + p["b1"]
        top = (d + 1) * (np.abs(p["A1"]) @ np.abs(x)) + np.abs(p["b1"])
        lemma_4_3.append(max(div(a, abs(b)) for a, b in zip(top, y)))
    out["Lemma 4.3"] = max(lemma_4_3)
    ys = [Y[:, t] for t in range(n)]
    if norm == "rms":
        out["Corollary 4.9"] = d / 2 + 3
    else:
        out["Lemma 4.10"] = max(1 + centred_ratio(x, norm1=True) for x in tokens)
        out["Corollary 4.12"] = max(d / 2 + 5 + 2 * centred_ratio(y, norm1=True) for y in ys)
        out["Remark 4.13"] = max(3 * (1 + centred_ratio(y)) * d for y in ys)
    out["Corollary 4.16"] = out["Lemma 4.14"]
    out["Corollary 4.20"] = n + 3
    # Remark 4.22 and Corollary 4.23: xi(A) (2n + 3d)(1 + (c / sqrt(d)) sigma(|Wk|^T|Wq|) kappa max_t ||z_t||^2)
    singular = np.linalg.svd(p["Wk"].T @ p["Wq"], compute_uv=False)
    sigma_abs = np.linalg.svd(np.abs(p["Wk"]).T @ np.abs(p["Wq"]), compute_uv=False)[0]
    max_sq = max(float(Z[:, t] @ Z[:, t]) for t in range(n))
    for name, c in (("Remark 4.22", 2.0), ("Corollary 4.23", 4.0)):
        out[name] = xi_attention(Z, p) * (2 * n + 3 * d) * (1 + c / math.sqrt(d) * sigma_abs * singular[0]
                                                             / singular[-1] * max_sq)
    # Lemmas 4.25-4.28: the sub-block factors times (2n + 6d | 2n + 7d) and (5d | 6d + |Omega|)
    G = 1 + 4 * math.sqrt(d) * sigma_abs * singular[0] / singular[-1]
    xi_residual = max(div(abs(X[i, t]) + abs(A[i, t]), abs(Y[i, t])) for i in range(d) for t in range(n))
    attention_k = xi_residual * xi_attention(Z, p) * G
    _, _, _, block_out = block(X, p, norm)
    feed_forward = []
    for t in range(n):
        xi_m, omega = xi_perceptron(N(Y[:, t]), p)
        m = block_out[:, t] - Y[:, t]
        xi_fm = max(div(abs(Y[i, t]) + abs(m[i]), abs(block_out[i, t])) for i in range(d))
        feed_forward.append((xi_fm * xi_m, omega, Y[:, t]))
    if norm == "rms":
        out["Lemma 4.25"] = attention_k * (2 * n + 6 * d)
        out["Lemma 4.27"] = max(k * (5 * d + omega) for k, omega, _ in feed_forward)
    else:
        rx = 1 + max(centred_ratio(X[:, t]) for t in range(n))
        out["Lemma 4.26"] = attention_k * rx * (2 * n + 7 * d)
        out["Lemma 4.28"] = max(k * (1 + centred_ratio(y)) * (6 * d + omega) for k, omega, y in feed_forward)
    out["Lemma 4.19"] = n + 3
    out["Lemma 4.21"] = xi_attention(Z, p) * max(2 * (t + 1) + d + 3 + 2 * s_inf[t] * xi_s[t] * (3 * d + 1)
                                                  for t in range(n))
    return out


def layer_factors(X, p, norm):
    """The factors of Lemma 4.29 at one layer: xi of the residual sub-blocks, xi(A, N(X)), G, the
    layer-norm ratios, K and chi (RMS) or eta (layer norm)."""
    d, n = X.shape
    N = layer_norm if norm == "layer" else rms_norm
    Z, A, Y, out = block(X, p, norm)
    xi_fA = max(div(abs(X[i, t]) + abs(A[i, t]), abs(Y[i, t])) for i in range(d) for t in range(n))
    xi_A = xi_attention(Z, p)
    mlp = []
    for t in range(n):
        xi_m, _ = xi_perceptron(N(Y[:, t]), p)
        m = out[:, t] - Y[:, t]
        xi_fM = max(div(abs(Y[i, t]) + abs(m[i]), abs(out[i, t])) for i in range(d))
        mlp.append(xi_fM * xi_m)
    singular = np.linalg.svd(p["Wk"].T @ p["Wq"], compute_uv=False)
    G = 1 + 4 * math.sqrt(d) * np.linalg.norm(np.abs(p["Wk"]).T @ np.abs(p["Wq"]), 2) * singular[0] / singular[-1]
    xi_product = max(mlp) * xi_fA * xi_A
    factors = {"xi(A, N(X))": xi_A, "G_l": G, "xi(f_A, X)": xi_fA, "max_t xi(f_M, y_t) xi(M, N(y_t))": max(mlp)}
    K = xi_product * G
    if norm == "layer":
        rx = 1 + max(centred_ratio(X[:, t]) for t in range(n))
        ry = 1 + max(centred_ratio(Y[:, t]) for t in range(n))
        factors["1 + max_t ||x_t||_inf/||c(x_t)||_-inf"] = rx
        factors["1 + max_t ||y_t||_inf/||c(y_t)||_-inf"] = ry
        K *= rx * ry
    factors["K_l"] = K
    factors["eta_l" if norm == "layer" else "chi_l"] = xi_product
    return factors, out


def theorem_4_30(params, X, norm):
    """(coefficient, per-layer factors) of Theorem 4.30 with the layer-norm factors inside the
    product (the proof's reading)."""
    L = params["Wq"].shape[0]
    d, n = X.shape
    D = params["A1"].shape[1]
    per_layer, product = [], 1.0
    for layer in range(L):
        p = {k: params[k][layer] for k in params}
        factors, X = layer_factors(X, p, norm)
        per_layer.append(factors)
        product *= factors["K_l"]
    c, C = (9, 6 * n + 23 * d + D) if norm == "rms" else (16, 8 * n + 34 * d + D)
    return product * c**L / (c - 1) * C, per_layer
