"""The training study (``boundlab train``): do the paper's bound and Baek's predictor track the
low-precision error of a transformer while it trains, and does a bound penalty change either?

A small causal transformer of the paper's form (``boundlab.models.SequenceClassifier``: each 8x8
digit image of scikit-learn's ``load_digits`` read as n = 8 row tokens, the class read from the
last token) is trained with optax's adamw in float64, over several seeds and widths, with and
without ``beta * bound_penalty``.  Every ``every`` steps the diagnostics
(``boundlab.analysis.monitoring``) are evaluated on a held-out batch, beside the accuracy on the
held-out test set.  Written: ``checkpoints.csv`` (one row per checkpoint), ``trajectories.png``,
``scatter.png`` and ``summary.json`` (correlations of each diagnostic with the measured error,
accuracy and error with and without the penalty).  Non-finite numbers are written as JSON null.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from boundlab.analysis.monitoring import error_key
from boundlab.experiments.stats import log10_of
from boundlab.formats import get_format
from boundlab.verdicts import holds, verdict

DIAGNOSTICS = ("log10_theorem_4_30", "log10_theorem_4_30_free", "log10_layerwise_free", "log10_growth",
               "log10_growth_free", "baek_predictor")


@dataclasses.dataclass(frozen=True)
class TrainStudy:
    """The study's configuration; ``QUICK`` is the CI size."""

    widths: tuple[int, ...] = (8, 16, 32)  # d; D = 2 d
    seeds: tuple[int, ...] = (0, 1, 2, 3)
    layers: int = 2
    steps: int = 500
    every: int = 25  # diagnostics every this many steps (and at step 0)
    batch: int = 64
    learning_rate: float = 1e-2
    weight_decay: float = 1e-4
    beta: float = 1e-3  # weight of the penalty in the penalised runs
    penalty: str = "theorem"  # bound_penalty kind
    penalty_samples: int = 8  # training samples the penalty is evaluated on
    formats: tuple[str, ...] = ("bf16", "fp16")
    diagnostic_samples: int = 32  # held-out batch of the diagnostics
    test_samples: int = 500
    norm: str = "layer"
    seed: int = 0  # the train/test split

    def __post_init__(self):
        for name in ("layers", "steps", "every", "batch", "penalty_samples", "diagnostic_samples"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not self.widths or any(not isinstance(w, int) or w < 2 for w in self.widths):
            raise ValueError(f"widths must be ints >= 2 (d >= 2 is a hypothesis of the bounds), got {self.widths!r}")
        if not self.seeds:
            raise ValueError("seeds must not be empty")
        if not (self.beta > 0 and math.isfinite(self.beta)):
            raise ValueError(f"beta must be positive and finite, got {self.beta!r}")
        if self.penalty_samples > self.batch:
            raise ValueError(f"penalty_samples ({self.penalty_samples}) must not exceed batch ({self.batch})")
        for name in self.formats:
            get_format(name)


QUICK = TrainStudy(widths=(16,), seeds=(0, 1), steps=60, every=15, diagnostic_samples=16, test_samples=300)


def load_digits_tokens(seed: int = 0, test_samples: int = 500):
    """scikit-learn's digits (1797 8x8 images) as (images (N, 8, 8) in [0, 1], labels), split into
    train and test by a fixed permutation.  Needs scikit-learn (``pip install "boundlab[train]"``)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # pragma: no cover - depends on the environment
        raise RuntimeError('boundlab train needs scikit-learn for its data set: pip install "boundlab[train]"') from None
    data = load_digits()
    images = np.asarray(data.images, np.float64) / 16.0
    labels = np.asarray(data.target, np.int32)
    order = np.random.default_rng(seed).permutation(len(labels))
    test, train = order[:test_samples], order[test_samples:]
    return (images[train], labels[train]), (images[test], labels[test])


def make_train_step(*, u: float, kind: str, penalty_samples: int, penalised: bool):
    """A jitted step ``(model, optimizer, images, labels, beta) -> (cross-entropy, penalty)``."""
    import optax
    from flax import nnx

    from boundlab.training.penalty import bound_penalty

    def loss_fn(model, images, labels, beta):
        logits = model(images)
        entropy = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        if not penalised:
            return entropy, (entropy, jnp.zeros(()))
        penalty = bound_penalty(model.transformer, model.tokens(images[:penalty_samples]), u=u, kind=kind)
        return entropy + beta * penalty, (entropy, penalty)

    @nnx.jit
    def step(model, optimizer, images, labels, beta):
        (_, (entropy, penalty)), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model, images, labels, beta)
        with jax.numpy_dtype_promotion("standard"):  # optax mixes its int32 step count with floats
            optimizer.update(model, grads)
        return entropy, penalty

    return step


def _accuracy(model, images, labels):
    from flax import nnx

    @nnx.jit
    def predict(model, images):
        return jnp.argmax(model(images), axis=-1)

    return float(np.mean(np.asarray(predict(model, images)) == labels))


def _run(config: TrainStudy, width: int, seed: int, penalised: bool, data, steps_fn, transformation, bar):
    from flax import nnx

    from boundlab.models import SequenceClassifier
    from boundlab.analysis.monitoring import diagnostics

    (train_x, train_y), (test_x, test_y) = data
    model = SequenceClassifier(8, 8, 10, width, 2 * width, config.layers, norm=config.norm, rngs=nnx.Rngs(seed))
    optimizer = nnx.Optimizer(model, transformation, wrt=nnx.Param)
    held_out = jnp.asarray(test_x[:config.diagnostic_samples])
    rng = np.random.default_rng(1000 + seed)
    rows = []
    entropy = penalty = float("nan")
    for step in range(config.steps + 1):
        if step % config.every == 0 or step == config.steps:
            result = diagnostics(model.transformer, model.tokens(held_out), formats=config.formats)
            row = {"width": width, "seed": seed, "penalised": penalised, "step": step,
                   "cross_entropy": entropy, "penalty": penalty,
                   "test_accuracy": _accuracy(model, test_x, test_y), **result.scalars()}
            rows.append(row)
        if step == config.steps:
            break
        index = rng.choice(len(train_y), config.batch, replace=False)
        entropy, penalty = steps_fn[penalised](model, optimizer, jnp.asarray(train_x[index]),
                                               jnp.asarray(train_y[index]), jnp.asarray(config.beta))
        entropy, penalty = float(entropy), float(penalty)
        if bar is not None:
            bar.update(1, f"training d = {width}, seed {seed}, {'penalised' if penalised else 'plain'}")
    return rows


def run_study(config: TrainStudy = TrainStudy(), progress: bool = True) -> list[dict]:
    """Train every (width, seed, with/without penalty) run; one row per checkpoint."""
    import optax

    from boundlab.runtime.x64 import require_x64
    from boundlab.output.progress import ProgressBar

    require_x64("boundlab train")
    data = load_digits_tokens(config.seed, config.test_samples)
    u = max(get_format(name).unit_roundoff for name in config.formats)
    steps_fn = {penalised: make_train_step(u=u, kind=config.penalty, penalty_samples=config.penalty_samples,
                                           penalised=penalised) for penalised in (False, True)}
    # one optax transformation for every run: it is static in the optimizer's graph, so a new
    # object per run would retrace the step (the step compiles once per width and penalty flag)
    transformation = optax.chain(optax.zero_nans(), optax.adamw(config.learning_rate, weight_decay=config.weight_decay))
    runs = [(w, s, p) for w in config.widths for s in config.seeds for p in (False, True)]
    bar = ProgressBar(len(runs) * config.steps, "training (the first steps of each width compile)") \
        if progress else None
    rows = []
    try:
        for width, seed, penalised in runs:
            rows.extend(_run(config, width, seed, penalised, data, steps_fn, transformation, bar))
    finally:
        if bar is not None:
            bar.close()
    return rows


# -- summary -------------------------------------------------------------------------------------

def correlations(rows: list[dict], error: str) -> dict:
    """Pearson correlation of log10(diagnostic) with log10(error) and Spearman rank correlation,
    over the checkpoints where both are finite and positive."""
    from scipy import stats

    out = {}
    measured = log10_of(error, [row[error] for row in rows])
    for name in DIAGNOSTICS:
        predictor = log10_of(name, [row[name] for row in rows])
        keep = np.isfinite(measured) & np.isfinite(predictor)
        entry = {"points": int(keep.sum()), "pearson_log": None, "spearman": None}
        if keep.sum() >= 3 and np.ptp(predictor[keep]) > 0 and np.ptp(measured[keep]) > 0:
            entry["pearson_log"] = float(stats.pearsonr(predictor[keep], measured[keep])[0])
            entry["spearman"] = float(stats.spearmanr(predictor[keep], measured[keep])[0])
        out[name] = entry
    return out


def theorem_check(rows: list[dict], fmt: str) -> dict:
    """Theorem 4.30 against the measured componentwise error in ``fmt`` at every checkpoint:
    held, failed, or not checked (its hypotheses failed at some held-out input, checked at the
    coarsest format's u, or the emulated run overflowed).  Per checkpoint the largest measured
    error over the held-out batch is compared with the largest coefficient times u: each input's
    error is below its own bound, so the maximum is below the largest bound.  In log10: the
    coefficient can exceed float64's range."""
    with np.errstate(divide="ignore", invalid="ignore"):
        measured = np.asarray([row[error_key(fmt, "componentwise")] for row in rows], np.float64)
        log_measured = np.clip(np.log10(measured), -1e300, None)
    log_bound = np.asarray([row["log10_theorem_4_30"] for row in rows], np.float64) + np.log10(
        get_format(fmt).unit_roundoff)
    prefix = "flag/hypothesis: "  # each hypothesis by name, so that the reason names the failing ones
    hypotheses = {name[len(prefix):]: np.asarray([row[name] for row in rows], bool) for name in rows[0]
                  if name.startswith(prefix)}
    check = verdict(log_measured, log_bound, hypotheses, overflow=~np.isfinite(measured))
    return {"verdict": check["label"], "holds": holds(check), "checkpoints": check["entries"],
            "checked": check["checked"], "held": check["held"], "failed": check["failed"],
            "not_checked": check["not_checked"]}


def summarise(rows: list[dict], config: TrainStudy) -> dict:
    errors = [error_key(name, kind) for name in config.formats for kind in ("normwise", "componentwise")]
    finals = [row for row in rows if row["step"] == config.steps]
    summary = {"config": dataclasses.asdict(config), "checkpoints": len(rows), "runs": len(finals),
               "correlations_all_checkpoints": {e: correlations(rows, e) for e in errors},
               "correlations_final_per_run": {e: correlations(finals, e) for e in errors},
               "correlations_within_width": {str(w): {e: correlations([r for r in rows if r["width"] == w], e)
                                                      for e in errors} for w in config.widths},
               "hypothesis_failures": {name[len("flag/hypothesis: "):]: sum(not row[name] for row in rows)
                                       for name in rows[0] if name.startswith("flag/hypothesis: ")},
               "theorem_4_30_check": {name: theorem_check(rows, name) for name in config.formats},
               "penalty": {}}
    for penalised in (False, True):
        group = [row for row in finals if row["penalised"] == penalised]
        entry = {"runs": len(group), "test_accuracy_mean": float(np.mean([r["test_accuracy"] for r in group]))}
        for name in errors + list(DIAGNOSTICS):
            values = np.asarray([r[name] for r in group], np.float64)
            finite = values[np.isfinite(values)]
            entry[f"median {name}"] = float(np.median(finite)) if finite.size else None
            entry[f"non-finite {name}"] = int(values.size - finite.size)  # overflow (fp16: exp > 65504) or NaN
        summary["penalty"]["with" if penalised else "without"] = entry
    summary["reading"] = (
        "correlations_*: Pearson of log10(diagnostic) vs log10(measured error) and Spearman rank correlation, "
        "pooled over every checkpoint of every run (all_checkpoints), over the last checkpoint of each run, or "
        "over the checkpoints of one width (within_width: pooled correlations also reflect differences between widths); "
        "null where fewer than 3 finite points. Errors are measured under bit-exact emulation against the "
        "float64 forward of the rounded operands, on a held-out batch. hypothesis_failures: at how many "
        "checkpoints each hypothesis of Theorem 4.30 failed (at some layer, for some held-out input). theorem_4_30_check: "
        "per format, at how many checkpoints the theorem held, failed or was not checked (and why). Medians are over the finite values; "
        "'non-finite' counts the runs whose value overflowed (the paper's softmax has no max shift, so fp16's "
        "exp overflows once a score exceeds about 11) or is undefined.")
    return summary


def write_study(rows: list[dict], config: TrainStudy, out_dir: str) -> dict:
    """Write checkpoints.csv, trajectories.png, scatter.png and summary.json; return the paths (and
    the Theorem 4.30 verdict per format)."""
    from boundlab.output.tables import write_rows
    from boundlab.experiments.plots import plot_training
    from boundlab.output.strict_json import write_json

    os.makedirs(out_dir, exist_ok=True)
    csv_path = os.path.join(out_dir, "checkpoints.csv")
    write_rows(csv_path, rows)
    summary = summarise(rows, config)
    summary_path = os.path.join(out_dir, "summary.json")
    write_json(summary_path, summary)
    pngs = plot_training(rows, config, out_dir)
    return {"csv": csv_path, "summary": summary_path, "png": pngs,
            "theorem_4_30_check": {fmt: check["verdict"] for fmt, check in summary["theorem_4_30_check"].items()}}


def train(config: TrainStudy = TrainStudy(), out_dir: str = "boundlab-train", progress: bool = True) -> dict:
    """Run the study and write its outputs (see the module docstring)."""
    start = time.perf_counter()
    rows = run_study(config, progress)
    paths = write_study(rows, config, out_dir)
    paths["seconds"] = time.perf_counter() - start
    return paths
