"""The recipe study (``boundlab train --recipes ...``): train one small transformer under several
low-precision recipes (``boundlab.training``) and compare them with the float32 run.

The model and data of ``boundlab train`` (the paper's network as a classifier of scikit-learn's
8x8 digits, rows as tokens, ``boundlab.nn.SequenceClassifier``), trained with Adam from the same
initialisation per seed under each recipe: the loss and its gradient emulated in the recipe's
compute arithmetic (every primitive of the forward and backward pass), optax's update in the
state format, the weights stored in the master format.  Every ``every`` steps a checkpoint
records the test accuracy (the master weights, evaluated exactly), the training loss, the
fraction of nonzero updates rounded away since the last checkpoint, the relative error of the
emulated gradient against the float64 gradient at the same weights and batch, its first-order
bound on ``gradient_entries`` fixed entries per tensor (``boundlab.training.check_gradient``:
the bound's relative size, the worst error/bound ratio, whether it held), the zero gradient
entries, the loss scale and the skipped steps.

Written: ``checkpoints.csv``, ``recipes.png`` (loss and test accuracy against the step, mean
over seeds, per recipe) and a strict ``summary.json``: per recipe the final accuracy (mean,
standard deviation, gap to float32), the mean fraction of updates rounded away, the median
gradient error, skipped steps; and the published claims in words with these numbers:
Micikevicius et al. (2018: fp16 without loss scaling loses small gradients to underflow) and
Zamirai et al. (2020: pure bf16 with round-to-nearest updates stalls; stochastic rounding and
Kahan-compensated updates recover float32's accuracy).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from boundlab.experiments.stats import strict_json
from boundlab.training import get_recipe, init_state, make_step

DEFAULT_RECIPES = ("float32", "bf16-mixed", "bf16-pure", "bf16-pure-sr", "bf16-pure-kahan", "fp16-mixed",
                   "fp16-mixed-scaled")


@dataclasses.dataclass(frozen=True)
class RecipeStudy:
    """The study's configuration; ``QUICK_RECIPES`` is the CI size."""

    recipes: tuple[str, ...] = DEFAULT_RECIPES
    seeds: tuple[int, ...] = (0, 1, 2)
    width: int = 16
    layers: int = 2
    steps: int = 300
    every: int = 25
    batch: int = 64
    learning_rate: float = 1e-3
    test_samples: int = 500
    seed: int = 0  # the train/test split
    gap: float = 0.02  # a recipe "falls behind" float32 when its final accuracy is lower by more than this
    # entries per parameter tensor bounded by first_order at each checkpoint (0: none): a VJP of the
    # gradient function per entry, through every rounding site of the backward pass: minutes and
    # gigabytes at the full study's size, so off there by default (--gradient-entries N), on in --quick
    gradient_entries: int = 0

    def __post_init__(self):
        for name in self.recipes:
            get_recipe(name)  # a one-line error naming the recipes
        if "float32" not in self.recipes:
            raise ValueError("the recipe study compares with float32: include it in recipes")
        for name in ("width", "layers", "steps", "every", "batch"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")
        if not self.seeds:
            raise ValueError("seeds must not be empty")


QUICK_RECIPES = RecipeStudy(recipes=("float32", "bf16-pure", "bf16-pure-kahan"), seeds=(0,), width=8, layers=1,
                            steps=40, every=20, test_samples=300, gradient_entries=4)


def _model(config: RecipeStudy, seed: int):
    from flax import nnx

    from boundlab.nn import SequenceClassifier

    model = SequenceClassifier(8, 8, 10, config.width, 2 * config.width, config.layers, rngs=nnx.Rngs(seed))
    return nnx.split(model, nnx.Param)


def _loss(graphdef):
    import optax
    from flax import nnx

    def loss_fn(params, batch):
        images, labels = batch
        logits = nnx.merge(graphdef, params)(images)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    return loss_fn


@functools.lru_cache(maxsize=None)
def _programs(graphdef, name: str, optimizer):
    """(loss, step, exact gradient, emulated gradient) of a recipe: one set, so one compilation,
    for every seed (the seeds' models share their graph definition)."""
    from boundlab.emulation import emulate

    loss_fn = _loss(graphdef)
    recipe = get_recipe(name)
    return (loss_fn, make_step(loss_fn, optimizer, recipe), jax.jit(jax.grad(loss_fn)),
            jax.jit(emulate(jax.grad(loss_fn), recipe.compute)))


def _gradient_bound(config, loss_fn, name, params, batch) -> dict:
    """``check_gradient`` on ``gradient_entries`` fixed entries per tensor: the bound's size
    relative to the gradient (the largest over tensors), the worst error/bound ratio, and whether
    it held on every tensor (None: not checked)."""
    if not config.gradient_entries:
        return {}
    from boundlab.training import check_gradient

    check = check_gradient(loss_fn, get_recipe(name).compute, params, batch, entries=config.gradient_entries)
    tensors = check["tensors"].values()
    verdicts = [t["holds"] for t in tensors]
    held = None if any(v is None for v in verdicts) else all(verdicts)
    return {"gradient_bound_relative": max(t["bound_relative"] for t in tensors),
            "gradient_worst_ratio": max(t["worst_ratio"] for t in tensors), "gradient_bound_held": held}


def _run(config, name, seed, data, optimizer, bar):
    from boundlab.experiments.training import _accuracy

    (train_x, train_y), (test_x, test_y) = data
    graphdef, params = _model(config, seed)
    loss_fn, step, exact_grad, emulated_grad = _programs(graphdef, name, optimizer)
    state = init_state(params, optimizer, get_recipe(name))
    rng = np.random.default_rng(1000 + seed)
    key = jax.random.key(seed)
    rows, away, skipped, losses = [], [], 0, []
    for index in range(config.steps + 1):
        batch_index = rng.choice(len(train_y), config.batch, replace=False)
        batch = (jnp.asarray(train_x[batch_index]), jnp.asarray(train_y[batch_index]))
        if index % config.every == 0 or index == config.steps:
            from flax import nnx

            model = nnx.merge(graphdef, state.params)
            g = jax.tree.leaves(exact_grad(state.params, batch))
            g_hat = jax.tree.leaves(emulated_grad(state.params, batch))
            error = math.sqrt(sum(float(jnp.sum((jnp.asarray(a, jnp.float64) - b) ** 2)) for a, b in zip(g_hat, g)))
            norm = math.sqrt(sum(float(jnp.sum(b**2)) for b in g))
            bound = _gradient_bound(config, loss_fn, name, state.params, batch)
            rows.append({"recipe": name, "seed": seed, "step": index,
                         "loss": float(np.mean(losses)) if losses else float(loss_fn(state.params, batch)),
                         "test_accuracy": _accuracy(model, test_x, test_y),
                         "rounded_away": float(np.mean(away)) if away else 0.0,
                         "gradient_error": error / norm if norm > 0 else 0.0,
                         "zero_gradients": int(sum(int(jnp.sum(a == 0)) for a in g_hat)),
                         "loss_scale": float(state.loss_scale), "skipped": skipped, **bound})
            away, losses = [], []
        if index == config.steps:
            break
        key, sub = jax.random.split(key)
        state, info = step(state, batch, key=sub)
        away.append(float(info.rounded_away))
        losses.append(float(info.loss))
        skipped += int(not bool(info.finite))
        if bar is not None:
            bar.update(1, f"training {name}, seed {seed}")
    return rows


def run_recipes(config: RecipeStudy = RecipeStudy(), progress: bool = True) -> list[dict]:
    """Every (recipe, seed) run; one row per checkpoint."""
    import optax

    from boundlab._x64 import require_x64
    from boundlab.experiments.sweeps import ProgressBar
    from boundlab.experiments.training import load_digits_tokens

    require_x64("boundlab train --recipes")
    data = load_digits_tokens(config.seed, config.test_samples)
    optimizer = optax.adam(config.learning_rate)  # one object: a static argument of every step
    runs = [(name, seed) for name in config.recipes for seed in config.seeds]
    bar = ProgressBar(len(runs) * config.steps, "training (each recipe's first step compiles)") if progress else None
    rows = []
    try:
        for name, seed in runs:
            rows.extend(_run(config, name, seed, data, optimizer, bar))
    finally:
        if bar is not None:
            bar.close()
    return rows


def _held_count(runs) -> str:
    """"held at k of n checkpoints" (n counts the checked ones; the rest say why not)."""
    if not runs or "gradient_bound_held" not in runs[0]:
        return "not checked (gradient_entries = 0)"
    checked = [r["gradient_bound_held"] for r in runs if r["gradient_bound_held"] is not None]
    label = f"held at {sum(checked)} of {len(checked)} checkpoints"
    missing = len(runs) - len(checked)
    return label + (f" (not checked at {missing}: overflow or failed hypotheses)" if missing else "")


def summarise(rows: list[dict], config: RecipeStudy) -> dict:
    """Per recipe: final accuracy, its gap to float32, updates rounded away, gradient error; the
    published claims in words."""
    final = {}
    for name in config.recipes:
        runs = [r for r in rows if r["recipe"] == name]
        last = [r for r in runs if r["step"] == config.steps]
        accuracy = [r["test_accuracy"] for r in last]
        final[name] = {"final_accuracy_mean": float(np.mean(accuracy)), "final_accuracy_std": float(np.std(accuracy)),
                       "rounded_away_mean": float(np.mean([r["rounded_away"] for r in runs if r["step"] > 0])),
                       "gradient_error_median": float(np.median([r["gradient_error"] for r in runs])),
                       "zero_gradients_mean": float(np.mean([r["zero_gradients"] for r in runs])),
                       "skipped_steps": int(sum(r["skipped"] for r in last)),
                       "gradient_bound_held": _held_count(runs),
                       "final_loss_mean": float(np.mean([r["loss"] for r in last]))}
    reference = final["float32"]["final_accuracy_mean"]
    for entry in final.values():
        entry["gap_to_float32"] = entry["final_accuracy_mean"] - reference
    claims = {}
    if "bf16-pure" in final:
        pure = final["bf16-pure"]
        words = (f"pure bf16 with round-to-nearest updates: {100 * pure['rounded_away_mean']:.0f}% of updates rounded "
                 f"away, final accuracy {pure['final_accuracy_mean']:.3f} against float32's {reference:.3f}")
        for name in ("bf16-pure-sr", "bf16-pure-kahan"):
            if name in final:
                words += f"; {name}: {final[name]['final_accuracy_mean']:.3f}"
        words += f"; final loss {pure['final_loss_mean']:.3f} against float32's {final['float32']['final_loss_mean']:.3f}"
        recover = [name for name in ("bf16-pure-sr", "bf16-pure-kahan") if name in final
                   and final[name]["gap_to_float32"] >= -config.gap]
        claims["zamirai_2020"] = {"claim": "pure bf16 training with round-to-nearest updates stalls; stochastic rounding "
                                           "or Kahan-compensated updates recover float32's accuracy",
                                  "falls_behind_here": bool(pure["gap_to_float32"] < -config.gap),
                                  "threshold": config.gap, "recovered_by": recover, "numbers": words}
    if "fp16-mixed" in final:
        plain = final["fp16-mixed"]
        words = (f"fp16 without loss scaling: final accuracy {plain['final_accuracy_mean']:.3f} (float32 {reference:.3f}), "
                 f"{plain['zero_gradients_mean']:.0f} zero gradient entries per checkpoint (float32: "
                 f"{final['float32']['zero_gradients_mean']:.0f})")
        if "fp16-mixed-scaled" in final:
            words += (f"; with dynamic scaling {final['fp16-mixed-scaled']['final_accuracy_mean']:.3f}, "
                      f"{final['fp16-mixed-scaled']['zero_gradients_mean']:.0f} zero entries")
        claims["micikevicius_2018"] = {"claim": "fp16 without loss scaling loses small gradients to underflow",
                                       "falls_behind_here": bool(plain["gap_to_float32"] < -config.gap),
                                       "threshold": config.gap, "numbers": words}
    return {"configuration": dataclasses.asdict(config), "recipes": final, "claims": claims}


def plot(rows, config, path):
    from boundlab.experiments.plots import _pyplot

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    colours = plt.cm.viridis(np.linspace(0.05, 0.9, len(config.recipes)))
    for colour, name in zip(colours, config.recipes):
        steps = sorted({r["step"] for r in rows if r["recipe"] == name})
        for ax, field in zip(axes, ("loss", "test_accuracy")):
            mean = [np.mean([r[field] for r in rows if r["recipe"] == name and r["step"] == s]) for s in steps]
            ax.plot(steps, mean, marker="o", ms=3, color=colour, label=name)
    axes[0].set_title("training loss (mean over seeds)")
    axes[1].set_title("test accuracy (mean over seeds)")
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def recipes_study(config: RecipeStudy, out_dir, progress: bool = True) -> dict:
    """Run the study and write ``checkpoints.csv``, ``recipes.png`` and ``summary.json``."""
    os.makedirs(out_dir, exist_ok=True)
    start = time.perf_counter()
    rows = run_recipes(config, progress)
    paths = {"csv": os.path.join(out_dir, "checkpoints.csv"), "png": os.path.join(out_dir, "recipes.png"),
             "summary": os.path.join(out_dir, "summary.json")}
    with open(paths["csv"], "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, config, paths["png"])
    summary = summarise(rows, config)
    summary["seconds"] = time.perf_counter() - start
    with open(paths["summary"], "w") as handle:
        json.dump(strict_json(summary), handle, indent=1, allow_nan=False)
    return paths | {"summary_data": summary}
