"""The emulated gradient, measured and bounded, tensor by tensor.

``check_gradient(loss_fn, compute, params, batch)`` evaluates g = grad(loss_fn) at the weights
rounded into ``compute``'s format, three ways: emulated (``boundlab.emulate``: every primitive of
the forward and backward pass rounded, Model 4.1), exactly (float64 at the same rounded weights
and batch) and bounded (``boundlab.first_order`` of the gradient function: a first-order bound
of every gradient entry, |g_hat - g| <= sum over the rounding sites of |dg/dv| u |v| + O(u^2)).
Per parameter tensor it reports

* ``relative_error``: ||g_hat - g||_2 / ||g||_2, and ``bound_relative``: ||bound||_2 / ||g||_2
  (an upper bound on the former to first order);
* ``worst_ratio``: max over entries of |g_hat - g| / bound, and ``verdict``: the entrywise check
  |g_hat - g| <= bound (``boundlab.verdicts``: held / failed / not checked, with the reason);
* ``underflow``: entries the emulation made zero where g is not (gradients flushed), and
  ``overflow``: non-finite entries of g_hat;

and ``sites_underflow`` / ``sites_overflow``: whether any rounding site left the format's normal
range (the first-order bound's own hypothesis, Model 4.1: no underflow, no overflow), and
``decisions_flipped``: how many comparisons of the gradient program (``gt``, ``eq``, ...: ReLU's
derivative is select(x > 0, g, 0)) came out differently in the emulated and the exact run.  The
first-order bound linearises one branch of the program; where a rounding error carries an input
across a kink (a ReLU pre-activation within its error of 0) a gradient entry jumps by O(1) where
the linearisation sees nothing.  So a tensor whose entrywise check fails while decisions flipped
is "not checked" (the hypothesis failed, and the verdict says so), never "held"; with no flips a
failure is a failure.
``loss_scale`` multiplies the loss before differentiation and divides the gradient after (a
power of two: exact), as mixed-precision training does.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from boundlab.sensitivity import first_order
from boundlab.training.recipes import Mixed, Recipe
from boundlab.verdicts import holds, verdict


def _name(path) -> str:
    return "/".join(str(getattr(key, "key", getattr(key, "name", getattr(key, "idx", key)))) for key in path)


@functools.lru_cache(maxsize=64)
def _gradient_function(loss_fn, loss_scale: float):
    """The scaled gradient of ``loss_fn`` (divided by the scale outside, in float64): one function
    object per loss and scale, so that ``first_order`` and ``_emulated_with_flips`` compile it once."""
    def grad_fn(params, batch):
        return jax.grad(lambda p, b: loss_fn(p, b) * loss_scale)(params, batch)

    return grad_fn


COMPARISONS = frozenset({"eq", "ne", "lt", "le", "gt", "ge"})


def _decisions(fn, arithmetic, args) -> tuple:
    """(``fn(*args)`` evaluated through ``arithmetic``, as ``boundlab.emulate`` evaluates it, and
    the boolean outputs of every comparison it made)."""
    from boundlab.emulation.api import interpret
    from boundlab.emulation.interpreter import Handler

    found = []
    handler = Handler(arithmetic)
    handler.records_loops = True  # a model's layers in a lax.scan: their ReLUs too
    handler.recorder = lambda eqn, outs: found.append(outs[0]) if eqn.primitive.name in COMPARISONS else None
    return interpret(fn, handler, args, None), found


@functools.lru_cache(maxsize=64)
def _emulated_with_flips(grad_fn, compute):
    """A jitted (params, batch) -> (the gradient evaluated in ``compute``, the number of
    comparisons whose outcome differs between ``compute`` and exact arithmetic): one program per
    gradient function and arithmetic, where ``emulate`` and a separate count were two (the
    emulated gradient is the counted run's output, the same bits as ``emulate``'s)."""
    from boundlab.arithmetic import Exact

    def run(params, batch):
        value, emulated = _decisions(grad_fn, compute, (params, batch))
        _, exact = _decisions(grad_fn, Exact(), (params, batch))
        flips = sum((jnp.sum(a != b, dtype=jnp.int32) for a, b in zip(emulated, exact, strict=True)),
                    jnp.zeros((), jnp.int32))
        return value, flips

    return jax.jit(run)


@functools.lru_cache(maxsize=64)
def _selection(sizes: tuple, entries: int, seed: int):
    """(outputs function, per-leaf index arrays): ``entries`` fixed random entries of each leaf
    (all of a smaller leaf), concatenated."""
    rng = np.random.default_rng(seed)
    picks = tuple(np.sort(rng.choice(size, min(entries, size), replace=False)) for size in sizes)

    def select(grads):
        return jnp.concatenate([jnp.ravel(g)[pick] for g, pick in zip(jax.tree.leaves(grads), picks, strict=True)])

    return select, picks


def check_gradient(loss_fn, compute, params, batch, *, loss_scale: float = 1.0, chunk: int = 256,
                   entries: int | None = None, seed: int = 0) -> dict:
    """Per parameter tensor, the emulated gradient against the exact one and its first-order
    bound (see the module docstring).  ``compute``: an arithmetic or a ``Recipe`` (its
    ``compute``).  One VJP per bounded gradient entry (in chunks of ``chunk``): every entry, or
    with ``entries`` a fixed random subset of that many entries per tensor (``seed``), for models
    too large to bound entry by entry at every checkpoint.  A stochastic ``compute`` raises
    ``ValueError``: the emulated run would need a PRNG key, which this check does not take (the
    bound of ``first_order(grad_fn, compute)`` holds for every draw; compare a draw of
    ``emulate(grad_fn, compute)(..., key=...)`` with it)."""
    compute = compute.compute if isinstance(compute, Recipe) else compute
    if isinstance(compute, Mixed):
        raise ValueError("check_gradient bounds the gradient in one arithmetic (first_order); a Mixed compute has "
                         "two: check its low and its high arithmetic separately")
    if getattr(compute, "mode", "nearest") == "stochastic":
        raise ValueError(f"{compute} rounds stochastically and check_gradient takes no PRNG key: pass a "
                         f"round-to-nearest or directed-rounding arithmetic, or compare a draw of "
                         f"boundlab.emulate(grad_fn, compute)(..., key=...) with first_order's bound")
    grad_fn = _gradient_function(loss_fn, float(loss_scale))
    emulated, flips = _emulated_with_flips(grad_fn, compute)(params, batch)
    flips = int(flips)
    named = jax.tree_util.tree_leaves_with_path(emulated)
    g_hats = [np.asarray(leaf, np.float64) / loss_scale for _, leaf in named]
    if entries is None:
        record = first_order(grad_fn, compute, chunk=chunk)(params, batch)
        values = [np.asarray(v, np.float64) / loss_scale for v in jax.tree.leaves(record.value)]
        bounds = [np.asarray(b, np.float64) / loss_scale for b in jax.tree.leaves(record.bound)]
    else:
        select, picks = _selection(tuple(int(g.size) for g in g_hats), int(entries), int(seed))
        record = first_order(grad_fn, compute, outputs=select, chunk=chunk)(params, batch)
        splits = np.cumsum([len(p) for p in picks])[:-1]
        values = np.split(np.asarray(record.value, np.float64) / loss_scale, splits)
        bounds = np.split(np.asarray(record.bound, np.float64) / loss_scale, splits)
        g_hats = [g.ravel()[p] for g, p in zip(g_hats, picks, strict=True)]
    flags = record.flags
    result = {"tensors": {}, "sites_underflow": bool(np.any(np.asarray(flags.get("underflow", False)))),
              "sites_overflow": bool(np.any(np.asarray(flags.get("overflow", False)))),
              "decisions_flipped": flips, "entries": "all" if entries is None else int(entries)}
    for (path, _), g_hat, g, bound in zip(named, g_hats, values, bounds, strict=True):
        error = np.abs(g_hat - g)
        norm = np.linalg.norm(g)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(bound > 0, error / bound, np.where(error > 0, np.inf, 0.0))
        check = verdict(error, bound, overflow=~np.isfinite(g_hat), overflow_reason="overflow in the emulation")
        if flips and holds(check) is False:  # the linearised branch is not the one the emulation took
            check = verdict(error, bound, {f"the exact run's branches ({flips} comparisons flipped)": False},
                            overflow=~np.isfinite(g_hat), overflow_reason="overflow in the emulation")
        result["tensors"][_name(path)] = {
            "relative_error": float(np.linalg.norm(error) / norm) if norm > 0 else float(np.linalg.norm(error) > 0),
            "bound_relative": float(np.linalg.norm(bound) / norm) if norm > 0 else float("inf"),
            "worst_ratio": float(np.max(ratio)) if ratio.size else 0.0,
            "verdict": check["label"], "holds": holds(check),
            "underflow": int(np.sum((g_hat == 0) & (g != 0))), "overflow": int(np.sum(~np.isfinite(g_hat))),
        }
    return result
