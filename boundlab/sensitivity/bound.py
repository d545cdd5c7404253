"""``first_order(f, arithmetic)``: the a-posteriori first-order rounding-error bound of any JAX
function, from one instrumented exact forward pass and vector-Jacobian products.

Model 4.1 rounds each value v_i of the computation once: fl(v_i) = v_i (1 + delta_i),
|delta_i| <= u_eff.  To first order the computed output differs from the exact one by

    y_hat - y = sum_i (dy/dv_i) v_i delta_i + O(u^2),

so, entry by entry,

    |y_hat_j - y_j| <= sum_i |dy_j/dv_i| e_i + O(u^2),   e_i = u_eff |v_i|          (deterministic)

and, when the delta_i are independent with mean zero (Higham and Mary, SISC 2019) or come from
stochastic rounding (Connolly, Higham and Mary, SISC 2021: mean-independent, Azuma-Hoeffding),
Hoeffding's inequality for the bounded terms |(dy_j/dv_i) v_i delta_i| <= |dy_j/dv_i| e_i gives

    |y_hat_j - y_j| <= lambda sqrt(sum_i (dy_j/dv_i e_i)^2)     with probability >= 1 - 2 exp(-lambda^2 / 2)

(first order; ``confidence`` sets lambda).  The sites v_i are every rounding the arithmetic
makes: each elementwise result, each product and partial sum of a dot product or a sum in the
accumulation order (so a recursive dot product of length k contributes at most k u |a|^T |b|,
the first-order part of Lemma 4.3's gamma_k |a|^T |b|), each block sum of a blocked one.
dy_j/dv_i comes from reverse-mode autodiff of the exact (float64) evaluation with a tap at each
site (``boundlab.sensitivity.taps``), one VJP per output entry, vmapped in chunks.

Large outputs: the cost is one VJP per entry of ``outputs(f(...))``; pass ``outputs`` to bound a
chosen subset (``lambda y: y[:, -1]``) or linear functionals (``lambda y: w @ y`` bounds
|w^T (y_hat - y)| with one VJP; the error of a linear selection is the selection of the
error).  Norms follow from the entries: ||y_hat - y||_inf <= max_j bound_j, ||.||_2 <=
||bound||_2.  Underflow (gradual or to zero) and overflow are outside Model 4.1 and are flagged;
a rounding whose sensitivity is exactly zero contributes zero whatever its value (a masked score
at -inf), so an overflow is flagged only where it matters (``FirstOrder.verdict``).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from boundlab.runtime.x64 import require_x64
from boundlab.runtime.compilation import memoised
from boundlab.emulation.api import as_function, interpret, merged, split_modules
from boundlab.sensitivity.taps import FLAGS, TapHandler, effective_unit_roundoff, zero_channel


def lambda_for(confidence: float) -> float:
    """lambda with 1 - 2 exp(-lambda^2 / 2) = confidence (Hoeffding for one output entry)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    return math.sqrt(2 * math.log(2 / (1 - confidence)))


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["value", "bound", "probabilistic", "contributions", "site_maps", "flags"],
                   meta_fields=["sites", "confidence", "lam", "unit_roundoff"])
