"""An independent scalar interpreter of the paper's transformer under Model 4.1.

One MPFR operation at a time (gmpy2, correctly rounded +, -, *, /, sqrt, exp), on Python
lists, in the order of operations the proofs of Section 4 analyse.  It shares no code with
boundlab; only the formats' numbers (precision and exponent range) are given to it.
"""

from __future__ import annotations

import math

import gmpy2
from oracles import MPFR_MODES, mpfr_context


class Scalar:
    """Model 4.1 arithmetic in one format, with an accumulation order for sums."""

    def __init__(self, fmt, mode="nearest", accumulation="recursive", block_size=32, accumulator=None):
        self.ctx = mpfr_context(fmt, mode)
        self.nearest = mpfr_context(fmt, "nearest")  # operands and constants: rounded to nearest
        self.acc_ctx = mpfr_context(accumulator, mode) if accumulator is not None else self.ctx
        self.wider = accumulator is not None and accumulator != fmt
        self.accumulation, self.block_size = accumulation, block_size
        self.exact = gmpy2.context(precision=4096, emin=-(2**20), emax=2**20, round=MPFR_MODES["nearest"])

    def operand(self, value: float):
        return self.nearest.plus(gmpy2.mpfr(value, 53))

    def root(self, d: int):
        """The constant sqrt(d), correctly rounded to nearest."""
        return self.nearest.sqrt(gmpy2.mpfr(d))

    def add(self, a, b):
        return self.ctx.add(a, b)

    def sub(self, a, b):
        return self.ctx.sub(a, b)

    def mul(self, a, b):
        return self.ctx.mul(a, b)

    def div(self, a, b):
        return self.ctx.div(a, b)

    def sqrt(self, a):
        return self.ctx.sqrt(a)

    def exp(self, a):
        return self.ctx.exp(a)

    def total(self, terms, exact_terms=None):
        """Sum of format numbers ``terms``; ``exact_terms`` are the unrounded values a fused
        block adds instead (exact products)."""
        if self.accumulation == "recursive":
            result = terms[0]
            for term in terms[1:]:
                result = self.acc_ctx.add(result, term)
        elif self.accumulation == "pairwise":
            level = list(terms)
            while len(level) > 1:
                pairs = [self.acc_ctx.add(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
                level = pairs + ([level[-1]] if len(level) % 2 else [])
            result = level[0]
        else:
            raw = exact_terms if exact_terms is not None else terms
            result = None
            for start in range(0, len(raw), self.block_size):
                # the fused block: exact terms added in IEEE double (Python floats), in order
                block = float(raw[start])
                for term in raw[start + 1:start + self.block_size]:
                    block = block + float(term)
                block = self.acc_ctx.plus(block)
                result = block if result is None else self.acc_ctx.add(result, block)
        return self.ctx.plus(result) if self.wider else result

    def dot(self, xs, ys):
        products = [self.mul(x, y) for x, y in zip(xs, ys, strict=True)]
        exact = [self.exact.mul(x, y) for x, y in zip(xs, ys, strict=True)]  # exact in double too
        return self.total(products, exact)


def columns(matrix):
    return [list(col) for col in zip(*matrix, strict=True)]


def rms_norm(a: Scalar, x):
    d = len(x)
    norm = a.sqrt(a.total([a.mul(v, v) for v in x]))
    return [a.div(a.mul(a.root(d), v), norm) for v in x]


def layer_norm(a: Scalar, x):
    mean = a.div(a.total(list(x)), a.operand(float(len(x))))
    return rms_norm(a, [a.sub(v, mean) for v in x])


def attention(a: Scalar, X, Wq, Wk, Wv):
    """X, weights: lists of rows; returns the output as a list of columns."""
    d, n = len(X), len(X[0])
    cols = columns(X)
    root_d = a.root(d)
    keys = [[a.dot(row, cols[i]) for row in Wk] for i in range(n)]
    out = []
    for t in range(n):
        query = [a.dot(row, cols[t]) for row in Wq]
        s = [a.div(a.dot(keys[i], query), root_d) for i in range(t + 1)]
        e = [a.exp(v) for v in s]
        total = a.total(e)
        psi = [a.div(v, total) for v in e]
        mixed = [a.dot(X[r][: t + 1], psi) for r in range(d)]
        out.append([a.dot(row, mixed) for row in Wv])
    return out


def perceptron(a: Scalar, x, A1, b1, A2, b2):
    hidden = [a.add(a.dot(row, x), b) for row, b in zip(A1, b1, strict=True)]
    active = [h if h > 0 else gmpy2.mpfr(0) for h in hidden]
    return [a.add(a.dot(row, active), b) for row, b in zip(A2, b2, strict=True)]


def forward(a: Scalar, params: dict, X, norm: str):
    """params: name -> nested lists (L, ...) of floats; X: list of rows.  Returns rows."""
    normalise = layer_norm if norm == "layer" else rms_norm
    rnd = lambda m: [[a.operand(v) for v in row] for row in m]  # noqa: E731
    X = rnd(X)
    L = len(params["Wq"])
    for layer in range(L):
        Wq, Wk, Wv = (rnd(params[k][layer]) for k in ("Wq", "Wk", "Wv"))
        A1, A2 = rnd(params["A1"][layer]), rnd(params["A2"][layer])
        b1 = [a.operand(v) for v in params["b1"][layer]]
        b2 = [a.operand(v) for v in params["b2"][layer]]
        normed_cols = [normalise(a, col) for col in columns(X)]
        attended = attention(a, columns(normed_cols), Wq, Wk, Wv)
        Y_cols = [[a.add(x, v) for x, v in zip(xc, ac, strict=True)] for xc, ac in zip(columns(X), attended, strict=True)]
        Z_cols = []
        for y in Y_cols:
            m = perceptron(a, normalise(a, y), A1, b1, A2, b2)
            Z_cols.append([a.add(v, w) for v, w in zip(y, m, strict=True)])
        X = columns(Z_cols)
    return [[float(v) for v in row] for row in X]


def float64_forward(params: dict, X, norm: str):
    """eqs. (1)-(10) in plain float64 NumPy-free Python, written from the paper's formulas
    (mean and biased variance, 1/sqrt(d) scaling, causal softmax): the held-out reference for
    the exact path."""
    def ln(x):
        d = len(x)
        mu = math.fsum(x) / d
        var = math.fsum((v - mu) ** 2 for v in x) / d
        return [(v - mu) / math.sqrt(var) for v in x]

    def rms(x):
        d = len(x)
        return [math.sqrt(d) * v / math.sqrt(math.fsum(w * w for w in x)) for v in x]

    def matvec(M, x):
        return [math.fsum(m * v for m, v in zip(row, x, strict=True)) for row in M]

    normalise = ln if norm == "layer" else rms
    cols = columns(X)
    for layer in range(len(params["Wq"])):
        Wq, Wk, Wv = params["Wq"][layer], params["Wk"][layer], params["Wv"][layer]
        d, n = len(cols[0]), len(cols)
        normed = [normalise(c) for c in cols]
        keys = [matvec(Wk, c) for c in normed]
        attended = []
        for t in range(n):
            q = matvec(Wq, normed[t])
            s = [math.fsum(a * b for a, b in zip(keys[i], q, strict=True)) / math.sqrt(d) for i in range(t + 1)]
            e = [math.exp(v) for v in s]
            psi = [v / math.fsum(e) for v in e]
            mixed = [math.fsum(normed[i][r] * psi[i] for i in range(t + 1)) for r in range(d)]
            attended.append(matvec(Wv, mixed))
        Y = [[x + v for x, v in zip(c, a, strict=True)] for c, a in zip(cols, attended, strict=True)]
        out = []
        for y in Y:
            z = normalise(y)
            h = [max(0.0, v + b) for v, b in zip(matvec(params["A1"][layer], z), params["b1"][layer], strict=True)]
            m = [v + b for v, b in zip(matvec(params["A2"][layer], h), params["b2"][layer], strict=True)]
            out.append([v + w for v, w in zip(y, m, strict=True)])
        cols = out
    return columns(cols)
