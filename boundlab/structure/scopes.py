"""Module paths in the traced program: each submodule call of an NNX model inside a named scope.

Flax NNX adds nothing to JAX's name stack, so a jaxpr of ``model(x)`` does not say which
equation belongs to which submodule.  ``module_scopes(model)`` (a context manager, active while
the model is traced) runs every call of a submodule inside ``jax.named_scope(path)``, with
``path`` its attribute path ("blocks.0.attn"), and passes its floating-point inputs and outputs
through ``lax.optimization_barrier`` equations in scopes ``MARK + path + ":in"`` / ``":out"``:
exact identities that mark where a module's input enters and its output leaves (the
interpreter leaves them alone; ``emulate`` and ``first_order`` see the same operations).

It works by wrapping ``__call__`` of the submodules' classes for the duration of the trace
(restored on exit, also on error); calls of other instances of those classes are unchanged.
Tracing two models in two threads at once is not supported.
"""

from __future__ import annotations

import contextlib
import threading

import jax
import jax.numpy as jnp
from jax import lax

MARK = "boundlab.module="
_LOCK = threading.RLock()  # re-entrant: a traced model may trace another (emulate inside a module)


def module_paths(model) -> dict:
    """id(submodule) -> (dotted path, submodule) for every NNX submodule of ``model`` with a
    ``__call__`` (containers such as ``nnx.List`` have none); the model itself is not included."""
    from flax import nnx

    paths = {}
    for path, node in nnx.iter_graph(model):
        if path and isinstance(node, nnx.Module) and callable(getattr(type(node), "__call__", None)):
            paths.setdefault(id(node), (".".join(str(p) for p in path), node))
    return paths


def _float_array(value) -> bool:
    return isinstance(value, jax.Array) and jnp.issubdtype(value.dtype, jnp.floating)


def _mark(value, scope: str):
    """Floating-point arrays in ``value`` (an array, or tuples, lists and dicts of them; nothing
    else is looked into, so modules and RNG streams passed as arguments stay the same objects)
    passed through one marking barrier."""
    found = []

    def collect(v):
        if _float_array(v):
            found.append(v)
        elif isinstance(v, tuple | list):
            for item in v:
                collect(item)
        elif isinstance(v, dict):
            for item in v.values():
                collect(item)

    collect(value)
    if not found:
        return value
    with jax.named_scope(scope):
        marked = iter(lax.optimization_barrier(found))

    def rebuild(v):
        if _float_array(v):
            return next(marked)
        if isinstance(v, tuple | list):
            items = [rebuild(item) for item in v]
            return type(v)(*items) if hasattr(v, "_fields") else type(v)(items)
        if isinstance(v, dict):
            return type(v)((k, rebuild(item)) for k, item in v.items())
        return v

    return rebuild(value)


@contextlib.contextmanager
def module_scopes(model):
    """While active, submodule calls of ``model`` run in named scopes with marked inputs and
    outputs (see the module docstring).  Yields the ``module_paths`` mapping."""
    paths = module_paths(model)
    classes = {type(node) for _, node in paths.values()}
    active: set = set()
    with _LOCK:
        saved = {cls: cls.__dict__.get("__call__") for cls in classes}
        originals = {cls: cls.__call__ for cls in classes}
        try:
            for cls in classes:
                cls.__call__ = _wrapped(originals[cls], paths, active)
            yield paths
        finally:
            for cls, own in saved.items():
                if own is None:
                    delattr(cls, "__call__")
                else:
                    cls.__call__ = own


def _wrapped(call, paths, active):
    def wrapper(self, *args, **kwargs):
        entry = paths.get(id(self))
        if entry is None or id(self) in active:  # another instance, or a super().__call__ of this one
            return call(self, *args, **kwargs)
        path = entry[0]
        active.add(id(self))
        try:
            with jax.named_scope(path):
                args = _mark(args, f"{MARK}{path}:in")
                return _mark(call(self, *args, **kwargs), f"{MARK}{path}:out")
        finally:
            active.discard(id(self))

    wrapper.__wrapped__ = call
    return wrapper


def call_with_scopes(model, *args):
    """``model(*args)`` with its submodules' scopes and marks (one function for every model, so
    programs built for it are shared, as ``emulation.api.call_module``)."""
    with module_scopes(model):
        return model(*args)
