"""Mixed precision: each rounding site of a function in one of two formats.

``mixed(f, low, high, choose)`` evaluates ``f`` as ``emulate`` does, except that the sites for
which ``choose(site)`` is true are evaluated in ``high`` and the others in ``low``.  It is the
semantics of mixed-precision code ("autocast"): inputs and weights are held in the high format
(``high.cast``; ``inputs="low"`` stores them in the low format instead, as a model whose weights
are kept in bf16), and an operation evaluated in a format first rounds its floating-point
operands into that format (to nearest, a no-op for numbers already in it), then rounds its
result as Model 4.1 says.  With nothing chosen it equals ``emulate(f, low)`` bit for bit (rounding an
operand when it is used equals rounding it when it enters); with everything chosen,
``emulate(f, high)``.

Both policies must share a container; an ``Emulated`` policy whose own container is narrower is
moved to float64 (``Emulated(..., container="float64")``, same results).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from boundlab.arithmetic import Emulated, Exact
from boundlab.emulation.api import as_function, interpret, merged, split_modules
from boundlab.emulation.interpreter import Handler, Site, cast_keeping_infinities


@dataclasses.dataclass(frozen=True)
class Choice:
    """Which sites run in the high format (hashable, so a choice is a static argument):
    the sites with these trace-order ``indices``, or of these ``primitives`` (names such as
    ``"dot_general"``); ``invert`` takes the complement."""

    indices: frozenset = frozenset()
    primitives: frozenset = frozenset()
    invert: bool = False

    def __post_init__(self):
        object.__setattr__(self, "indices", frozenset(int(i) for i in self.indices))
        object.__setattr__(self, "primitives", frozenset(self.primitives))

    def __call__(self, site: Site) -> bool:
        hit = site.index in self.indices or site.primitive in self.primitives
        return hit != self.invert


NOTHING = Choice()
EVERYTHING = Choice(invert=True)


def _shared(low, high):
    if low.dtype == high.dtype:
        return low, high
    policies = []
    for policy in (low, high):
        if policy.dtype != jnp.float64:
            if not isinstance(policy, Emulated):
                raise TypeError(f"{policy} cannot be moved to a float64 container")
            policy = dataclasses.replace(policy, container="float64")
        policies.append(policy)
    return tuple(policies)


class MixedHandler(Handler):
    """Sites chosen by ``choose`` in ``high``, the others in ``low``; operands rounded into the
    site's format first."""

    def __init__(self, low, high, choose, inputs: str = "high"):
        if inputs not in ("high", "low"):
            raise ValueError(f"inputs must be 'high' or 'low', got {inputs!r}")
        low, high = _shared(low, high)
        super().__init__(high)
        self.low, self.high, self.choose = low, high, choose
        self.inputs = inputs

    def cast(self, x):
        return (self.high if self.inputs == "high" else self.low).cast(x)

    def policy(self, site, key):
        return self.high if self.choose(site) else self.low

    def operands(self, policy, values):
        if isinstance(policy, Exact):
            return values
        return [cast_keeping_infinities(policy.cast, v) if hasattr(v, "dtype") and jnp.issubdtype(v.dtype, jnp.floating) else v
                for v in values]


def mixed(f, low, high, choose=NOTHING, *, inputs: str = "high"):
    """``f`` with the sites ``choose`` picks in ``high`` and the rest in ``low`` (see the module
    docstring).  ``choose``: a ``Choice`` (or any hashable predicate on ``Site``); ``inputs``: the
    format the inputs are stored in (``"high"`` or ``"low"``).  Returns a jitted function with
    ``f``'s arguments plus ``key=`` for stochastic rounding."""
    fn, bound_args = as_function(f)
    MixedHandler(low, high, choose, inputs)  # fail early on bad arguments

    def run(graphdefs, choice, states, key):
        return interpret(merged(fn, graphdefs), MixedHandler(low, high, choice, inputs), states, key)

    run = jax.jit(run, static_argnums=(0, 1))

    def evaluated(*args, key=None):
        if "stochastic" in (getattr(low, "mode", None), getattr(high, "mode", None)) and key is None:
            raise ValueError("a stochastic rounding mode needs key=jax.random.key(...)")
        states, graphdefs = split_modules(bound_args + tuple(args))
        return run(graphdefs, choose, states, key)

    return evaluated


