"""One training step in emulated arithmetic: loss and gradient, optimizer, weight update, each
rounded as its part of a ``Recipe`` says.

``step = make_step(loss_fn, optimizer, recipe)`` returns a jitted ``step(state, batch, key=None)
-> (state, StepInfo)`` for any ``loss_fn(params, batch) -> scalar`` (a Flax NNX model enters as
its parameters: ``graphdef, params = nnx.split(model, nnx.Param)`` and ``loss_fn = lambda p, b:
loss(nnx.merge(graphdef, p), b)``) and any optax ``GradientTransformation``:

1. g = the gradient of loss_fn (times the loss scale S, when scaled) evaluated by
   ``boundlab.emulate`` in ``recipe.compute`` (by ``boundlab.emulation.mixed`` site by site for a
   ``Mixed`` compute): every primitive of the forward and of the backward
   pass (the transposed dot products, ``add_any``, reductions, ``select_n``, ``scatter-add``)
   rounded once (Model 4.1); the master weights enter rounded into the compute format;
2. g / S (exact: S is a power of two); with dynamic scaling a non-finite g skips the update
   (without scaling it is applied: NaN weights, as in real training, and ``StepInfo.finite``,
   unless ``make_step(..., skip_nonfinite=True)``);
3. (delta, opt_state) = ``optimizer.update(g, opt_state, params)`` evaluated by ``emulate``
   (optax's own formula, every elementwise operation rounded: in float32 for bf16 and fp16
   states, see ``Recipe.state_arithmetic``), delta and the new state stored in the state format;
4. w <- fl_master(w + delta): to nearest, stochastically, or Kahan-compensated
   (y = delta - c; t = w + y; c = (t - w) - y; w = t, each operation rounded into the master
   format).

With ``RECIPES["float64"]`` every arithmetic is ``Exact()``: the step is optax's float64 step.
``StepInfo`` reports the loss, whether the loss and the gradient were finite, the loss scale used, the
fraction of nonzero updates that the stored weight did not take (rounded away: |delta| below
half an ulp of w), the number of gradient entries that are zero, and the 2-norm of the gradient's
finite entries, and whether the update was skipped.  ``StepInfo.finite`` is False when the loss or
a gradient entry is not finite; ``skipped`` when the state was left as it was (dynamic scaling:
a non-finite gradient; ``skip_nonfinite``: a non-finite loss or gradient).  With loss scaling the
reported loss is L itself (S L, which may overflow where L does not, is differentiated).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from boundlab.arithmetic import Exact
from boundlab.emulation import emulate
from boundlab.training.recipes import Recipe, evaluate, get_recipe


class TrainState(NamedTuple):
    """What a step carries: the master weights (float64 arrays holding master-format numbers),
    the optimizer's state (in the state format), Kahan's compensation (zeros otherwise), the
    loss scale, the finite steps since it last changed, and the step count."""

    params: Any
    opt_state: Any
    compensation: Any
    loss_scale: jax.Array
    good_steps: jax.Array
    step: jax.Array


class StepInfo(NamedTuple):
    """What one step measured (see the module docstring)."""

    loss: jax.Array
    finite: jax.Array
    loss_scale: jax.Array
    rounded_away: jax.Array
    zero_gradients: jax.Array
    gradient_norm: jax.Array
    skipped: jax.Array


def _floats(tree, fn):
    return jax.tree.map(lambda x: fn(x) if jnp.issubdtype(jnp.result_type(x), jnp.floating) else x, tree)


def _store(tree, arithmetic):
    """Every float leaf rounded into the arithmetic's format and held in float64."""
    if isinstance(arithmetic, Exact):
        return _floats(tree, lambda x: jnp.asarray(x, jnp.float64))
    return _floats(tree, lambda x: jnp.asarray(arithmetic.cast(x), jnp.float64))


