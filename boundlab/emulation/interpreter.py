"""A jaxpr interpreter that evaluates every floating-point primitive through an arithmetic policy.

The pattern of JAX's "Writing custom Jaxpr interpreters": trace ``f`` to a jaxpr, then walk its
equations with a handler for each primitive.  Model 4.1 decides the handlers:

* rounded once (``policy.add/sub/mul/div/sqrt/exp``): ``add``, ``add_any``, ``sub``, ``mul``,
  ``div``, ``sqrt``, ``exp``, ``square`` (x * x); ``integer_pow`` as XLA evaluates it, binary
  powering by rounded multiplications (x**3 = fl(x fl(x x)));
* other elementwise functions (``log``, ``tanh``, ``logistic``, ``erf``, ``rsqrt``, ``pow``,
  trigonometric, ...): correctly rounded once in every mode by ``policy.apply_primitive``
  (``boundlab.elementary.functions``: the wide value, placed on the exact value's side of a
  rounding boundary near it; where no rule tells the side, the wide value rounded);
* ``dot_general`` through the policy's contraction (its accumulation order: every product and
  partial sum rounded); ``reduce_sum`` through ``policy.sum`` (the reduced axes flattened in
  row-major order); ``cumsum``/``cumprod`` one rounded operation per step, in index order;
  ``scatter-add`` (the backward pass of a gather: embedding lookups, ``take_along_axis``) one
  rounded addition per update element, the updates' windows in their index order (XLA leaves
  the order of colliding updates unspecified; this is a CPU loop's);
* exact operations (``max``, ``neg``, ``abs``, comparisons, ``select_n``, reshapes, slices,
  ``reduce_max``, ...) unchanged;
* calls (``jit``, ``custom_jvp_call``, ``custom_vjp_call``, ``remat``, ``closed_call``) and
  control flow (``scan``, ``while``, ``cond``) by recursion into their jaxprs (a custom rule
  is a statement about derivatives; its primal computation is what is rounded).

Floating-point values are held in the policy's container dtype; float constants and literals
of the jaxpr are operands and are rounded once into the format (``policy.cast``), like the
inputs.  Anything else raises ``UnsupportedPrimitive`` naming the primitive.

Under ``Exact()`` with XLA's order, a float64 program is evaluated as traced, every primitive
bound unchanged (``native``): the emulated program is then ``f``'s own.

Why one file (over 500 lines): the evaluator and the rules for calls, scans, loops and
conditionals recurse into each other (a scan body is evaluated by ``eval_jaxpr``, which reaches
the scan rule again for a nested scan); split, the modules would import each other.

The interpreter is generic over a ``Handler``: ``boundlab.emulate`` uses the arithmetic itself
at every site; ``boundlab.first_order`` uses a policy that evaluates exactly and marks each
rounding site (``boundlab.sensitivity``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core

from boundlab.accumulation import KeyStream
from boundlab.arithmetic import Exact
from boundlab.runtime.x64 import x64_enabled
from boundlab.rounding import hash_fold_in


class UnsupportedPrimitive(NotImplementedError):
    """``emulate``/``first_order`` met a primitive whose rounding it does not model."""


ROUNDED_BINARY = {"add": "add", "add_any": "add", "sub": "sub", "mul": "mul", "div": "div"}
ROUNDED_UNARY = {"sqrt", "exp", "square", "integer_pow"}
WIDE = {"log", "log1p", "expm1", "exp2", "tanh", "logistic", "erf", "erfc", "erf_inv", "rsqrt", "cbrt", "pow",
        "sin", "cos", "tan", "asin", "acos", "atan", "atan2", "sinh", "cosh", "asinh", "acosh",
        "atanh", "lgamma", "digamma"}
EXACT = {"max", "min", "neg", "abs", "sign", "floor", "ceil", "round", "is_finite", "select_n", "clamp", "eq",
         "ne", "lt", "le", "gt", "ge", "and", "or", "not", "xor", "broadcast_in_dim", "reshape", "squeeze",
         "expand_dims", "transpose", "slice", "dynamic_slice", "dynamic_update_slice", "concatenate", "pad",
         "rev", "gather", "reduce_max", "reduce_min", "argmax", "argmin", "reduce_and", "reduce_or", "sort",
         "stop_gradient", "copy", "copy_p", "sharding_constraint", "iota", "split", "reduce_precision",
         "cummax", "cummin", "nextafter", "random_bits", "random_seed", "random_wrap", "random_unwrap",
         "random_fold_in", "random_split", "threefry2x32", "shift_left", "shift_right_logical",
         "shift_right_arithmetic", "population_count", "optimization_barrier", "real", "imag", "conj",
         "bitcast_convert_type", "stack", "unstack", "top_k", "scatter", "device_put", "pvary", "mesh_cast",
         "reshard", "broadcast"}
CALLS = {"jit": "jaxpr", "pjit": "jaxpr", "closed_call": "call_jaxpr", "core_call": "call_jaxpr",
         "remat2": "jaxpr", "checkpoint": "jaxpr", "custom_jvp_call": "call_jaxpr",
         "custom_vjp_call": "call_jaxpr", "custom_vjp_call_jaxpr": "fun_jaxpr", "custom_vmap_call": "call"}
REDUCTIONS = {"dot_general", "reduce_sum", "cumsum", "cumprod"}
INTEGER_OK = {"add", "add_any", "sub", "mul", "div", "rem", "dot_general", "reduce_sum", "cumsum", "cumprod",
              "integer_pow", "square", "reduce_prod"}  # exact on integers


@dataclasses.dataclass(frozen=True)
class Site:
    """One rounding site of the traced function (one equation; inside a loop, every iteration).

    ``index``: position in trace order; ``primitive``: its name; ``scope``: the enclosing
    ``jax.named_scope`` names and control flow (``scan/``, ``cond[1]/``); ``source``: file:line of
    the user code that created it; ``shape``: the shape of one evaluation's result;
    ``operations``: the rounded operations of one evaluation (a dot product of length k counts k
    products and k - 1 additions as 2k; a sum of k terms k; elementwise, one per entry).
    """

    index: int
    primitive: str
    scope: str
    source: str
    shape: tuple
    operations: int = 0

    def label(self) -> str:
        where = f"{self.scope}/" if self.scope else ""
        return f"#{self.index} {where}{self.primitive} {list(self.shape)} at {self.source}"


class Handler:
    """What the interpreter asks at each rounding site; subclasses decide the policy."""

    recorder = None  # called as recorder(eqn, outputs) for every equation outside loops, when set
    # with records_loops, also for the equations of scan bodies, once after the scan with each
    # output stacked over the iterations (nested scans: stacked once per level, outermost first)
    records_loops = False
    # stop_gradient is a statement about training gradients; a handler whose derivatives are
    # the function's own sensitivities (first_order) evaluates it as the identity it is
    keeps_stop_gradient = True

    def __init__(self, arithmetic):
        self.arithmetic = arithmetic
        self.sites: list[Site] = []

    def policy(self, site: Site, key):
        """The policy that evaluates the operations of ``site`` (the arithmetic by default)."""
        return self.arithmetic

    @property
    def dtype(self):
        return self.arithmetic.dtype

    def cast(self, x):
        return self.arithmetic.cast(x)

    def operands(self, policy, values):
        """The operands of a rounding site as ``policy`` sees them (unchanged by default;
        ``MixedHandler`` rounds them into the site's format)."""
        return values


@dataclasses.dataclass
class Context:
    handler: Handler
    key: Any  # PRNG key (stochastic rounding) or None
    scope: str = ""
    loop: bool = False  # inside a scan, while or cond body (values are per iteration)
    sink: list | None = None  # (eqn, outputs) recorded in the innermost scan body (records_loops)

    def nested(self, scope: str, key=None, loop: bool = False, sink=None) -> "Context":
        return Context(self.handler, self.key if key is None else key, _join(self.scope, scope), self.loop or loop,
                        self.sink if sink is None else sink)


def _join(a: str, b: str) -> str:
    return f"{a}/{b}" if a and b else a or b


def _is_float(dtype) -> bool:
    return jnp.issubdtype(dtype, jnp.floating)


def _source(eqn) -> str:
    try:
        from jax._src import source_info_util

        return source_info_util.summarize(eqn.source_info)
    except Exception:  # a private API: labels are a convenience, never a failure
        return "?"


def name_stack(eqn) -> str:
    try:
        return str(eqn.source_info.name_stack)
    except Exception:
        return ""


def float64_throughout(jaxpr) -> bool:
    """Every floating-point value of the program (inputs, constants, results, inside every nested
    program: jit, scan, cond, custom rules) is float64."""
    jaxpr = jaxpr.jaxpr if isinstance(jaxpr, core.ClosedJaxpr) else jaxpr
    variables = list(jaxpr.invars) + list(jaxpr.constvars) + [v for e in jaxpr.eqns for v in e.outvars]
    if any(_is_float(v.aval.dtype) and v.aval.dtype != jnp.float64 for v in variables if hasattr(v.aval, "dtype")):
        return False
    for eqn in jaxpr.eqns:
        for value in eqn.params.values():
            for inner in value if isinstance(value, (tuple, list)) else (value,):
                if isinstance(inner, (core.ClosedJaxpr, core.Jaxpr)) and not float64_throughout(inner):
                    return False
    return True


def native(handler: Handler, closed) -> bool:
    """``Exact()`` with XLA's order, through the plain handler, on a float64 program: nothing to
    round or record, so the program is evaluated as traced, every primitive bound unchanged (the
    emulated program is then ``f``'s own, bit for bit on any model)."""
    return (type(handler) is Handler and handler.recorder is None and _native_exact(handler.arithmetic)
            and float64_throughout(closed))


def eval_closed(closed, args, ctx: Context):
    """Evaluate a ClosedJaxpr (or a Jaxpr with no constants) on ``args``."""
    if isinstance(closed, core.ClosedJaxpr):
        return eval_jaxpr(closed.jaxpr, closed.consts, args, ctx)
    return eval_jaxpr(closed, [], args, ctx)


def operand(x, ctx: Context):
    """A constant or an input made an operand of the emulated arithmetic: floats rounded once
    into the format and held in the container; everything else unchanged.  Infinities stay
    infinities (a -inf sentinel of a masked maximum is no number to round, and a format without
    infinities, fp8_e4m3, would turn it into NaN)."""
    if _is_float(jnp.result_type(x)):
        return cast_keeping_infinities(ctx.handler.cast, x)
    return x


def cast_keeping_infinities(cast, x):
    """``cast(x)`` with infinite entries of ``x`` kept as they are."""
    rounded = cast(x)
    return jnp.where(jnp.isinf(x), jnp.asarray(x, rounded.dtype), rounded)


def eval_jaxpr(jaxpr, consts, args, ctx: Context):
    env = {}

    def read(v):
        if isinstance(v, core.Literal):
            return operand(jnp.asarray(v.val, dtype=v.aval.dtype), ctx)
        return env[v]

    for var, value in zip(jaxpr.constvars, consts):
        env[var] = operand(value, ctx)
    for var, value in zip(jaxpr.invars, args, strict=True):
        env[var] = value
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        outs = _equation(eqn, invals, ctx)
        if not eqn.primitive.multiple_results:
            outs = [outs]
        if ctx.handler.recorder is not None and not ctx.loop:
            ctx.handler.recorder(eqn, outs)
        elif ctx.sink is not None:
            ctx.sink.append((eqn, list(outs)))
        for var, value in zip(eqn.outvars, outs, strict=True):
            env[var] = value
    return [read(v) for v in jaxpr.outvars]


def _site(eqn, ctx: Context):
    handler = ctx.handler
    shape = tuple(eqn.outvars[0].aval.shape)
    site = Site(len(handler.sites), eqn.primitive.name, _join(ctx.scope, name_stack(eqn)), _source(eqn), shape,
                _operations(eqn))
    handler.sites.append(site)
    key = None if ctx.key is None else hash_fold_in(ctx.key, site.index)
    return handler.policy(site, key), key


def _operations(eqn) -> int:
    out = math.prod(eqn.outvars[0].aval.shape)
    if eqn.primitive.name == "dot_general":
        (contracting, _), _ = eqn.params["dimension_numbers"]
        lhs = eqn.invars[0].aval.shape
        return 2 * out * math.prod(lhs[i] for i in contracting)
    if eqn.primitive.name in ("reduce_sum", "scatter-add"):
        return math.prod(eqn.invars[-1 if eqn.primitive.name == "scatter-add" else 0].aval.shape)
    return out


def _container(x, ctx):
    """A float result of an exact operation held in the container (exact: it is a format number)."""
    if hasattr(x, "dtype") and _is_float(x.dtype) and x.dtype != ctx.handler.dtype:
        return x.astype(ctx.handler.dtype)
    return x


def _equation(eqn, invals, ctx: Context):
    name = eqn.primitive.name
    params = dict(eqn.params)
    out_avals = [v.aval for v in eqn.outvars]
    floats = any(_is_float(a.dtype) for a in out_avals if hasattr(a, "dtype"))

    if name in CALLS:
        inner = params[CALLS[name]]
        scope = params.get("name", name) if name in ("jit", "pjit") else ""
        # the call's own named scopes (a jitted block inside ``jax.named_scope("layer3")``), then its name:
        # the inner program's equations carry name stacks relative to the call
        return eval_closed(inner, invals, ctx.nested(_join(name_stack(eqn), str(scope) if scope != "<lambda>" else "")))
    if name == "scan":
        return _scan(eqn, invals, params, ctx)
    if name == "while":
        return _while(invals, params, ctx)
    if name == "cond":
        return _cond(invals, params, ctx)
    if name == "convert_element_type":
        return _convert(invals[0], params, ctx)
    if name == "scatter-add" and floats:
        return _scatter_add(eqn, invals, params, ctx)

    if not floats:  # integer and boolean arithmetic is exact
        if name in EXACT or name in INTEGER_OK or name in ROUNDED_BINARY or name in WIDE:
            return eqn.primitive.bind(*invals, **params)
        raise UnsupportedPrimitive(_unsupported(name))
    if name == "stop_gradient" and not ctx.handler.keeps_stop_gradient:
        return invals[0]
    if name in EXACT:
        out = eqn.primitive.bind(*invals, **params)
        return [_container(o, ctx) for o in out] if eqn.primitive.multiple_results else _container(out, ctx)

    if name in ROUNDED_BINARY or name in ROUNDED_UNARY or name in WIDE or name in REDUCTIONS:
        policy, key = _site(eqn, ctx)
        invals = ctx.handler.operands(policy, invals)
        return _rounded(eqn.primitive, policy, invals, params, key)
    raise UnsupportedPrimitive(_unsupported(name))


def _rounded(primitive, policy, invals, params, key):
    """One rounding site (an equation of ``primitive``) evaluated by ``policy``."""
    name = primitive.name
    if _native_exact(policy) and _float64_program(invals, params):
        # Exact() with XLA's own order on a float64 program: every primitive as traced (its axes,
        # layout, precision), so that the emulated program is the native one and computes the
        # same bits on any model (sums in XLA's order, dot_general as the model wrote it)
        return primitive.bind(*invals, **params)
    if name in ROUNDED_BINARY:
        x, y = invals
        return getattr(policy, ROUNDED_BINARY[name])(x, y, key)
    if name == "square":
        return policy.mul(invals[0], invals[0], key)
    if name == "sqrt":
        return policy.sqrt(invals[0], key)
    if name == "exp":
        return policy.exp(invals[0], key)
    if name == "integer_pow":
        return _integer_pow(policy, invals[0], int(params["y"]), key)
    if name in WIDE:
        return policy.apply_primitive(primitive, params, *invals, key=key)
    if name == "dot_general":
        return policy._contract(*invals, params["dimension_numbers"], None, key)
    if name == "reduce_sum":
        return _reduce_sum(policy, invals[0], params["axes"], key)
    return _cumulative(policy, policy.add if name == "cumsum" else policy.mul, invals[0], params, key)


def _integer_pow(policy, x, n: int, key):
    """x**n as XLA evaluates it (``lax.integer_pow``: binary powering, then 1 / x**|n| for n < 0),
    each multiplication and the division rounded (Model 4.1: x**3 is fl(x fl(x x)), two roundings,
    what the hardware computes)."""
    keys = KeyStream(key)
    if n == 0:
        return jnp.ones_like(x)
    exponent, acc = abs(n), None
    while exponent > 0:
        if exponent & 1:
            acc = x if acc is None else policy.mul(acc, x, keys.next())
        exponent >>= 1
        if exponent > 0:
            x = policy.mul(x, x, keys.next())
    return policy.div(jnp.ones_like(acc), acc, keys.next()) if n < 0 else acc


def _scatter_add(eqn, invals, params, ctx: Context):
    """``scatter-add``: operand[target(i)] <- fl(operand[target(i)] + update_i) for the update
    windows in index order (a loop over windows; the entries of one window go to distinct
    places and are added at once).  The target of every update entry is found by transposing the
    scatter (a gather) on the operand's positions, so every dimension-number layout and mode
    (clip, fill-or-drop: a dropped update adds nothing) is the primitive's own."""
    policy, key = _site(eqn, ctx)
    operand, indices, updates = invals
    operand, updates = ctx.handler.operands(policy, [operand, updates])
    if _native_exact(policy) and _float64_program([operand, updates], params):  # as traced: XLA's order
        return eqn.primitive.bind(operand, indices, updates, **params)
    dtype = jnp.result_type(operand)
    if operand.size + 1 >= 2 ** (jnp.finfo(dtype).nmant + 1):
        raise UnsupportedPrimitive(f"scatter-add into {operand.size} entries: positions are not exact in {dtype}")
    zeros = jnp.zeros(operand.shape, dtype)

    def scatter(u):
        return lax.scatter_add_p.bind(zeros, indices, u, **params)

    positions = (jnp.arange(operand.size, dtype=dtype) + 1).reshape(operand.shape)  # 0: dropped
    (targets,) = jax.linear_transpose(scatter, jnp.zeros(updates.shape, dtype))(positions)
    window = tuple(int(d) for d in params["dimension_numbers"].update_window_dims)
    order = tuple(d for d in range(updates.ndim) if d not in window) + window
    size = math.prod(updates.shape[d] for d in window)
    targets = jnp.transpose(targets, order).reshape(-1, size).astype(jnp.int32) - 1
    values = jnp.transpose(updates, order).reshape(-1, size)
    flat = operand.reshape(-1)

    def add_window(flat, item):
        target, value, index = item
        place = jnp.where(target >= 0, target, flat.size)  # out of range: dropped
        current = flat.at[place].get(mode="fill", fill_value=0)
        window_key = None if key is None else hash_fold_in(key, index)
        return flat.at[place].set(policy.add(current, value, window_key), mode="drop"), None

    if params.get("unique_indices", False):  # every entry to a place of its own: one step
        flat, _ = add_window(flat, (targets.reshape(-1), values.reshape(-1), 0))
    else:
        flat, _ = lax.scan(add_window, flat, (targets, values, jnp.arange(targets.shape[0])))
    return flat.reshape(operand.shape)


def _native_exact(policy) -> bool:
    """``Exact()`` with XLA's order (not an ordered accumulation, not a subclass that records)."""
    return type(policy) is Exact and policy.accumulation == "native"


def _float64_program(invals, params) -> bool:
    """Every float operand and the result type float64 (a float32 program traced under
    ``Exact()`` is widened by the policy instead)."""
    wanted = params.get("preferred_element_type")
    floats = [x for x in invals if hasattr(x, "dtype") and _is_float(x.dtype)]
    return all(x.dtype == jnp.float64 for x in floats) and (wanted is None or np.dtype(wanted) == np.float64)


def _unsupported(name: str) -> str:
    return (f"boundlab cannot emulate the primitive '{name}': its rounding is not modelled (Model 4.1 covers "
            f"elementwise arithmetic, elementary functions, dot_general, reduce_sum and exact data movement). "
            f"Rewrite that part of the function with supported operations, or open an issue naming '{name}'.")


def _reduce_sum(policy, x, axes, key):
    axes = tuple(sorted(int(a) for a in axes))
    if not axes:
        return x
    keep = tuple(i for i in range(x.ndim) if i not in axes)
    moved = jnp.transpose(x, keep + axes)
    flat = moved.reshape(tuple(x.shape[i] for i in keep) + (-1,))
    if flat.shape[-1] == 0:
        return jnp.zeros(flat.shape[:-1], x.dtype)  # an empty sum is an exact zero
    return policy.sum(flat, axis=-1, key=key)


def _cumulative(policy, op, x, params, key):
    """Prefix sums (products) in index order, one rounded operation per step."""
    axis, reverse = int(params["axis"]), bool(params.get("reverse", False))
    moved = jnp.moveaxis(x, axis, 0)
    if reverse:
        moved = moved[::-1]

    def step(carry, item):
        index, value = item
        step_key = None if key is None else hash_fold_in(key, index)
        total = op(carry, value, step_key)
        return total, total

    first = moved[0]
    _, rest = lax.scan(step, first, (jnp.arange(1, moved.shape[0]), moved[1:]))
    out = jnp.concatenate([first[None], rest])
    if reverse:
        out = out[::-1]
    return jnp.moveaxis(out, 0, axis)


def _convert(x, params, ctx):
    x = jnp.asarray(x)
    new = np.dtype(params["new_dtype"])
    old = np.dtype(x.dtype)
    if _is_float(new):
        if _is_float(old):
            return x  # float to float: the value is already a format number in the container
        return operand(x.astype(jnp.float64 if x64_enabled() else ctx.handler.dtype), ctx)
    return x.astype(new)


def _scan_operands(params, invals) -> tuple[list, list, list]:
    """(consts, init, xs) of a scan equation's operands: by ``num_consts``/``num_carry`` (jax up to
    0.10), or by ``ft_in``, the flat tree of the three groups that jax 0.11 gives instead (read
    from jax's source, ``lax.control_flow.loops``; a lent H200 ran jax 0.11.2, where the counts
    were gone)."""
    if "num_consts" in params and "num_carry" in params:
        n_consts, n_carry = params["num_consts"], params["num_carry"]
        return list(invals[:n_consts]), list(invals[n_consts:n_consts + n_carry]), list(invals[n_consts + n_carry:])
    if "ft_in" in params:
        consts, init, xs = params["ft_in"].update(list(invals)).unpack()
        return list(consts), list(init), list(xs)
    raise NotImplementedError(
        f"boundlab.emulate cannot tell lax.scan's constants, carry and scanned operands apart in jax "
        f"{jax.__version__} (parameters: {sorted(params)}); install jax < 0.11 (pip install 'jax<0.11' 'jaxlib<0.11')")


def _scan(eqn, invals, params, ctx):
    consts, init, xs = _scan_operands(params, invals)
    n_carry = len(init)
    body = params["jaxpr"]

    recording = ctx.handler.recorder is not None and ctx.handler.records_loops
    seen = []  # the body's recorded equations, in order (the body is traced once)

    def step(carry, x):
        index, values = carry
        key = None if ctx.key is None else hash_fold_in(ctx.key, index + 1_000_003 * (len(ctx.handler.sites) + 1))
        sink = [] if recording else None
        out = eval_closed(body, list(consts) + list(values) + list(x), ctx.nested("scan", key, loop=True, sink=sink))
        if recording:
            seen[:] = [(eqn, len(outs)) for eqn, outs in sink]
            return (index + 1, out[:n_carry]), (out[n_carry:], [o for _, outs in sink for o in outs])
        return (index + 1, out[:n_carry]), out[n_carry:]

    unroll = params.get("unroll", 1)  # jax 0.11: 0 means every iteration unrolled
    (_, carry), ys = lax.scan(step, (jnp.int32(0), list(init)), list(xs), length=params["length"],
                              reverse=params["reverse"], unroll=True if unroll == 0 else unroll)
    if recording:
        ys, stacked = ys
        stacked = iter(stacked)
        for eqn, count in seen:
            outs = [next(stacked) for _ in range(count)]
            if not ctx.loop:
                ctx.handler.recorder(eqn, outs)
            elif ctx.sink is not None:
                ctx.sink.append((eqn, outs))
    return list(carry) + list(ys)


def _while(invals, params, ctx):
    cn, bn = params["cond_nconsts"], params["body_nconsts"]
    cond_consts, body_consts, init = invals[:cn], invals[cn:cn + bn], invals[cn + bn:]
    salt = 1_000_003 * (len(ctx.handler.sites) + 1)

    def cond(carry):
        index, values = carry
        key = None if ctx.key is None else hash_fold_in(ctx.key, 2 * index + salt)
        return eval_closed(params["cond_jaxpr"], list(cond_consts) + list(values), ctx.nested("while.cond", key, loop=True))[0]

    def body(carry):
        index, values = carry
        key = None if ctx.key is None else hash_fold_in(ctx.key, 2 * index + 1 + salt)
        return index + 1, eval_closed(params["body_jaxpr"], list(body_consts) + list(values),
                                      ctx.nested("while", key, loop=True))

    return list(lax.while_loop(cond, body, (jnp.int32(0), list(init)))[1])


def _cond(invals, params, ctx):
    index, operands = invals[0], invals[1:]
    branches = [
        (lambda *ops, branch=branch, i=i: eval_closed(branch, list(ops), ctx.nested(f"cond[{i}]", loop=True)))
        for i, branch in enumerate(params["branches"])
    ]
    return lax.switch(index, branches, *operands)
