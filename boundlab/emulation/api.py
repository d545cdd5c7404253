"""``emulate(f, arithmetic)``: any JAX function evaluated with Model 4.1's roundings."""

from __future__ import annotations

import sys

import jax
from jax.extend.core import jaxpr_as_fun

from boundlab.runtime.compilation import memoised
from boundlab.emulation.interpreter import Context, Handler, eval_closed, native, operand


def loaded_nnx():
    return sys.modules.get("flax.nnx")  # flax is imported lazily: only a caller with modules has it


def split_modules(args):
    """Flax NNX modules among ``args`` replaced by their state (a pytree); the graph definitions
    (hashable, static under ``jit``) are returned beside them, None where an arg is no module."""
    nnx = loaded_nnx()
    if nnx is None:
        return tuple(args), (None,) * len(args)
    states, graphdefs = [], []
    for arg in args:
        if isinstance(arg, nnx.Module):
            graphdef, state = nnx.split(arg)
            states.append(state)
            graphdefs.append(graphdef)
        else:
            states.append(arg)
            graphdefs.append(None)
    return tuple(states), tuple(graphdefs)


def merged(f, graphdefs):
    """``f`` as a function of the split arguments (modules rebuilt with ``nnx.merge``)."""
    if all(graphdef is None for graphdef in graphdefs):
        return f

    def call(*args):
        nnx = loaded_nnx()
        return f(*[arg if graphdef is None else nnx.merge(graphdef, arg) for graphdef, arg in zip(graphdefs, args)])

    return call


def call_module(module, *args):
    """``module(*args)``: one function for every module, so programs built for it are shared."""
    return module(*args)


def as_function(f, call=call_module):
    """A Flax NNX module ``m`` becomes the function ``call`` (``call_module`` by default) with
    ``m`` as its first argument (its structure static, its state traced); a function stays."""
    nnx = loaded_nnx()
    if nnx is not None and isinstance(f, nnx.Module):
        return call, (f,)
    if not callable(f):
        raise TypeError(f"expected a function or a Flax NNX module, got {type(f).__name__}")
    return f, ()


def interpret(f, handler: Handler, args, key, as_traced: bool = False):
    """Trace ``f(*args)`` and evaluate its jaxpr through ``handler``; float inputs are rounded
    once into the format.  Returns the output pytree.  ``as_traced``: a program with nothing to
    round (``interpreter.native``) is evaluated as traced instead (``emulate``; not for a caller
    that reads the handler's sites)."""
    flat, tree = jax.tree.flatten(args)
    closed, out_shape = jax.make_jaxpr(lambda *leaves: f(*jax.tree.unflatten(tree, leaves)), return_shape=True)(*flat)
    if as_traced and native(handler, closed):
        outs = jaxpr_as_fun(closed)(*flat)
        return jax.tree.unflatten(jax.tree.structure(out_shape), outs)
    leaves = [operand(leaf, Context(handler, None)) for leaf in flat]
    outs = eval_closed(closed, leaves, Context(handler, key))
    return jax.tree.unflatten(jax.tree.structure(out_shape), outs)


@memoised
def _emulation_program(fn, arithmetic):
    """The jitted interpretation of ``fn`` under ``arithmetic``, shared by every ``emulate(fn,
    arithmetic)`` (graph definitions static, states and key traced)."""

    def run(graphdefs, states, key):
        return interpret(merged(fn, graphdefs), Handler(arithmetic), states, key, as_traced=True)

    return jax.jit(run, static_argnums=0)


def emulate(f, arithmetic):
    """``f`` evaluated with every floating-point operation rounded as Model 4.1 says.

    Returns a function with ``f``'s arguments (plus ``key=`` for stochastic rounding) whose
    result has ``f``'s structure, floats held in ``arithmetic.dtype`` as format numbers.  Float
    inputs, constants and literals are rounded once into the format (to nearest); then
    elementwise arithmetic and elementary functions are rounded once each, ``dot_general`` and
    ``reduce_sum`` go through the arithmetic's accumulation order (every product and partial sum
    rounded when it is recursive), and exact operations (max, select, reshapes, ...) are left
    alone.  See ``boundlab.emulation.interpreter`` for the full list; any other primitive raises
    ``UnsupportedPrimitive`` naming it.

    Under ``Exact()`` (XLA's order) a program whose floating-point values are all float64 has
    nothing to round: it is evaluated as traced, so the result is ``f``'s own, bit for bit (a
    float32 value inside is widened to float64 instead, through the interpreter).

    ``f`` may be any JAX-traceable function of pytrees (including ``jit``, ``scan``, ``while``,
    ``cond``, ``custom_jvp``/``custom_vjp`` and ``checkpoint`` inside), or a Flax NNX module;
    arguments may be NNX modules.  The result is jitted (traced once per shape; the program is
    shared by every ``emulate`` of the same function and policy, so wrapping again inside a loop
    does not retrace) and works under ``jax.jit`` and ``jax.vmap``.

    >>> import jax.numpy as jnp
    >>> from boundlab import Emulated
    >>> f = lambda x: jnp.sum(x * x)  # fl(x_i^2), then a recursive sum, each step rounded
    >>> float(emulate(f, Emulated("fp16"))(jnp.array([1.0, 2.0**-6, 2.0**-6], jnp.float32)))
    1.0
    """
    fn, bound_args = as_function(f)
    run = _emulation_program(fn, arithmetic)

    def emulated(*args, key=None):
        if getattr(arithmetic, "mode", "nearest") == "stochastic" and key is None:
            raise ValueError(f"{arithmetic} rounds stochastically: pass key=jax.random.key(...)")
        states, graphdefs = split_modules(bound_args + tuple(args))
        return run(graphdefs, states, key)

    emulated.__name__ = f"emulated_{getattr(fn, '__name__', 'function')}"
    emulated.__doc__ = f"{getattr(fn, '__name__', 'f')} under {arithmetic} (boundlab.emulate)."
    return emulated
