"""Instability events and their forecasts over a training run's time series (numpy, no JAX).

* ``instability_events``: a step is an event when its loss is not finite, or when it exceeds
  ``spike`` times the median of the previous ``window`` finite losses (a loss spike); the first
  event of a run is its onset.
* ``forecast_scores``: the forecaster's score at step t is the running maximum of a signal over
  the last ``window`` steps (Baek's "time-series maximum"), divided by the signal's median over
  the run's first ``warmup`` steps, so that runs of different scales share one threshold.
* ``precision_at_k``: steps t of the evaluation set (after the warm-up, before the run's onset)
  are positive when the onset follows within ``horizon`` steps (0 < onset - t <= horizon); the
  K steps with the highest scores, pooled over runs, are the forecaster's alarms (the same as
  "the score crosses the threshold theta", theta the K-th largest score), K = the number of
  positive steps unless given; Precision@K is the fraction of alarms that are positive.  A
  forecaster that ranks at random has expected precision equal to the base rate (positives /
  steps), reported beside it.
* ``paired_difference``: mean of paired differences with a Student-t confidence interval.
"""

from __future__ import annotations

import math

import numpy as np


def instability_events(losses, spike: float = 1.5, window: int = 20) -> np.ndarray:
    """Boolean per step: loss not finite, or loss > spike * median(previous ``window`` finite losses)."""
    losses = np.asarray(losses, dtype=float)
    if not spike > 1:
        raise ValueError(f"spike must be > 1 (a loss above spike times its recent median), got {spike!r}")
    events = ~np.isfinite(losses)
    for t in range(1, len(losses)):
        if events[t]:
            continue
        recent = losses[max(0, t - window):t]
        recent = recent[np.isfinite(recent)]
        events[t] = recent.size > 0 and losses[t] > spike * np.median(recent)
    return events


def onset(events) -> int | None:
    """The first event's step, None when there is none."""
    hits = np.flatnonzero(np.asarray(events))
    return int(hits[0]) if hits.size else None


def running_max(signal, window: int) -> np.ndarray:
    """max(signal[t - window + 1 .. t]) per step (NaN entries ignored; NaN when all are)."""
    signal = np.asarray(signal, dtype=float)
    out = np.full(signal.shape, np.nan)
    for t in range(len(signal)):
        part = signal[max(0, t - window + 1):t + 1]
        part = part[np.isfinite(part)]
        if part.size:
            out[t] = part.max()
    return out


def forecast_scores(signal, window: int, warmup: int) -> np.ndarray:
    """Running maximum over ``window`` steps relative to the median of the first ``warmup`` steps."""
    signal = np.asarray(signal, dtype=float)
    head = signal[:warmup]
    head = head[np.isfinite(head)]
    reference = np.median(head) if head.size else np.nan
    return running_max(signal, window) / reference if reference > 0 else np.full(signal.shape, np.nan)


def labels(length: int, onset_step: int | None, horizon: int, warmup: int) -> tuple[np.ndarray, np.ndarray]:
    """(evaluated, positive) per step: evaluated for warmup <= t < onset (or the run's end);
    positive when 0 < onset - t <= horizon."""
    t = np.arange(length)
    end = length if onset_step is None else onset_step
    evaluated = (t >= warmup) & (t < end)
    positive = np.zeros(length, bool) if onset_step is None else evaluated & (onset_step - t <= horizon)
    return evaluated, positive


def nan_last(scores) -> np.ndarray:
    """Scores with NaN replaced by -inf: ranked last."""
    scores = np.asarray(scores, dtype=float)
    return np.where(np.isfinite(scores), scores, -np.inf)


def precision_at_k(scores, positive, k: int | None = None) -> dict:
    """Precision of the K highest scores (ties broken by order; NaN scores rank last).

    Returns {precision, k, positives, steps, base_rate}; precision is NaN when K = 0."""
    scores = np.asarray(scores, dtype=float)
    positive = np.asarray(positive, dtype=bool)
    positives = int(positive.sum())
    k = positives if k is None else int(k)
    ranked = np.argsort(-nan_last(scores), kind="stable")[:k]
    precision = float(positive[ranked].mean()) if k > 0 else math.nan
    return {"precision": precision, "k": k, "positives": positives, "steps": int(positive.size),
            "base_rate": positives / positive.size if positive.size else math.nan}


def paired_difference(a, b, confidence: float = 0.95) -> dict:
    """mean(a - b) over pairs with its Student-t interval (NaN pairs dropped)."""
    from scipy import stats

    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    diff = diff[np.isfinite(diff)]
    n = diff.size
    mean = float(diff.mean()) if n else math.nan
    if n < 2:
        return {"mean": mean, "low": math.nan, "high": math.nan, "pairs": n}
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * diff.std(ddof=1) / math.sqrt(n)
    return {"mean": mean, "low": mean - half, "high": mean + half, "pairs": n}
