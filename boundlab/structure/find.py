"""``find_structure(model, *args)``: trace a model (or a function) once and recognise its parts."""

from __future__ import annotations

import dataclasses

import jax

from boundlab.emulation.api import loaded_nnx, as_function, merged, split_modules
from boundlab.structure.parts import Structure, recognise
from boundlab.structure.program import Program, flatten
from boundlab.structure.scopes import call_with_scopes, module_paths


@dataclasses.dataclass(frozen=True)
class Traced:
    """A traced call: the closed jaxpr, its flat program, the recognised structure, the flat
    argument leaves (the modules' states first, as ``emulate`` splits them), the output tree and
    the positions of the data among the leaves."""

    closed: object
    program: Program
    structure: Structure
    leaves: tuple
    out_tree: object
    data: tuple


def as_scoped_function(f):
    """(function, bound arguments): an NNX module becomes ``call_with_scopes`` with the module as
    its first argument; a function stays as it is."""
    return as_function(f, call_with_scopes)


def module_types(args) -> dict:
    """path -> class name for the submodules of every NNX module among ``args``."""
    nnx = loaded_nnx()
    types = {}
    for arg in args:
        if nnx is not None and isinstance(arg, nnx.Module):
            types.update({path: type(node).__name__ for path, node in module_paths(arg).values()})
    return types


def trace(fn, graphdefs, states, types, weights=()) -> Traced:
    """Trace ``fn`` on split arguments (``split_modules``) and recognise its parts; the leaves of
    arguments that are neither a module nor in ``weights`` (argument positions) are the data."""
    flat, tree = jax.tree.flatten(tuple(states))
    data, position = [], 0
    for index, (graphdef, state) in enumerate(zip(graphdefs, states)):
        count = len(jax.tree.leaves(state))
        if graphdef is None and index not in weights:
            data += range(position, position + count)
        position += count
    g = merged(fn, graphdefs)
    closed, out_shape = jax.make_jaxpr(lambda *leaves: g(*jax.tree.unflatten(tree, leaves)), return_shape=True)(*flat)
    program = flatten(closed)
    return Traced(closed, program, recognise(program, data, types), tuple(flat), jax.tree.structure(out_shape),
                  tuple(data))


def prepare(f, args, weights: tuple = ()):
    """(function, graph definitions, states, module types, weight positions) of ``f(*args)`` as
    ``trace`` and the jitted programs take them: a module becomes ``call_with_scopes`` with the
    module as its first argument, so ``weights`` (positions among ``args``) are shifted past it."""
    fn, bound = as_scoped_function(f)
    states, graphdefs = split_modules(bound + tuple(args))
    types = tuple(sorted(module_types(bound + tuple(args)).items()))
    return fn, graphdefs, states, types, tuple(len(bound) + int(i) for i in weights)


def find_structure(f, *args, weights: tuple = ()) -> Structure:
    """The parts of ``f(*args)``: ``f`` a Flax NNX module or a JAX function, ``args`` as it is
    called (arrays or ``jax.ShapeDtypeStruct``s).  NNX modules among them and the arguments at
    the positions ``weights`` (of a function: ``weights=(0,)`` for ``f(params, x)``) are weights,
    everything else is data.  See ``boundlab.structure.parts`` for what is recognised and how.

    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> class Norm(nnx.Module):
    ...     def __init__(self, rngs):
    ...         self.ln = nnx.LayerNorm(4, epsilon=1e-5, rngs=rngs)
    ...     def __call__(self, x):
    ...         return self.ln(x)
    >>> s = find_structure(Norm(nnx.Rngs(0)), jnp.ones((3, 4), jnp.float32))
    >>> [(p.kind, p.module, round(p.detail("eps"), 9)) for p in s.parts]  # eps as the program adds it (float32)
    [('layer_norm', 'ln', 1e-05)]
    """
    fn, graphdefs, states, types, shifted = prepare(f, args, weights)
    return trace(fn, graphdefs, states, dict(types), shifted).structure
