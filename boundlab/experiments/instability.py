"""Baek's two training-time claims, tested on runs that become unstable (part of
``boundlab train --recipes``).

Model and data: the character-level causal language model of ``boundlab.models.charlm`` on
the text of scikit-learn's dataset descriptions, trained with Adam under a low-precision recipe
(``boundlab.training``): by default fp16 compute with the paper's softmax without max-shift
(eq. 4 as printed: exp overflows once a score passes log(65504) = 11.09), so that a learning rate
near the edge makes the attention scores grow until the loss is not finite.

1. **Forecast** (Baek: "the time-series maximum of kappa_softmax leads error spikes by 16-24 steps,
   Precision@K 0.89-1.00").  Each step records the loss, the gradient norm and, on a fixed batch,
   the exact per-layer kappa_softmax and rho_LN (``charlm.diagnostics``).  Instability events
   (``boundlab.training.forecast``): a loss that is not finite or above ``spike`` times the median of
   the previous ``spike_window`` losses; a run's onset is its first event, after which the run stops
   (``on_nonfinite="stop"``) or goes on with the non-finite steps skipped (``"continue"``; only the
   onset is forecast either way).  Forecasters: the running maximum over ``window`` steps of
   kappa_softmax (the largest over layers), of the loss and of the gradient norm, each relative to
   its median over the first ``warmup`` steps, and kappa_softmax's running maximum as it is
   (``kappa_softmax_absolute``: one absolute threshold for all runs); Precision@K for each horizon (an onset within the
   next H steps), K = the number of positive steps, beside the base rate (a random ranking's
   expected precision), and the median lead of kappa_softmax's alarms.
2. **Epsilon policy** (Baek: "a LayerNorm-epsilon tweak targeting rho_star = 0.6, cap 1e-2, lowers
   the mean tail loss by about 0.010").  For each (max_shift, learning rate) of
   ``policy_settings`` (by default a stable one and the forecast's unstable one) and each seed, two
   runs on the same batches with non-finite steps skipped, one with the fixed epsilon and one where
   after every ``policy_every`` steps each layer norm's epsilon is set by ``charlm.epsilon_policy``
   from its sigma_med on the fixed batch; tail loss = the mean of the finite training losses over
   the last ``tail`` steps; the paired difference (fixed minus policy: positive when the policy
   helps) with a 95 % Student-t interval, and the non-finite steps of each arm.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from boundlab.models import charlm
from boundlab.training import forecast, get_recipe, init_state, make_step

ON_NONFINITE = ("stop", "continue")
FORECASTERS = ("kappa_softmax", "kappa_softmax_absolute", "loss", "gradient_norm")


@dataclasses.dataclass(frozen=True)
class InstabilityStudy:
    """Configuration of both parts; ``QUICK_INSTABILITY`` is the CI size."""

    recipe: str = "fp16-mixed"
    max_shift: bool = False
    learning_rates: tuple[float, ...] = (4e-3, 5e-3, 6e-3)
    seeds: tuple[int, ...] = (0, 1, 2, 3)
    steps: int = 300
    batch: int = 16
    d: int = 32
    heads: int = 2
    ffn: int = 64
    layers: int = 2
    context: int = 32
    eps: float = 1e-5
    spike: float = 1.5
    spike_window: int = 20
    warmup: int = 20
    window: int = 8
    horizons: tuple[int, ...] = (16, 24)
    on_nonfinite: str = "stop"
    diagnostic_batch: int = 4
    policy_recipe: str = "fp16-mixed"
    # (max_shift, learning rate) of each comparison: a stable setting, and the forecast's unstable one
    # (there the non-finite steps are skipped, so a run goes on and has a tail)
    policy_settings: tuple[tuple[bool, float], ...] = ((True, 1e-2), (False, 5e-3))
    policy_seeds: tuple[int, ...] = (0, 1, 2, 3)
    policy_steps: int = 200
    policy_every: int = 1
    rho_star: float = 0.6
    cap: float = 1e-2
    tail: int = 50

    def __post_init__(self):
        for name in (self.recipe, self.policy_recipe):
            get_recipe(name)
        if self.on_nonfinite not in ON_NONFINITE:
            raise ValueError(f"on_nonfinite must be one of {ON_NONFINITE}, got {self.on_nonfinite!r}")
        for name in ("steps", "batch", "warmup", "window", "spike_window", "diagnostic_batch", "policy_steps",
                     "policy_every", "tail"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")
        if self.warmup >= self.steps or self.tail > self.policy_steps:
            raise ValueError("needs warmup < steps and tail <= policy_steps")
        if not self.seeds or not self.learning_rates or not self.horizons:
            raise ValueError("seeds, learning_rates and horizons must not be empty")
        if self.policy_settings and not self.policy_seeds:
            raise ValueError("policy_seeds must not be empty when policy_settings are given")

    def model(self, max_shift: bool) -> charlm.CharLMConfig:
        return charlm.CharLMConfig(self.d, self.heads, self.ffn, self.layers, self.context, max_shift)


QUICK_INSTABILITY = InstabilityStudy(learning_rates=(3e-2,), seeds=(0, 1), steps=50, warmup=8, window=4,
                                     spike_window=8, horizons=(8, 16), d=16, ffn=32, layers=1, context=16, batch=8,
                                     diagnostic_batch=2, policy_settings=((False, 3e-2),),
                                     policy_seeds=(0,), policy_steps=30, tail=10)


def _unit_roundoff(recipe) -> float:
    fmt = getattr(get_recipe(recipe).compute, "fmt", None)
    from boundlab.formats import get_format

    return 0.0 if fmt is None else get_format(fmt).unit_roundoff


@functools.lru_cache(maxsize=None)
def _step(model: charlm.CharLMConfig, recipe: str, learning_rate: float, skip: bool):
    import optax

    optimizer = optax.adam(learning_rate)
    return optimizer, make_step(functools.partial(charlm.loss, config=model), optimizer, recipe, skip_nonfinite=skip)


def _data(config: InstabilityStudy):
    text = charlm.corpus()
    vocabulary = charlm.Vocabulary(text)
    return vocabulary, vocabulary.encode(text)


def _train(config, recipe, max_shift, learning_rate, seed, steps, data, policy=False, stop=True, bar=None,
           label=""):
    """One run; a row per step (the weights' diagnostics at step t, then step t's loss)."""
    vocabulary, ids = data
    model = config.model(max_shift)
    optimizer, step = _step(model, recipe, learning_rate, not stop)
    u = _unit_roundoff(recipe)
    state = init_state(charlm.init_params(model, len(vocabulary), jax.random.key(seed)), optimizer, recipe)
    rng = np.random.default_rng(10_000 + seed)
    probe = jnp.asarray(charlm.windows(ids, model.context, config.diagnostic_batch, np.random.default_rng(7))[:, :-1])
    eps = jnp.full((model.norms,), config.eps, jnp.float64)
    key = jax.random.key(seed)
    rows = []
    for t in range(steps):
        found = charlm.diagnostics(state.params, probe, eps, model, u)
        batch = (jnp.asarray(charlm.windows(ids, model.context, config.batch, rng)), eps)
        key, sub = jax.random.split(key)
        state, info = step(state, batch, key=sub)
        kappa = np.asarray(found["kappa_softmax"])
        rows.append({"learning_rate": learning_rate, "seed": seed, "step": t, "policy": policy,
                     "loss": float(info.loss), "finite": bool(info.finite),
                     "gradient_norm": float(info.gradient_norm),
                     "kappa_softmax": float(np.max(kappa)) if np.all(np.isfinite(kappa)) else math.nan,
                     **{f"kappa_softmax/{i + 1}": float(k) for i, k in enumerate(kappa)},
                     "rho_LN_max": float(jnp.max(found["rho_LN"])), "eps_max": float(jnp.max(eps))})
        if bar is not None:
            bar.update(1, label)
        if stop and not bool(info.finite):
            break
        if policy and (t + 1) % config.policy_every == 0:
            eps = charlm.epsilon_policy(eps, found["sigma_med"], model.d, u, config.rho_star, config.cap)
    return rows


def run_forecast(config: InstabilityStudy, data, bar=None) -> list[dict]:
    """Every (learning rate, seed) run of the forecast part, events marked."""
    rows = []
    for lr in config.learning_rates:
        for seed in config.seeds:
            run = _train(config, config.recipe, config.max_shift, lr, seed, config.steps, data,
                         stop=config.on_nonfinite == "stop", bar=bar, label=f"instability runs: lr {lr:g}, seed {seed}")
            events = forecast.instability_events([r["loss"] for r in run], config.spike, config.spike_window)
            for row, event in zip(run, events):
                row["event"] = bool(event)
            rows.extend(run)
    return rows


def _runs(rows):
    keys = sorted({(r["learning_rate"], r["seed"]) for r in rows})
    return [[r for r in rows if (r["learning_rate"], r["seed"]) == k] for k in keys]


def precision_table(rows, config: InstabilityStudy) -> dict:
    """Precision@K per forecaster and horizon (pooled over runs), onsets, and the lead of the
    kappa_softmax alarms."""
    runs = _runs(rows)
    onsets = [forecast.onset([r["event"] for r in run]) for run in runs]
    scores = {name: [forecast.forecast_scores([r[name] for r in run], config.window, config.warmup) for run in runs]
              for name in FORECASTERS if name != "kappa_softmax_absolute"}
    # kappa_softmax's running maximum itself, one absolute threshold for every run
    scores["kappa_softmax_absolute"] = [forecast.running_max([r["kappa_softmax"] for r in run], config.window)
                                        for run in runs]
    table = {}
    for horizon in config.horizons:
        masks = [forecast.labels(len(run), o, horizon, config.warmup) for run, o in zip(runs, onsets)]
        positive = np.concatenate([p[e] for e, p in masks])
        pooled = {name: np.concatenate([s[e] for s, (e, _) in zip(scores[name], masks)]) for name in FORECASTERS}
        entry = {name: forecast.precision_at_k(pooled[name], positive) for name in FORECASTERS}
        if positive.any():  # the lead: onset minus the first alarm of kappa_softmax (threshold: its K-th score)
            theta = np.sort(forecast.nan_last(pooled["kappa_softmax"]))[::-1][int(positive.sum()) - 1]
            leads = []
            for s, (e, _), o in zip(scores["kappa_softmax"], masks, onsets):
                alarms = np.flatnonzero(e & (forecast.nan_last(s) >= theta))
                if o is not None and alarms.size:
                    leads.append(o - int(alarms[0]))
            entry["kappa_softmax_lead_median"] = float(np.median(leads)) if leads else math.nan
            entry["runs_with_a_kappa_alarm_before_onset"] = len(leads)
        table[f"H={horizon}"] = entry
    nonfinite = sum(1 for run, o in zip(runs, onsets) if o is not None and not np.isfinite(run[o]["loss"]))
    return {"horizons": table, "runs": len(runs), "runs_with_an_event": sum(o is not None for o in onsets),
            "onsets_nonfinite": nonfinite, "onset_steps": onsets,
            "definition": f"event: loss not finite or above {config.spike} x the median of the previous "
                          f"{config.spike_window} losses; forecasters: running maximum over {config.window} steps "
                          f"relative to the median of the first {config.warmup}; K = positive steps (pooled)"}


def run_policy(config: InstabilityStudy, data, bar=None) -> tuple[list[dict], list[dict]]:
    """Per (max_shift, learning rate) setting: fixed epsilon against the policy, per seed on the
    same batches, non-finite steps skipped; the rows and one comparison per setting."""
    rows, results = [], []
    for max_shift, lr in config.policy_settings:
        tails, nonfinite, mine = {False: [], True: []}, {False: 0, True: 0}, []
        for seed in config.policy_seeds:
            for policy in (False, True):
                run = _train(config, config.policy_recipe, max_shift, lr, seed, config.policy_steps, data,
                             policy=policy, stop=False, bar=bar,
                             label=f"epsilon policy: lr {lr:g}, seed {seed}, {'policy' if policy else 'fixed'}")
                for row in run:
                    row["max_shift"] = max_shift
                tail = np.asarray([r["loss"] for r in run[-config.tail:]])
                tails[policy].append(float(np.mean(tail[np.isfinite(tail)])) if np.isfinite(tail).any() else math.nan)
                nonfinite[policy] += sum(1 for r in run if not r["finite"])
                mine.extend(run)
        difference = forecast.paired_difference(tails[False], tails[True])
        results.append({
            "max_shift": max_shift, "learning_rate": lr, "tail_loss_fixed": tails[False], "tail_loss_policy": tails[True],
            "improvement_mean": difference["mean"], "improvement_ci95": [difference["low"], difference["high"]],
            "pairs": difference["pairs"], "nonfinite_steps_fixed": nonfinite[False],
            "nonfinite_steps_policy": nonfinite[True],
            "final_eps_max": [r["eps_max"] for r in mine if r["policy"] and r["step"] == config.policy_steps - 1],
            "setting": f"{config.policy_recipe}, max_shift={max_shift}, lr {lr:g}, eps {config.eps:g}, rho_star "
                       f"{config.rho_star}, cap {config.cap:g}, tail = finite losses of the last {config.tail} of "
                       f"{config.policy_steps} steps"})
        rows.extend(mine)
    return rows, results


def total_steps(config: InstabilityStudy) -> int:
    return (len(config.learning_rates) * len(config.seeds) * config.steps
            + 2 * len(config.policy_settings) * len(config.policy_seeds) * config.policy_steps)


def plot(rows, config: InstabilityStudy, path):
    """Per forecast run: the loss and kappa_softmax (relative to its warm-up median), onset marked."""
    from boundlab.output.pyplot import pyplot

    plt = pyplot()
    runs = _runs([r for r in rows if "event" in r])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    colours = plt.cm.viridis(np.linspace(0.05, 0.9, max(len(runs), 1)))
    for colour, run in zip(colours, runs):
        steps = [r["step"] for r in run]
        label = f"lr {run[0]['learning_rate']:g}, seed {run[0]['seed']}"
        axes[0].plot(steps, [r["loss"] if np.isfinite(r["loss"]) else np.nan for r in run], color=colour, label=label)
        axes[1].semilogy(steps, forecast.forecast_scores([r["kappa_softmax"] for r in run], config.window,
                                                         config.warmup), color=colour)
        o = forecast.onset([r["event"] for r in run])
        if o is not None:
            for ax in axes:
                ax.axvline(o, color=colour, ls=":", lw=1)
    axes[0].set(title="training loss (dotted: each run's first event)", xlabel="step", ylabel="loss")
    axes[1].set(title=f"kappa_softmax: running max ({config.window} steps) / warm-up median", xlabel="step",
                ylabel="relative kappa_softmax")
    axes[0].legend(fontsize=7)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def instability_study(config: InstabilityStudy, bar=None) -> tuple[list[dict], dict]:
    """Both parts: (rows of every step, {"precision_at_k": ..., "epsilon_policy": ...})."""
    data = _data(config)
    rows = run_forecast(config, data, bar)
    summary = {"precision_at_k": precision_table(rows, config)}
    policy_rows, summary["epsilon_policy"] = run_policy(config, data, bar)
    summary["configuration"] = dataclasses.asdict(config)
    return rows + policy_rows, summary
