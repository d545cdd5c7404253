"""Random straight-line programs over the primitives ``emulate`` accepts, each as a JAX function
and as a scalar MPFR evaluation of Model 4.1 (one correctly rounded operation at a time, gmpy2,
on Python lists; only the format's numbers are shared with boundlab).

A program acts on registers: vectors of N numbers.  Register 0 holds the input x, register 1 the
input y; each instruction appends a register.  The output is the last register."""

from __future__ import annotations

import gmpy2
import jax
import jax.numpy as jnp
from jax import lax
from oracles import MPFR_FUNCTIONS, _overflow_value, mpfr_context

N = 3
UNARY = ("neg", "abs", "sqrt", "exp", "log", "tanh", "erf", "logistic", "rsqrt", "log1p", "expm1", "sin", "cos",
         "atan", "sinh", "asinh", "cbrt", "square", "cube", "reciprocal_square", "erfc", "tan", "exp2", "lgamma")
# (digamma is not drawn: at its poles XLA gives NaN where MPFR gives +-inf at 0, a convention, not a
# rounding; tests/test_elementary_functions.py checks it on every fp16, bf16 and fp8 number)
BINARY = ("add", "sub", "mul", "div", "max", "min")
OTHER = ("literal_mul", "literal_add", "sum", "cumsum", "matvec", "batched_dot", "where", "scan", "cond", "while")
LITERALS = (0.1, -3.0, 0.5, 30.0, 1e-3)
DIFFERENTIABLE = set(UNARY) | {"add", "sub", "mul", "div", "literal_mul", "literal_add", "sum", "cumsum", "matvec",
                                "batched_dot", "scan"}

_JAX_UNARY = {
    "neg": lambda v: -v, "abs": jnp.abs, "sqrt": jnp.sqrt, "exp": jnp.exp, "log": jnp.log, "tanh": jnp.tanh,
    "erf": lax.erf, "logistic": jax.nn.sigmoid, "rsqrt": lax.rsqrt, "log1p": jnp.log1p, "expm1": jnp.expm1,
    "sin": jnp.sin, "cos": jnp.cos, "atan": jnp.arctan, "sinh": jnp.sinh, "asinh": jnp.arcsinh, "cbrt": jnp.cbrt,
    "square": lambda v: v ** 2, "cube": lambda v: v ** 3, "reciprocal_square": lambda v: v ** -2,
    "erfc": lax.erfc, "tan": jnp.tan, "exp2": jnp.exp2, "lgamma": lax.lgamma,
}
_JAX_BINARY = {"add": jnp.add, "sub": jnp.subtract, "mul": jnp.multiply, "div": jnp.divide,
               "max": jnp.maximum, "min": jnp.minimum}


def as_jax(program):
    """The program as a function of (x, y, M) (M: an N x N matrix for ``matvec``)."""

    def run(x, y, M):
        registers = [x, y]
        for op, *a in program:
            if op in _JAX_UNARY:
                out = _JAX_UNARY[op](registers[a[0]])
            elif op in _JAX_BINARY:
                out = _JAX_BINARY[op](registers[a[0]], registers[a[1]])
            elif op == "literal_mul":
                out = registers[a[0]] * LITERALS[a[1]]
            elif op == "literal_add":
                out = registers[a[0]] + LITERALS[a[1]]
            elif op == "sum":
                out = jnp.broadcast_to(jnp.sum(registers[a[0]]), (N,))
            elif op == "cumsum":
                out = jnp.cumsum(registers[a[0]])
            elif op == "matvec":
                out = M @ registers[a[0]]
            elif op == "batched_dot":  # out_b = sum_i M[b, i] r[(b + i) mod N]: a batch dimension
                r = registers[a[0]]
                rolled = jnp.stack([jnp.roll(r, -b) for b in range(N)])
                out = lax.dot_general(M, rolled, (((1,), (1,)), ((0,), (0,))))
            elif op == "where":
                out = jnp.where(registers[a[0]] > registers[a[1]], registers[a[2]], registers[a[3]])
            elif op == "scan":  # h_t = h_{t-1} * w_t + v_t, h_0 = 0
                w, v = registers[a[0]], registers[a[1]]
                _, out = lax.scan(lambda h, wv: (h * wv[0] + wv[1],) * 2, jnp.zeros((), x.dtype), (w, v))
            elif op == "cond":
                p, q = registers[a[0]], registers[a[1]]
                out = lax.cond(jnp.sum(p) > 0, lambda p, q: p * q, lambda p, q: p - q, p, q)
            elif op == "while":  # h <- h q + p, twice, under a counter
                p, q = registers[a[0]], registers[a[1]]
                _, out = lax.while_loop(lambda c: c[0] < 2, lambda c: (c[0] + 1, c[1] * q + p), (0, p))
            else:
                raise ValueError(op)
            registers.append(out)
        return registers[-1]

    return run