def _check_floats(params) -> None:
    """A one-line error naming the first parameter that is not a float array."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            raise ValueError(f"parameter {jax.tree_util.keystr(path) or '(the root)'} has dtype "
                             f"{jnp.result_type(leaf)}: a training step differentiates the loss with respect to every "
                             f"parameter, so each must be a float array (keep integer state out of the params tree)")


def init_state(params, optimizer, recipe: str | Recipe) -> TrainState:
    """The state of step 0: the weights rounded into the master format, the optimizer's initial
    state in the state format."""
    recipe = get_recipe(recipe)
    _check_floats(params)
    params = _store(params, recipe.update_arithmetic if recipe.master else Exact())
    with jax.numpy_dtype_promotion("standard"):
        opt_state = _store(optimizer.init(params), recipe.state_format)
    scale = recipe.initial_scale if recipe.loss_scale else 1.0
    return TrainState(params, opt_state, jax.tree.map(jnp.zeros_like, params), jnp.asarray(scale, jnp.float64),
                      jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))


def _add(w, delta):
    return jax.tree.map(lambda a, b: a + b, w, delta)


def _kahan(w, delta, c):
    y = jax.tree.map(lambda d, e: d - e, delta, c)
    t = jax.tree.map(lambda a, b: a + b, w, y)
    c_new = jax.tree.map(lambda a, b, e: (a - b) - e, t, w, y)
    return t, c_new


def _step(loss_fn, optimizer, recipe: Recipe, skip_nonfinite: bool, state: TrainState, batch, key):
    compute = recipe.compute
    scaled = recipe.loss_scale is not None
    keys = (None, None) if key is None else tuple(jax.random.split(key))

    if scaled:
        def scaled_loss(params, batch, scale):
            value = loss_fn(params, batch)
            return value * scale, value  # the loss itself as an auxiliary: S L may overflow where L does not

        scaled_gradient = evaluate(jax.value_and_grad(scaled_loss, has_aux=True), compute)
        (_, value), grads = scaled_gradient(state.params, batch, state.loss_scale, key=keys[0])
        value = jnp.asarray(value, jnp.float64)
        grads = _floats(grads, lambda g: jnp.asarray(g, jnp.float64) / state.loss_scale)  # S: a power of two
    else:
        value, grads = evaluate(jax.value_and_grad(loss_fn), compute)(state.params, batch, key=keys[0])
        value = jnp.asarray(value, jnp.float64)
        grads = _floats(grads, lambda g: jnp.asarray(g, jnp.float64))
    leaves = [g for g in jax.tree.leaves(grads) if jnp.issubdtype(g.dtype, jnp.floating)]
    gradient_finite = jnp.all(jnp.asarray([jnp.all(jnp.isfinite(g)) for g in leaves]))
    zero = sum(jnp.sum(g == 0) for g in leaves)
    norm = jnp.sqrt(sum(jnp.sum(jnp.where(jnp.isfinite(g), g, 0) ** 2) for g in leaves))  # of the finite entries
    finite = gradient_finite & jnp.isfinite(value)
    # the dynamic scaling rule looks at the gradient only (as mixed-precision libraries do)
    applied = gradient_finite if scaled else (finite if skip_nonfinite else jnp.asarray(True))

    updates, opt_state = emulate(optimizer.update, recipe.state_arithmetic)(grads, state.opt_state, state.params)
    updates, opt_state = _store(updates, recipe.state_format), _store(opt_state, recipe.state_format)
    if recipe.update == "kahan":
        params, compensation = emulate(_kahan, recipe.update_arithmetic)(state.params, updates, state.compensation)
    else:
        params = emulate(_add, recipe.update_arithmetic)(state.params, updates, key=keys[1])
        compensation = state.compensation
    params, compensation = _store(params, Exact()), _store(compensation, Exact())

    moved = [(u != 0, (w_new == w_old) & (u != 0)) for u, w_new, w_old in
             zip(jax.tree.leaves(updates), jax.tree.leaves(params), jax.tree.leaves(state.params), strict=True)]
    nonzero = sum(jnp.sum(m[0]) for m in moved)
    rounded_away = sum(jnp.sum(m[1]) for m in moved) / jnp.maximum(nonzero, 1)

    def keep(new, old):
        return jax.tree.map(lambda a, b: jnp.where(applied, a, b), new, old)

    scale, good = state.loss_scale, state.good_steps
    if scaled or skip_nonfinite:  # a non-finite loss or gradient leaves the state as it was
        # (by default without scaling nothing is skipped: a non-finite gradient reaches the weights, as it would)
        params, opt_state = keep(params, state.params), keep(opt_state, state.opt_state)
        compensation = keep(compensation, state.compensation)
    if scaled:  # the dynamic rule: skip and back off on overflow, grow after growth_interval finite steps
        grow = gradient_finite & (good + 1 >= recipe.growth_interval)
        scale = jnp.where(gradient_finite, jnp.where(grow, jnp.minimum(2 * scale, recipe.max_scale), scale), scale / 2)
        good = jnp.where(gradient_finite & ~grow, good + 1, 0)
    info = StepInfo(value, finite, state.loss_scale, rounded_away, zero, norm, ~applied)
    return TrainState(params, opt_state, compensation, scale, good, state.step + 1), info


def make_step(loss_fn, optimizer, recipe: str | Recipe, *, skip_nonfinite: bool = False):
    """The jitted step ``step(state, batch, key=None) -> (state, StepInfo)`` (see the module
    docstring); one compilation per shape of the batch.  Stochastic rounding (in the compute
    arithmetic or the updates) needs a key per step.  ``skip_nonfinite``: a step whose loss or
    gradient is not finite leaves the weights and the optimizer's state as they were (always so
    with dynamic loss scaling); by default they take the NaN, as an unguarded training loop's would."""
    recipe = get_recipe(recipe)
    needs_key = recipe.update == "stochastic" or getattr(recipe.compute, "mode", "nearest") == "stochastic"
    jitted = jax.jit(functools.partial(_step, loss_fn, optimizer, recipe, bool(skip_nonfinite)))

    def step(state: TrainState, batch, key=None):
        if needs_key and key is None:
            raise ValueError(f"recipe {recipe.name} rounds stochastically: pass key=jax.random.key(...) to every step")
        with jax.numpy_dtype_promotion("standard"):  # optax mixes its int32 step count with floats
            return jitted(state, batch, key)

    return step
