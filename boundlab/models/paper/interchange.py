"""The interchange file: one ``.npz`` with the stacked layer parameters
``Wq, Wk, Wv: (L, d, d)``, ``A1: (L, D, d)``, ``b1: (L, D)``, ``A2: (L, d, D)``, ``b2: (L, d)``
and the input ``X: (d, n)``, all float64 and finite.

>>> import tempfile, os, jax
>>> from boundlab.models.paper import init
>>> params, X = init(jax.random.key(0), "figure1", d=3, n=2, D=4, L=2)
>>> path = os.path.join(tempfile.mkdtemp(), "case.npz")
>>> save_case(path, params, X)
>>> loaded, X_loaded = load_case(path)
>>> loaded.A1.shape, X_loaded.shape
((2, 4, 3), (3, 2))
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from boundlab.models.paper.network import PARAM_NAMES, Params, empty_case

NAMES = PARAM_NAMES + ("X",)
_NDIM = {"Wq": 3, "Wk": 3, "Wv": 3, "A1": 3, "b1": 2, "A2": 3, "b2": 2, "X": 2}


class InterchangeError(ValueError):
    """A file that is not a valid interchange case; the message names the offending array."""


def _check_array(path, name, value) -> np.ndarray:
    if value.dtype != np.float64:
        raise InterchangeError(f"{path}: array '{name}' has dtype {value.dtype}; the interchange format is float64 "
                               f"(save it with .astype(numpy.float64))")
    if value.ndim != _NDIM[name]:
        raise InterchangeError(f"{path}: array '{name}' has {value.ndim} dimensions (shape {value.shape}); "
                               f"expected {_NDIM[name]}")
    if not np.all(np.isfinite(value)):
        bad = np.argwhere(~np.isfinite(value))[0]
        raise InterchangeError(f"{path}: array '{name}' contains {value[tuple(bad)]} at index {tuple(int(i) for i in bad)}")
    return value


def load_case(path) -> tuple[Params, np.ndarray]:
    """Read and validate an interchange file; returns (Params, X) as float64 NumPy arrays.

    Raises ``InterchangeError`` (a ValueError) naming the problem: not an .npz archive (a .npy
    array, a text file), a missing array, a dtype other than float64, a wrong number of
    dimensions, inconsistent shapes, an empty dimension (L, D, d or n = 0; the wording of
    ``boundlab.models.paper.validate``), NaN or inf, a directory.  Arrays with other names are
    ignored.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InterchangeError(f"{path}: no such file")
    if os.path.isdir(path):
        raise InterchangeError(f"{path}: a directory, not an .npz file; give the path of a case written by "
                               "boundlab.save_case")
    with open(path, "rb") as handle:
        magic = handle.read(6)
    if magic.startswith(b"\x93NUMPY"):
        raise InterchangeError(f"{path}: a single .npy array, not an .npz archive of named arrays; write one with "
                               "boundlab.save_case(path, params, X) or numpy.savez(path, Wq=..., ..., X=...)")
    if not magic.startswith(b"PK"):
        raise InterchangeError(f"{path}: not an .npz archive (no zip header); write one with boundlab.save_case or "
                               "numpy.savez")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise InterchangeError(f"{path}: not a readable .npz archive ({error})") from None
    missing = [name for name in NAMES if name not in arrays]
    if missing:
        raise InterchangeError(f"{path}: missing array{'s' if len(missing) > 1 else ''} "
                               f"{', '.join(repr(m) for m in missing)} (an interchange file holds {', '.join(NAMES)})")
    arrays = {name: _check_array(path, name, arrays[name]) for name in NAMES}
    d, n = arrays["X"].shape
    L, D = arrays["A1"].shape[0], arrays["A1"].shape[1]
    empty = empty_case(arrays["A1"].shape, arrays["X"].shape)
    if empty:
        raise InterchangeError(f"{path}: {empty}")
    expected = {"Wq": (L, d, d), "Wk": (L, d, d), "Wv": (L, d, d), "A1": (L, D, d), "b1": (L, D), "A2": (L, d, D),
                "b2": (L, d), "X": (d, n)}
    for name in NAMES:
        if arrays[name].shape != expected[name]:
            raise InterchangeError(f"{path}: array '{name}' has shape {arrays[name].shape}; expected {expected[name]} "
                                   f"(d = {d}, n = {n} from X; L = {L}, D = {D} from A1)")
    return Params(*(arrays[name] for name in PARAM_NAMES)), arrays["X"]


def save_case(path, params, X) -> None:
    """Write ``params`` (``Params`` or a mapping) and X as an interchange file (float64)."""
    params = params if isinstance(params, Params) else Params(**{k: params[k] for k in PARAM_NAMES})
    arrays = {name: np.asarray(getattr(params, name), dtype=np.float64) for name in PARAM_NAMES}
    np.savez(path, **arrays, X=np.asarray(X, dtype=np.float64))
