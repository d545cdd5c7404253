"""What every benchmark shares: ``Timing`` (one measured row, its ratio to a baseline of the same
run and the goal it is held to) and ``time_call`` (first call and best of repeats).

Speed is never asserted in tests (the machine is shared and noisy); it is measured here and
reported as ratios to a baseline timed in the same run."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import jax
import numpy as np



@dataclasses.dataclass(frozen=True)
class Timing:
    """Best-of-``repeats`` wall time of a call, after one warm-up call (compilation).

    ``goal_ratio`` / ``goal_seconds``: the target this row is held to (a ratio to the
    section's baseline, or a wall time including compilation); ``met`` says whether it is reached.
    """

    name: str
    seconds: float
    first_call_seconds: float
    ratio: float | None = None  # seconds / baseline seconds, same process
    note: str = ""
    goal_ratio: float | None = None
    goal_seconds: float | None = None
    goal_steady: bool = False  # goal_seconds holds for the best (compiled) call, not the first

    @property
    def goal(self) -> str:
        if self.goal_ratio is not None:
            return f"<= {self.goal_ratio:g}x"
        if self.goal_seconds is not None:
            return f"<= {self.goal_seconds:g} s" + (" (compiled)" if self.goal_steady else "")
        return ""

    @property
    def met(self) -> bool | None:
        """Whether the goal is reached (None without a goal)."""
        if self.goal_ratio is not None:
            return self.ratio is not None and self.ratio <= self.goal_ratio
        if self.goal_seconds is not None:
            return (self.seconds if self.goal_steady else self.first_call_seconds) <= self.goal_seconds
        return None

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "goal": self.goal, "met": self.met}


def time_call(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(best time, first-call time) of ``fn``, blocking on JAX results."""
    start = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - start
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - start)
    return best, first


def mismatches(got: np.ndarray, want: np.ndarray) -> int:
    same = (got == want) & (np.signbit(got) == np.signbit(want)) | (np.isnan(got) & np.isnan(want))
    return int((~same).sum())
