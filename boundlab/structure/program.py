"""A traced program as one flat list of equations with data flow, for recognising its parts.

``flatten(closed_jaxpr)`` inlines the calls the emulation interpreter recurses into (``jit``,
``custom_jvp_call``, ``custom_vjp_call``, ``remat``, ...), so ``jax.nn.softmax`` or
``jax.nn.relu`` (custom-JVP functions) are their primitive operations, and gives every value one
canonical id across call boundaries (an inner jaxpr's input is the outer operand).  Control flow
(``scan``, ``while``, ``cond``) is opaque in the flat list, but its body is flattened too, as a
*region*: the parts of the paper's network (one ``lax.scan`` over its layers) are found inside
its loop, and are said to be there.

The equation objects are those of the jaxpr, so ``id(eqn)`` names the same equation to the
interpreter (``boundlab.emulation.interpreter``), which records the values of watched ones.
"""

from __future__ import annotations

import dataclasses

from jax.extend import core

from boundlab.emulation.interpreter import CALLS, name_stack

LOOPS = {"scan": ("jaxpr",), "while": ("body_jaxpr",), "cond": ("branches",)}


@dataclasses.dataclass
class Node:
    """One equation: its primitive, canonical input and output ids, the scope (the name stack of
    enclosing ``jax.named_scope``s and jitted functions), the region (() at top level, else the
    loops around it, e.g. ("scan",)) and the equation object itself."""

    eqn: object
    primitive: str
    inputs: tuple
    outputs: tuple
    scope: str
    region: tuple
    occurrence: int = 0  # earlier top-level nodes of the same equation object (a jitted function called twice)


@dataclasses.dataclass
class Program:
    """The flat program: ``nodes`` in trace order; ``producer``: id -> (node index, output
    position); ``consumers``: id -> node indices; ``literals``: id -> Python value of a literal
    or a scalar constant; ``inputs``/``outputs``: the ids of the function's flat arguments and
    results; ``shapes``/``dtypes``: id -> shape, dtype; ``origin``: a loop body's input id -> the
    outer operand it comes from; ``constants``: id -> value of the jaxpr's constants."""

    nodes: list
    producer: dict
    consumers: dict
    literals: dict
    inputs: tuple
    outputs: tuple
    shapes: dict
    dtypes: dict
    origin: dict
    constants: dict

    def node_of(self, value):
        """The node that produces ``value`` (None for an input, a constant or a literal)."""
        found = self.producer.get(value)
        return None if found is None else self.nodes[found[0]]

    def uses(self, value):
        return [self.nodes[i] for i in self.consumers.get(value, ())]


def flatten(closed) -> Program:
    """The flat program of a ClosedJaxpr (see the module docstring)."""
    state = _State()
    jaxpr = closed.jaxpr
    for var, const in zip(jaxpr.constvars, closed.consts):
        state.const(var, const)
    inputs = tuple(state.fresh(var) for var in jaxpr.invars)
    outputs = _walk(jaxpr, state, "", ())
    return Program(state.nodes, state.producer, state.consumers, state.literals, inputs, tuple(outputs),
                   state.shapes, state.dtypes, state.origin, state.constants)


class _State:
    def __init__(self):
        self.nodes, self.producer, self.consumers, self.literals = [], {}, {}, {}
        self.shapes, self.dtypes, self.ids, self.count, self.origin = {}, {}, {}, 0, {}
        self.constants, self.seen = {}, {}

    def fresh(self, var):
        self.count += 1
        self.ids[var] = self.count
        aval = getattr(var, "aval", None)
        self.shapes[self.count] = tuple(getattr(aval, "shape", ()))
        self.dtypes[self.count] = getattr(aval, "dtype", None)
        return self.count

    def const(self, var, value):
        ident = self.fresh(var)
        self.constants[ident] = value
        shape = getattr(value, "shape", ())
        if shape == () or all(s == 1 for s in shape):
            try:
                self.literals[ident] = float(value.reshape(()) if shape else value)
            except (TypeError, ValueError):
                pass
        return ident

    def read(self, var):
        if isinstance(var, core.Literal):
            self.count += 1
            self.shapes[self.count] = ()
            self.dtypes[self.count] = getattr(var.aval, "dtype", None)
            try:
                self.literals[self.count] = float(var.val)
            except (TypeError, ValueError):
                pass
            return self.count
        return self.ids[var]


def _walk(jaxpr, state: _State, scope: str, region: tuple):
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        inputs = tuple(state.read(v) for v in eqn.invars)
        here = _join(scope, name_stack(eqn))
        if name in CALLS:
            inner = eqn.params[CALLS[name]]
            inner_jaxpr = inner.jaxpr if isinstance(inner, core.ClosedJaxpr) else inner
            if isinstance(inner, core.ClosedJaxpr):
                for var, const in zip(inner_jaxpr.constvars, inner.consts):
                    state.const(var, const)
            for var, ident in zip(inner_jaxpr.invars, inputs):
                state.ids[var] = ident
            label = str(eqn.params.get("name", "")) if name in ("jit", "pjit") else ""
            outs = _walk(inner_jaxpr, state, _join(here, label if label != "<lambda>" else ""), region)
            for var, ident in zip(eqn.outvars, outs):
                state.ids[var] = ident
            continue
        outputs = tuple(state.fresh(v) for v in eqn.outvars)
        index = len(state.nodes)
        occurrence = 0
        if not region:
            occurrence = state.seen.get(id(eqn), 0)
            state.seen[id(eqn)] = occurrence + 1
        state.nodes.append(Node(eqn, name, inputs, outputs, here, region, occurrence))
        for position, ident in enumerate(outputs):
            state.producer[ident] = (index, position)
        for ident in inputs:
            state.consumers.setdefault(ident, []).append(index)
        if name in LOOPS:
            _walk_loop(eqn, inputs, state, here, region + (name,))
    return [state.read(v) for v in jaxpr.outvars]


def _walk_loop(eqn, inputs, state: _State, scope: str, region: tuple):
    """A loop's body flattened as its own region (its values are per iteration: recognised, not
    recorded).  The body's inputs get fresh ids, each with its ``origin``: the outer operand it
    iterates over or carries (a scan's per-layer weights come from the stacked weights)."""
    params = eqn.params
    name = eqn.primitive.name
    operands = list(inputs)
    if name == "scan":
        bodies = [(params["jaxpr"], operands)]
    elif name == "while":  # the interpreter traces the condition first, as lax.while_loop does
        cn, bn = params["cond_nconsts"], params["body_nconsts"]
        bodies = [(params["cond_jaxpr"], operands[:cn] + operands[cn + bn:]), (params["body_jaxpr"], operands[cn:])]
    else:
        bodies = [(branch, operands[1:]) for branch in params["branches"]]
    for body, outer_operands in bodies:
        inner = body.jaxpr if isinstance(body, core.ClosedJaxpr) else body
        if isinstance(body, core.ClosedJaxpr):
            for var, const in zip(inner.constvars, body.consts):
                state.const(var, const)
        for var, outer in zip(inner.invars, outer_operands):
            state.origin[state.fresh(var)] = outer
        _walk(inner, state, _join(scope, eqn.primitive.name), region)


def _join(a: str, b: str) -> str:
    return f"{a}/{b}" if a and b else a or b
