"""NumPy results as JSON: ``to_json`` (plain Python, NaN kept) and ``strict_json`` (NaN and
infinity as null, so ``json.dumps(..., allow_nan=False)`` accepts it)."""

from __future__ import annotations

import math

import numpy as np


def strict_json(value):
    """``to_json`` with every NaN or infinity written as None (JSON null): the result passes
    ``json.dumps(..., allow_nan=False)``, which bare ``NaN`` (not JSON) would not."""
    value = to_json(value)
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [strict_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def to_json(value):
    """NumPy scalars/arrays to plain Python (lists), NaN kept as NaN."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
