"""Values of a traced program's parts: the program run exactly and emulated with its values
recorded, and a part replayed as a function of its inputs (for ``jax.jacfwd``).

Both run inside the caller's trace (``jit`` or not): the recorded values are arrays of that
trace.  Only values outside loops are recorded (inside, they are per iteration).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from boundlab.emulation.interpreter import (REDUCTIONS, ROUNDED_BINARY, ROUNDED_UNARY, WIDE, Handler, Context,
                                            eval_closed, operand)
from boundlab.structure.program import Program

ROUNDING = set(ROUNDED_BINARY) | ROUNDED_UNARY | WIDE | REDUCTIONS


class Recorded:
    """The values of one run: ``value(id)`` for any id the run computed outside loops."""

    def __init__(self, program: Program, leaves, records, outputs, dtype):
        self.program, self.leaves, self.records, self.outputs, self.dtype = program, leaves, records, outputs, dtype
        self._inputs = {ident: i for i, ident in enumerate(program.inputs)}

    def value(self, ident):
        found = self.program.producer.get(ident)
        if found is not None:
            node = self.program.nodes[found[0]]
            if node.region:
                raise KeyError(f"value {ident} is computed inside a loop: it has one value per iteration")
            return self.records[id(node.eqn)][node.occurrence][found[1]]
        if ident in self._inputs:
            return self.leaves[self._inputs[ident]]
        if ident in self.program.constants:
            return jnp.asarray(self.program.constants[ident])
        if ident in self.program.literals:
            return jnp.asarray(self.program.literals[ident], self.dtype)
        raise KeyError(f"value {ident} is not known to this run")


def run(closed, program: Program, leaves, arithmetic, key=None) -> Recorded:
    """Evaluate ``closed`` on ``leaves`` through ``arithmetic`` (inputs rounded into its format,
    as ``emulate`` does), recording every equation's outputs outside loops."""
    handler = Handler(arithmetic)
    records: dict = {}
    handler.recorder = lambda eqn, outs: records.setdefault(id(eqn), []).append(list(outs))
    operands = [operand(leaf, Context(handler, None)) for leaf in leaves]
    outputs = eval_closed(closed, operands, Context(handler, key))
    return Recorded(program, operands, records, outputs, handler.dtype)


def rounding_nodes(program: Program) -> list:
    """Indices of the nodes that are rounding sites, in the order the interpreter meets them
    (``first_order``'s sites)."""
    return [i for i, node in enumerate(program.nodes) if node.primitive in ROUNDING
            and any(jnp.issubdtype(v.aval.dtype, jnp.floating) for v in node.eqn.outvars)]


def external_inputs(program: Program, nodes) -> list:
    """The ids the operations ``nodes`` read and do not compute themselves, sorted."""
    produced = {o for i in nodes for o in program.nodes[i].outputs}
    return sorted({i for n in nodes for i in program.nodes[n].inputs if i not in produced})


def replay(program: Program, nodes, exit_value, fixed, variables):
    """``f(*xs)``: the operations ``nodes`` (indices, in order) evaluated exactly in float64 with
    the values ``variables`` (ids) set to ``xs`` and every other input they read taken from
    ``fixed`` (a ``Recorded`` exact run); returns the value ``exit_value``."""

    def f(*xs):
        env = dict(zip(variables, xs))
        for index in nodes:
            node = program.nodes[index]
            args = [env[i] if i in env else _float64(fixed.value(i)) for i in node.inputs]
            for ident, value in zip(node.outputs, _bind(node.eqn, args)):
                env[ident] = value
        return env[exit_value]

    return f


def _float64(x):
    x = jnp.asarray(x)
    return x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x


def _bind(eqn, args):
    """One equation bound on float64 arguments: float dtype parameters become float64, float
    conversions and precision reductions are identities (the exact evaluation)."""
    name = eqn.primitive.name
    params = dict(eqn.params)
    if name in ("convert_element_type", "reduce_precision") and jnp.issubdtype(args[0].dtype, jnp.floating) and (
            name == "reduce_precision" or jnp.issubdtype(np.dtype(params["new_dtype"]), jnp.floating)):
        return [args[0]]
    if name == "dot_general" and params.get("preferred_element_type") is not None and \
            jnp.issubdtype(params["preferred_element_type"], jnp.floating):
        params["preferred_element_type"] = jnp.float64
    out = eqn.primitive.bind(*args, **params)
    return out if eqn.primitive.multiple_results else [out]