@dataclasses.dataclass(frozen=True)
class FirstOrder:
    """The first-order bound of ``outputs(f(*args))`` under an arithmetic.

    value: the exact (float64) output at the rounded inputs, ``outputs``'s structure.
    bound: |y_hat - y| <= bound + O(u^2), entrywise, same structure (deterministic).
    probabilistic: |y_hat - y| <= probabilistic + O(u^2) with probability >= ``confidence`` per
      entry (independent mean-zero errors, or stochastic rounding); ``lam`` is its lambda.
    contributions: (sites, *shape) for one output array ((sites, entries) for a pytree): site
      i's share of each entry's bound (summed over a loop's iterations); they add up to bound.
    site_maps: for each site, sum over output entries of |dy_j/dv| e, in the site's shape:
      which entries of an intermediate matter.
    flags: "finite" (value and bound), and per site (arrays over sites) "same-sign sum",
      "underflow", "overflow" (a value beyond the format's range whose sensitivity is not zero:
      a masked score that overflows contributes zero and raises no flag); see
      ``independence_doubtful`` and ``verdict``.
    sites: the ``Site`` records (primitive, scope, source line, shape), in trace order.
    """

    value: object
    bound: object
    probabilistic: object
    contributions: jax.Array
    site_maps: tuple
    flags: dict
    sites: tuple
    confidence: float
    lam: float
    unit_roundoff: float

    def site_totals(self) -> jax.Array:
        """Each site's contribution summed over the output entries, (sites,)."""
        return jnp.sum(self.contributions.reshape(len(self.sites), -1), axis=1)

    def ranking(self, top: int = 10):
        """The ``top`` sites by their total contribution (summed over output entries)."""
        totals = self.site_totals()
        order = sorted(range(len(self.sites)), key=lambda i: -float(totals[i]))
        return [(self.sites[i], float(totals[i])) for i in order[:top]]

    def by_scope(self) -> dict:
        """Total contribution per scope (``jax.named_scope`` and control flow), largest first."""
        totals = self.site_totals()
        groups: dict = {}
        for site, total in zip(self.sites, totals):
            groups[site.scope] = groups.get(site.scope, 0.0) + float(total)
        return dict(sorted(groups.items(), key=lambda item: -item[1]))

    def overflow_sites(self) -> list[str]:
        """The labels of the sites where a value beyond the format's range matters (its
        sensitivity is not zero); empty when none does.  Outside ``jit``."""
        return [site.label() for site, flag in zip(self.sites, self.flags["overflow"]) if bool(flag)]

    def verdict(self) -> str | None:
        """None when the bound is a first-order bound of Model 4.1's computation; otherwise why
        not: "not checked (overflow at <site>)" (an overflowed value matters: Model 4.1 has no
        overflow, so the bound is no bound there) or "not checked (a NaN or inf value or bound)".
        Outside ``jit``; under ``jit`` read ``flags["finite"]`` and ``flags["overflow"]``."""
        overflowed = self.overflow_sites()
        if overflowed:
            more = f" and {len(overflowed) - 1} more" if len(overflowed) > 1 else ""
            return f"not checked (overflow at {overflowed[0]}{more})"
        if not bool(self.flags["finite"]):
            return "not checked (a NaN or inf value or bound)"
        return None

    @property
    def independence_doubtful(self) -> bool:
        """True where a same-sign sum is among the sites: rounding to nearest there does not
        behave like independent mean-zero errors, so ``probabilistic`` is a heuristic (it is
        not for stochastic rounding, which needs no independence)."""
        return bool(jnp.any(self.flags["same-sign sum"]))


