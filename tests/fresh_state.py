"""What a fresh interpreter gives each README block and each notebook when several run, one after
another, in one process (``tests/test_docs.py``, ``tests/test_notebooks.py``): JAX's
configuration at its defaults, no figure open, a working directory of its own.  The names a block
sees are its own namespace's (the runner's business); modules imported before stay imported.

Import it before anything runs: ``DEFAULTS`` is the configuration at import time.
"""

import os
import sys

import jax

DEFAULTS = dict(jax.config.values)


def reset(directory) -> None:
    """Put JAX's configuration back to ``DEFAULTS``, close every figure and move to ``directory``."""
    for name, value in DEFAULTS.items():
        if jax.config.values[name] != value:
            jax.config.update(name, value)
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")
    os.chdir(directory)