class _Either:
    """A site evaluated in both formats, the result picked by a traced boolean (one compilation
    for every choice of sites; twice the work of one format)."""

    def __init__(self, low, high, pick):
        self.low, self.high, self.pick = low, high, pick
        self.dtype = high.dtype

    def __getattr__(self, name):
        low_method, high_method = getattr(self.low, name), getattr(self.high, name)

        def call(*args, **kwargs):
            def cast(policy, a):
                is_float = hasattr(a, "dtype") and jnp.issubdtype(a.dtype, jnp.floating)
                return cast_keeping_infinities(policy.cast, a) if is_float else a

            lo = low_method(*[cast(self.low, a) for a in args], **kwargs)
            hi = high_method(*[cast(self.high, a) for a in args], **kwargs)
            return jnp.where(self.pick, hi, lo)

        return call


class MaskHandler(MixedHandler):
    """Site i in ``high`` where ``mask[i]`` (a traced boolean vector over the sites) is true."""

    def __init__(self, low, high, mask, inputs: str = "high"):
        super().__init__(low, high, NOTHING, inputs)
        self.mask = mask

    def policy(self, site, key):
        return _Either(self.low, self.high, self.mask[site.index])

    def operands(self, policy, values):
        return values  # each format's operands are rounded inside _Either


def mixed_by_mask(f, low, high, *, inputs: str = "high"):
    """Like ``mixed``, but the choice is data: returns ``g(mask, *args)`` with ``mask`` a boolean
    vector over the sites (``sites(f, ...)`` order), True where a site runs in ``high``.  One
    compilation serves every mask (each site is evaluated in both formats and one result kept),
    so a sweep over choices, as the mixed-precision advisor makes, does not recompile.  Equals
    ``mixed(f, low, high, Choice(indices=...))`` bit for bit."""
    fn, bound_args = as_function(f)

    def run(graphdefs, mask, states, key):
        return interpret(merged(fn, graphdefs), MaskHandler(low, high, mask, inputs), states, key)

    run = jax.jit(run, static_argnums=0)

    def evaluated(mask, *args, key=None):
        states, graphdefs = split_modules(bound_args + tuple(args))
        return run(graphdefs, jnp.asarray(mask, bool), states, key)

    return evaluated


class _RoundedInputs(Handler):
    """Exact (float64) evaluation with the inputs and constants rounded as ``policy`` rounds them."""

    def __init__(self, policy):
        super().__init__(Exact())
        self.rounding = policy

    def cast(self, x):
        return jnp.asarray(self.rounding.cast(x), jnp.float64)


def exact_at_rounded_inputs(f, policy):
    """``f`` evaluated exactly (float64) at its inputs and constants rounded into ``policy``'s format:
    the value that ``first_order(f, policy)`` bounds the error from, and the reference of a
    mixed-precision run with ``inputs="low"`` (only the arithmetic's error is left)."""
    fn, bound_args = as_function(f)

    def run(graphdefs, states):
        return interpret(merged(fn, graphdefs), _RoundedInputs(policy), states, None)

    run = jax.jit(run, static_argnums=0)

    def evaluated(*args):
        states, graphdefs = split_modules(bound_args + tuple(args))
        return run(graphdefs, states)

    return evaluated


def sites(f, arithmetic, *args) -> tuple[Site, ...]:
    """The rounding sites of ``f(*args)`` in trace order (what ``Choice.indices`` refers to)."""
    fn, bound_args = as_function(f)
    states, graphdefs = split_modules(bound_args + tuple(args))
    handler = Handler(arithmetic)
    jax.eval_shape(lambda s: interpret(merged(fn, graphdefs), handler, s, None), states)
    return tuple(handler.sites)
