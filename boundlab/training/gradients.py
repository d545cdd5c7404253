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
range (the first-order bound's own hypothesis, Model 4.1: no underflow, no overflow).
``loss_scale`` multiplies the loss before differentiation and divides the gradient after (a
power of two: exact), as mixed-precision training does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from boundlab.emulation import emulate
from boundlab.sensitivity import first_order
from boundlab.training.recipes import Recipe
from boundlab.verdicts import holds, verdict


def _name(path) -> str:
    return "/".join(str(getattr(key, "key", getattr(key, "name", getattr(key, "idx", key)))) for key in path)


def check_gradient(loss_fn, compute, params, batch, *, loss_scale: float = 1.0, chunk: int = 256) -> dict:
    """Per parameter tensor, the emulated gradient against the exact one and its first-order
    bound (see the module docstring).  ``compute``: an arithmetic or a ``Recipe`` (its
    ``compute``).  One VJP per gradient entry (in chunks of ``chunk``): for small models."""
    compute = compute.compute if isinstance(compute, Recipe) else compute

    def grad_fn(params, batch):  # the scaled gradient; divided by the scale outside, in float64
        return jax.grad(lambda p, b: loss_fn(p, b) * loss_scale)(params, batch)

    record = first_order(grad_fn, compute, chunk=chunk)(params, batch)
    emulated = emulate(grad_fn, compute)(params, batch)
    flags = record.flags
    unscale = lambda tree: jax.tree.map(lambda x: jnp.asarray(x, jnp.float64) / loss_scale, tree)  # noqa: E731
    emulated, values, bounds = unscale(emulated), unscale(record.value), unscale(record.bound)
    result = {"tensors": {}, "sites_underflow": bool(np.any(np.asarray(flags.get("underflow", False)))),
              "sites_overflow": bool(np.any(np.asarray(flags.get("overflow", False))))}
    leaves = zip(jax.tree_util.tree_leaves_with_path(emulated), jax.tree.leaves(values), jax.tree.leaves(bounds),
                 strict=True)
    for (path, g_hat), g, bound in leaves:
        g_hat, g, bound = (np.asarray(x, np.float64) for x in (g_hat, g, bound))
        error = np.abs(g_hat - g)
        norm = np.linalg.norm(g)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(bound > 0, error / bound, np.where(error > 0, np.inf, 0.0))
        check = verdict(error, bound, overflow=~np.isfinite(g_hat), overflow_reason="overflow in the emulation")
        result["tensors"][_name(path)] = {
            "relative_error": float(np.linalg.norm(error) / norm) if norm > 0 else float(np.linalg.norm(error) > 0),
            "bound_relative": float(np.linalg.norm(bound) / norm) if norm > 0 else float("inf"),
            "worst_ratio": float(np.max(ratio)) if ratio.size else 0.0,
            "verdict": check["label"], "holds": holds(check),
            "underflow": int(np.sum((g_hat == 0) & (g != 0))), "overflow": int(np.sum(~np.isfinite(g_hat))),
        }
    return result
