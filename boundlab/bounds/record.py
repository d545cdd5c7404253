"""The record every Section 4 statement returns."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from boundlab.bounds.statement import Statement


@functools.partial(jax.tree_util.register_dataclass, data_fields=["coefficient", "input_gain", "terms", "flags"],
                   meta_fields=["statement"])
@dataclasses.dataclass(frozen=True)
class Bound:
    """A first-order bound rho <= coefficient * u + input_gain * rho_in + O(u^2 + rho_in^2).

    ``coefficient`` is the bound in units of the unit roundoff u; ``input_gain`` multiplies the
    relative error of a perturbed input (Corollaries 4.9, 4.12, 4.16, 4.20; zero for statements
    about exact inputs).  ``terms`` are the named quantities the bound is made of (xi factors,
    singular values, ratios); ``flags`` are the statement's hypotheses, each True when it holds.
    ``statement`` names the paper's statement (a ``Statement``, printed as "Lemma 4.19").
    A pytree: works under jit and vmap, and is differentiable in the weights.
    """

    statement: Statement
    coefficient: jax.Array
    input_gain: jax.Array
    terms: dict
    flags: dict

    def value(self, u, input_error=0.0) -> jax.Array:
        """The bound's first-order value for unit roundoff u (and input error rho_in)."""
        return self.coefficient * u + self.input_gain * input_error

    @property
    def valid(self) -> jax.Array:
        """All hypotheses hold (a bound whose hypotheses fail is not a bound)."""
        valid = jnp.asarray(True)
        for flag in self.flags.values():  # elementwise, so a vmapped record keeps its batch axis
            valid = jnp.logical_and(valid, flag)
        return valid


def bound(statement, coefficient, input_gain=0.0, terms=None, flags=None) -> Bound:
    """A ``Bound`` with array fields; an undefined coefficient becomes inf.

    Undefined: NaN, or negative, which a bound cannot be; it comes from a maximum over NaN
    terms, which XLA:CPU may reduce to -inf (non-finite exact intermediates, also flagged).
    """
    coefficient = undefined_to_inf(jnp.asarray(coefficient, dtype=jnp.float64))
    return Bound(Statement(statement), coefficient, jnp.asarray(input_gain, dtype=jnp.float64),
                 {k: jnp.asarray(v) for k, v in (terms or {}).items()},
                 {k: jnp.asarray(v) for k, v in (flags or {}).items()})


U_FLAG = "0 < u < 1"


def guard_unit_roundoff(record: Bound, u) -> Bound:
    """``record`` with the flag "0 < u < 1" added, and every floating field NaN where u is not a
    unit roundoff (u <= 0, u >= 1 or NaN): a traced u cannot raise, and a bound evaluated at
    such a u (a negative or infinite ``K``, a coefficient of the wrong sign) is no number at all.
    A concrete u was refused before (``terms.check_unit_roundoff``), so the flag then holds."""
    u = jnp.asarray(u)
    ok = (u > 0) & (u < 1)

    def guard(value):
        value = jnp.asarray(value)
        return jnp.where(ok, value, jnp.nan) if jnp.issubdtype(value.dtype, jnp.floating) else value

    return Bound(record.statement, guard(record.coefficient), guard(record.input_gain),
                 {k: guard(v) for k, v in record.terms.items()},
                 {**record.flags, U_FLAG: jnp.broadcast_to(ok, jnp.shape(record.coefficient))})


def undefined_to_inf(value) -> jax.Array:
    """NaN or negative (a maximum over NaN terms, which XLA:CPU may reduce to -inf) becomes inf:
    an undefined factor of a bound is no bound."""
    return jnp.where(jnp.isnan(value) | (value < 0), jnp.inf, value)