@memoised
def first_order_program(fn, arithmetic, outputs, confidence, chunk, lumped):
    """The jitted bound of ``fn`` (``first_order``'s program), shared by every ``first_order``
    call with the same function, policy and options."""
    lam = lambda_for(confidence)
    u = effective_unit_roundoff(arithmetic.fmt, arithmetic.mode)

    def compute(graphdefs, states):
        g = merged(fn, graphdefs)
        holder = {}

        def instrumented(channels):
            handler = TapHandler(arithmetic, channels, lumped)
            out = interpret(g, handler, states, None)
            selected = outputs(out) if outputs is not None else out
            leaves, tree = jax.tree.flatten(selected)
            holder.update(sites=tuple(handler.sites), tree=tree, shapes=[jnp.shape(v) for v in leaves])
            return jnp.concatenate([jnp.ravel(jnp.asarray(v, jnp.float64)) for v in leaves])

        jax.eval_shape(lambda: instrumented(None))  # discovers the sites and their shapes
        channels = [zero_channel(site.shape) for site in holder["sites"]]
        flat, vjp = jax.vjp(instrumented, channels)
        sites = holder["sites"]
        m = flat.shape[0]
        size = min(chunk, max(m, 1))
        starts = jnp.arange(0, m, size)

        def one_chunk(maps, start):
            rows = jax.nn.one_hot(start + jnp.arange(size), m, dtype=jnp.float64)  # rows past m are 0
            (bars,) = jax.vmap(vjp)(rows)
            shares = jnp.stack([b["z"].reshape(size, -1).sum(axis=1) for b in bars]) if bars else \
                jnp.zeros((0, size))
            squares = sum((b["w"].reshape(size, -1).sum(axis=1) for b in bars), jnp.zeros(size))
            maps = [total + b["z"].sum(axis=0) for total, b in zip(maps, bars)]
            flags = jnp.stack([jnp.max(b["q"], axis=0) for b in bars]) if bars else jnp.zeros((0, len(FLAGS)))
            return maps, (shares, squares, flags)

        maps0 = [jnp.zeros(site.shape, jnp.float64) for site in sites]
        maps, (shares, squares, flags) = lax.scan(one_chunk, maps0, starts)
        shares = jnp.moveaxis(shares, 0, 1).reshape(len(sites), starts.shape[0] * size)[:, :m]  # no -1: 0 sites
        squares = squares.reshape(-1)[:m]
        site_flags = jnp.max(flags, axis=0) if flags.shape[0] else jnp.zeros((len(sites), len(FLAGS)))
        bound = jnp.sum(shares, axis=0)
        nan = jnp.isnan(flat)
        bound = jnp.where(nan, jnp.nan, bound)
        probabilistic = jnp.where(nan, jnp.nan, lam * jnp.sqrt(squares))

        def unflat(v):
            pieces, offset = [], 0
            for shape in holder["shapes"]:
                count = math.prod(shape)
                pieces.append(v[offset:offset + count].reshape(shape))
                offset += count
            return jax.tree.unflatten(holder["tree"], pieces)

        single = len(holder["shapes"]) == 1
        contributions = shares.reshape((len(sites),) + holder["shapes"][0]) if single else shares
        flag_dict = {"finite": jnp.all(jnp.isfinite(flat)) & jnp.all(jnp.isfinite(bound))}
        flag_dict.update({name: site_flags[:, i] > 0 for i, name in enumerate(FLAGS)})
        return FirstOrder(unflat(flat), unflat(bound), unflat(probabilistic), contributions, tuple(maps),
                          flag_dict, sites, confidence, lam, u)

    return jax.jit(compute, static_argnums=0)


def first_order(f, arithmetic, *, outputs=None, confidence: float = 0.99, chunk: int = 128, lumped: bool = False):
    """Return ``bounded(*args) -> FirstOrder``: the first-order error bound of ``f`` under
    ``arithmetic`` (``Emulated(...)``, or ``Exact(...)`` for float64 itself), per output entry.

    Args:
      f: a JAX function of pytrees, or a Flax NNX module (as for ``boundlab.emulate``).
      arithmetic: the arithmetic whose roundings are bounded (format, mode, accumulation order).
      outputs: optional function applied to ``f``'s result before bounding: a subset of the
        entries, or linear functionals of them (see the module docstring).
      confidence: the probability with which ``probabilistic`` holds per entry.
      chunk: output entries per batch of VJPs (memory ~ chunk x the intermediates).
      lumped: each dot product and sum is one site bounded by Lemma 4.3's first-order constant,
        (u + (k - 1) u) |a|^T |b| for k terms, instead of one site per product and partial sum.
        No loops over k, so much cheaper for wide layers (a real model), and never below the
        detailed bound (a partial sum is at most |a|^T |b| and shares the sum's sensitivity);
        its ``probabilistic`` bound treats each dot product as one term, so it is conservative.

    Needs ``jax_enable_x64`` (the exact evaluation is float64).  Float inputs are rounded once
    into the format, as in ``emulate``; the bound is about the same computation.  A NaN input
    gives NaN values and bounds and ``flags["finite"]`` False.
    """
    lambda_for(confidence)  # checks the confidence
    if not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive int, got {chunk!r}")
    fn, bound_args = as_function(f)
    run = first_order_program(fn, arithmetic, outputs, confidence, chunk, lumped)

    def bounded(*args):
        require_x64("boundlab.first_order (the exact evaluation is float64)")
        states, graphdefs = split_modules(bound_args + tuple(args))
        return run(graphdefs, states)

    return bounded
