"""NumPy results as JSON: ``to_json`` (plain Python, NaN kept), ``strict_json`` (NaN and
infinity as null, so ``json.dumps(..., allow_nan=False)`` accepts it) and ``write_json``, the one
function every command writes its JSON files with."""

from __future__ import annotations

import json
import math
import os

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


def write_json(path, value) -> str:
    """``value`` as strict JSON (``strict_json``: NaN and infinity as null; indent 1) in ``path``,
    written to a temporary file and moved into place, so that a reader sees the old file or the
    new one, never half of one.  Returns ``path``."""
    path = os.fspath(path)
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "w") as handle:
        json.dump(strict_json(value), handle, indent=1, allow_nan=False)
    os.replace(temporary, path)
    return path
