"""One compiled program per entry point instead of one per operation.

Called eagerly (a notebook, ``analyze``, a test), a JAX function runs operation by operation and
every operation of a new shape is compiled on its own: about 40 ms each on the CPU, hundreds per
call of a bound or a closed form.  ``compiled`` wraps an entry point in ``jax.jit`` once, so an
eager call compiles one program per shape (and per static argument), and inside an outer ``jit``,
``vmap`` or ``grad`` the function is inlined as before.  The wrapper stays a plain function, so
its docstring, signature and doctests are those of the function it wraps.

Arguments that must be Python values (an arithmetic policy, a norm's name, a flag, a function)
are named in ``static_argnames``.  Checks that look at concrete values belong in the caller,
before the compiled part (inside it every array is a tracer).
"""

from __future__ import annotations

import functools

import jax


def compiled(function=None, *, static_argnames: tuple[str, ...] = ()):
    """``function`` compiled with ``jax.jit`` (``static_argnames`` static), as a plain function."""
    if function is None:
        return functools.partial(compiled, static_argnames=static_argnames)
    jitted = jax.jit(function, static_argnames=static_argnames)

    @functools.wraps(function)
    def call(*args, **kwargs):
        return jitted(*args, **kwargs)

    call.jitted = jitted
    return call


def memoised(builder):
    """``builder(*key)``, which builds a jitted program, memoised on its (hashable) arguments.

    ``emulate(f, a)`` and ``first_order(f, a)`` return a new wrapper per call (``mixed`` does
    too, and does not use this yet); a loop or a training step that wraps the same function (or an NNX module of the same
    structure) with the same policy again would trace and compile it again every time.  With
    the program memoised on (function, policy, options) the wrapper is rebuilt but the program,
    and ``jit``'s cache of traces inside it, is shared.  Unhashable arguments (a policy holding a
    dict) build a program of their own, as before.
    """
    cached = functools.lru_cache(maxsize=128)(builder)

    @functools.wraps(builder)
    def get(*key):
        try:
            hash(key)
        except TypeError:
            return builder(*key)
        return cached(*key)

    get.cache_clear = cached.cache_clear
    return get