class Model41:
    """Scalar Model 4.1 in one format and mode: every operation correctly rounded once."""

    def __init__(self, fmt, mode):
        self.ctx = mpfr_context(fmt, mode)
        self.nearest = mpfr_context(fmt, "nearest")  # inputs and literals: rounded to nearest
        self.fmt, self.mode = fmt, mode

    def operand(self, value):
        return self.in_format(self.nearest.plus(gmpy2.mpfr(float(value))), "nearest")

    def in_format(self, v, mode=None):
        """MPFR's result as the format holds it: past the largest finite number (the FN formats'
        top codes are NaN) by IEEE 754's overflow rule for the mode; an infinity with no code, NaN."""
        fmt = self.fmt
        if gmpy2.is_nan(v) or (gmpy2.is_infinite(v) and fmt.infinities):
            return v
        if gmpy2.is_infinite(v):
            return gmpy2.nan()
        if abs(v) > fmt.max_finite:
            return gmpy2.mpfr(_overflow_value(v < 0, fmt, mode or self.mode))
        return v

    def function(self, name, *args):
        return self.in_format(MPFR_FUNCTIONS[name](self.ctx, *args))

    def add(self, a, b):
        return self.in_format(self.ctx.add(a, b))

    def sub(self, a, b):
        return self.in_format(self.ctx.sub(a, b))

    def mul(self, a, b):
        return self.in_format(self.ctx.mul(a, b))

    def div(self, a, b):
        return self.in_format(self.ctx.div(a, b))

    def sqrt(self, a):
        return self.in_format(self.ctx.sqrt(a))

    def exp(self, a):
        return self.in_format(self.ctx.exp(a))

    def total(self, terms):
        result = terms[0]
        for term in terms[1:]:
            result = self.add(result, term)
        return result


def _maximum(a, b, larger):
    """IEEE 754 maximum/minimum as XLA computes them: NaN if either is NaN; +0 above -0."""
    if gmpy2.is_nan(a) or gmpy2.is_nan(b):
        return gmpy2.nan()
    if a == b == 0:
        negative = (gmpy2.is_signed(a) and gmpy2.is_signed(b)) if larger else (gmpy2.is_signed(a) or gmpy2.is_signed(b))
        return -gmpy2.mpfr(0) if negative else gmpy2.mpfr(0)
    return (a if a > b else b) if larger else (a if a < b else b)


def evaluate(program, model: Model41, x, y, M):
    """The program under Model 4.1 on Python lists of gmpy2 numbers (inputs rounded first)."""
    x, y = [model.operand(v) for v in x], [model.operand(v) for v in y]
    M = [[model.operand(v) for v in row] for row in M]
    c = model  # every operation rounded by MPFR, then held as the format holds it
    unary = {"neg": lambda v: -v, "abs": abs, "sqrt": c.sqrt, "exp": c.exp, "square": lambda v: c.mul(v, v),
             "cube": lambda v: c.mul(c.mul(v, v), v), "reciprocal_square": lambda v: c.div(1, c.mul(v, v))}
    binary = {"add": c.add, "sub": c.sub, "mul": c.mul, "div": c.div,
              "max": lambda a, b: _maximum(a, b, True), "min": lambda a, b: _maximum(a, b, False)}
    registers = [x, y]
    for op, *a in program:
        if op in unary:
            out = [unary[op](v) for v in registers[a[0]]]
        elif op in UNARY:
            out = [model.function(op, v) for v in registers[a[0]]]
        elif op in binary:
            out = [binary[op](p, q) for p, q in zip(registers[a[0]], registers[a[1]])]
        elif op == "literal_mul":
            out = [c.mul(v, model.operand(LITERALS[a[1]])) for v in registers[a[0]]]
        elif op == "literal_add":
            out = [c.add(v, model.operand(LITERALS[a[1]])) for v in registers[a[0]]]
        elif op == "sum":
            out = [model.total(registers[a[0]])] * N
        elif op == "cumsum":
            out, running = [], None
            for v in registers[a[0]]:
                running = v if running is None else c.add(running, v)
                out.append(running)
        elif op == "matvec":
            out = [model.total([c.mul(m, v) for m, v in zip(row, registers[a[0]])]) for row in M]
        elif op == "batched_dot":
            r = registers[a[0]]
            out = [model.total([c.mul(M[b][i], r[(b + i) % N]) for i in range(N)]) for b in range(N)]
        elif op == "where":
            out = [r if p > q else s for p, q, r, s in zip(*(registers[i] for i in a[:4]))]
        elif op == "scan":
            out, h = [], gmpy2.mpfr(0)
            for w, v in zip(registers[a[0]], registers[a[1]]):
                h = c.add(c.mul(h, w), v)
                out.append(h)
        elif op == "cond":
            p, q = registers[a[0]], registers[a[1]]
            positive = model.total(p) > 0
            out = [c.mul(s, t) if positive else c.sub(s, t) for s, t in zip(p, q)]
        elif op == "while":
            p, q = registers[a[0]], registers[a[1]]
            out = list(p)
            for _ in range(2):
                out = [c.add(c.mul(h, w), v) for h, w, v in zip(out, q, p)]
        else:
            raise ValueError(op)
        registers.append([model.in_format(v) for v in out])
    return [float(v) for v in registers[-1]]
